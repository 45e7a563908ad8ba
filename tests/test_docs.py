"""Every `edge-dm ...` command the README and the docs show names a real command and real options.

Commands come from fenced code blocks (backslash continuations joined, chains split at && ; |) and
from inline code spans; in a table row that starts with a command, the row's spans that are options
(`--steps`, `--height/--width`, `--ignore-*`) belong to that command too. Only option names are
checked, against the click commands themselves; values are not.
"""
import re
from pathlib import Path

from edge_dm.cli import main

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted(p for p in (ROOT / "docs").glob("*.md") if p.name != "CLI.md"),
        *sorted(ROOT.glob("models/*/README.md")), ROOT / "benchmarks" / "README.md"]


def _command(text: str) -> list | None:
    """The words after `edge-dm` (or `python -m edge_dm`) in one shell command, or None."""
    for part in re.split(r"&&|;|\|", text):
        words = part.split()
        for i, w in enumerate(words):
            if w.endswith("edge-dm") or (w == "edge_dm" and words[i - 1:i] == ["-m"]):
                return words[i + 1:]
    return None


def commands(text: str) -> list[list]:
    """Each command in a Markdown text as [subcommand, words...]."""
    out = []
    for block in re.findall(r"```[a-z]*\n(.*?)```", text, re.S):
        for line in block.replace("\\\n", " ").splitlines():
            out += [c for c in [_command(line.split(" #")[0])] if c is not None]
    prose = re.sub(r"```.*?```", "", text, flags=re.S)
    for span in re.findall(r"`([^`]+)`", prose):  # spans may wrap lines
        if span.startswith("edge-dm "):
            out.append(_command(span.replace("\\|", "/").replace("/--", " --").replace("[", " ").replace("]", " ")))
    for row in re.findall(r"^\| `(edge-dm [^`]+)`(.*)", prose, re.M):  # a table of commands: its option spans
        words = _command(row[0].replace("\\|", "/"))
        for span in re.findall(r"`(--[^`]+)`", row[1]):
            out.append([words[0], *span.replace("\\|", "/").replace("/--", " --").split()])
    return out


def _options(command) -> set:
    names = {"--help", "-h"}
    for p in command.params:
        names.update(p.opts + p.secondary_opts)
    return names


def test_every_documented_command_and_option_exists():
    found = {doc.name if doc.parent == ROOT else str(doc.relative_to(ROOT)): commands(doc.read_text()) for doc in DOCS}
    assert sum(map(len, found.values())) >= 50  # the parser finds them: a test that can fail
    wrong = []
    for doc, cmds in found.items():
        for words in cmds:
            if not words or words[0] not in main.commands:
                wrong.append(f"{doc}: edge-dm {' '.join(words)}: no such command")
                continue
            options = _options(main.commands[words[0]])
            for w in words[1:]:
                if w.startswith("-") and not (w in options
                                              or (w.endswith("*") and any(o.startswith(w[:-1]) for o in options))):
                    wrong.append(f"{doc}: edge-dm {words[0]} {w}: no such option")
    assert not wrong, "\n".join(wrong)


def test_cli_reference_is_up_to_date():
    """docs/CLI.md is every command's --help (regenerate: see edge_dm.cli.reference)."""
    from edge_dm.cli import reference

    assert (ROOT / "docs" / "CLI.md").read_text() == reference()
