"""Documentation tested: every `iiotbed` command of every lab page parses and, when it
ends by itself, runs (exit 0). The convention (docs/labs.md, "Commands in a page"):

- commands are the lines of fenced ``sh`` blocks (each an ``iiotbed`` command) and inline
  code spans that start with ``iiotbed ``;
- the student's own file is a name starting with ``my-`` or ``my_``: the lab's reference
  solution takes its place;
- every command goes through the real command line's parser (a typo in a command or an
  option fails); ``lab list``, ``lab show``, ``validate`` and batch labs' ``lab check`` run
  as written; ``simulate`` and ``compare`` run with ``-n 2 -d 12h`` (one shift); a live lab's
  ``lab check`` is run by test_labs.py on the shared factory; long-running services
  (``devices``, ``gateway``, ``platform``, ``run``...) run ``--help``.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
import typer
from typer.testing import CliRunner

from iiotbed.cli import app
from iiotbed.labs import LABS, Lab, find_lab

ROOT = Path(__file__).resolve().parents[2]
FENCE = re.compile(r"^[ \t]*```sh[ \t]*\n(.*?)^[ \t]*```", re.M | re.S)
INLINE = re.compile(r"`(iiotbed [^`]+)`")
STUDENT_FILE = re.compile(r"^my[-_][\w.-]+$")
#: what simulate and compare run with here: two replications of one shift
SHORT = ["-n", "2", "-d", "12h"]
SHORTENED = {"-n", "--replications", "-d", "--duration"}

pytestmark = pytest.mark.timeout(120)


def page_commands(text: str) -> Iterator[tuple[str, list[str]]]:
    """(the command as written, its words after ``iiotbed``) for every command of a page."""
    for block in FENCE.findall(text):
        for line in block.splitlines():
            line = line.strip()
            if line and not line.startswith("#"):
                yield line, shlex.split(line)[1:] if line.startswith("iiotbed ") else []
    for span in INLINE.findall(FENCE.sub("", text)):
        yield span, shlex.split(span)[1:]


def parse(args: Sequence[str]) -> tuple[tuple[str, ...], dict[str, Any]]:
    """The real parser on ``args``: the subcommand's path and its parameters (raises a
    click error on an unknown command or option, or a bad value)."""
    # typer carries its own click: a group is what resolves subcommands
    cmd: Any = typer.main.get_command(app)
    ctx = cmd.make_context("iiotbed", list(args))
    path: list[str] = []
    while hasattr(cmd, "resolve_command"):
        rest = [*(getattr(ctx, "_protected_args", None) or []), *ctx.args]
        name, sub, rest = cmd.resolve_command(ctx, rest)
        assert name is not None and sub is not None
        path.append(name)
        cmd = sub
        ctx = sub.make_context(name, rest, parent=ctx)
    return tuple(path), ctx.params


def _run(args: Sequence[str]) -> str | None:
    """Run in this process; None when it exited 0, else what it printed."""
    out = CliRunner().invoke(app, list(args))
    if out.exit_code == 0 and (out.exception is None or isinstance(out.exception, SystemExit)):
        return None
    return f"exit {out.exit_code}: {out.output.strip()[-600:]}"


def check_page(lab: Lab, text: str) -> list[str]:
    """Every problem with the page's commands: what was written and what went wrong."""
    problems: list[str] = []
    commands = list(page_commands(text))
    if not commands:
        problems.append("no iiotbed command in the page")
    for written, words in commands:
        if not words:
            problems.append(f"{written!r}: a line of an sh block must be an iiotbed command")
            continue
        reference = lab.reference()
        args = []
        for word in words:
            if STUDENT_FILE.match(word):
                if Path(word).suffix != reference.suffix:
                    problems.append(f"{written!r}: lab {lab.number} takes a {reference.suffix} file")
                word = str(reference)
            args.append(word)
        try:
            path, params = parse(args)
        except typer.Exit:
            continue  # --help, --version: parsed and printed
        except typer.TyperException as exc:  # click's usage errors
            message = exc.format_message() if hasattr(exc, "format_message") else str(exc)
            problems.append(f"{written!r}: {message}")
            continue
        if path in {("lab", "list"), ("lab", "show"), ("validate",)}:
            run: list[str] | None = args
        elif path in {("simulate",), ("compare",)}:
            run = _shortened(args) + SHORT
        elif path == ("lab", "check"):
            # a batch lab is checked here; a live one on test_labs.py's shared factory
            run = args if find_lab(params["number"]).kind == "batch" else None
        else:
            run = [*path, "--help"]  # a service: runs until stopped
        if run is not None and (failure := _run(run)) is not None:
            problems.append(f"{written!r} (run as iiotbed {shlex.join(run)}): {failure}")
    return problems


def _shortened(args: list[str]) -> list[str]:
    out, skip = [], False
    for word in args:
        if skip:
            skip = False
        elif word in SHORTENED:
            skip = True
        elif not any(word.startswith(f"{o}=") for o in SHORTENED):
            out.append(word)
    return out


@pytest.mark.parametrize("number", [lab.number for lab in LABS])
def test_every_command_of_a_lab_page_runs(number: int, monkeypatch: pytest.MonkeyPatch) -> None:
    lab = find_lab(number)
    monkeypatch.chdir(ROOT)  # the pages name scenarios/... from the repository's root
    text = lab.page().read_text(encoding="utf-8")
    commands = [words for _, words in page_commands(text)]
    assert any(w[:3] == ["lab", "check", str(number)] for w in commands), "no check command"
    problems = check_page(lab, text)
    assert not problems, f"{lab.folder}/README.md:\n" + "\n".join(problems)


def test_a_typo_in_a_page_fails(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(ROOT)
    page = """
Run `iiotbed lab chek 7 my-lossy.yaml` and `iiotbed devices scenarios/tcl-huizhou-5g.yaml --sped 60`.

```sh
iiotbed validate scenarios/tcl-huizhou-5g.yml
iiotbed compare scenarios/tcl-huizhou-5g.yaml my-lossy.yaml -n 3 --durration 2d
python my-lossy.yaml
iiotbed lab check 7 my_script.py
iiotbed lab show 6
```
"""
    problems = check_page(find_lab(7), page)
    assert len(problems) == 6, "\n".join(problems)
    for words in ("chek", "--sped", "tcl-huizhou-5g.yml", "--durration", "python", ".yaml file"):
        assert any(words in p for p in problems), (words, problems)
