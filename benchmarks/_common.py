"""What every recipe shares: its JSON result to stdout, or to --output."""
import json
from pathlib import Path


def emit(result: dict, output: str | None) -> dict:
    text = json.dumps(result, indent=2, default=float)
    if output:
        Path(output).write_text(text + "\n")
    else:
        print(text)
    return result
