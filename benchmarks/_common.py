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


def fp32_and_int8(model: str, int8_path: str):
    """The model's cached fp32 bundle (exported if missing), the int8 bundle at `int8_path`, and the
    sample shape and inputs per image at the default sampling: what the per-IR recipes compare."""
    from edge_dm import jobs
    from edge_dm.bundle import Bundle, BundleError
    from edge_dm.configs import ExportConfig

    try:
        fp32 = Bundle.from_pretrained(model, "fp32")
    except BundleError:
        fp32 = jobs.export(ExportConfig(model=model))
    s, c = fp32.sampling(), fp32.family.conditioning  # the model's default sampling options
    return fp32, Bundle.from_pretrained(int8_path), c.sample_shape(fp32, s), c.net_batch(s)
