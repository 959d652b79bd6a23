"""``iiotbed runs list`` and ``iiotbed runs prune``: the runs directory, listed and pruned."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from iiotbed.cli import app
from iiotbed.testbed import list_runs, prune_runs
from iiotbed.testbed.runs import format_size

runner = CliRunner()

# oldest first; sizes in bytes
RUNS = {
    "single-machine-teaching-20260105T080000Z-aaaaaa": 1_500,
    "tcl-huizhou-lcm-line-5g-upgrade-20260106T093000Z-bbbbbb": 2_000_000,
    "single-machine-teaching-20260107T120000Z-cccccc": 300,
    "tcl-huizhou-lcm-line-5g-upgrade-20260108T235959Z-dddddd": 42,
}
NEWEST_FIRST = list(reversed(RUNS))


@pytest.fixture
def runs_dir(tmp_path: Path) -> Path:
    root = tmp_path / "runs"
    for run_id, size in RUNS.items():
        (root / run_id / "sub").mkdir(parents=True)
        (root / run_id / "events.jsonl").write_bytes(b"x" * (size - size // 3))
        (root / run_id / "sub" / "store.db").write_bytes(b"y" * (size // 3))
    # not runs: a directory and a file whose names are no run id stay whatever happens
    (root / "notes").mkdir()
    (root / "notes" / "keep.txt").write_text("mine", encoding="utf-8")
    (root / "README").write_text("mine", encoding="utf-8")
    return root


def test_list_runs_newest_first_with_time_and_size(runs_dir: Path) -> None:
    runs = list_runs(runs_dir)
    assert [r.run_id for r in runs] == NEWEST_FIRST
    assert [r.size for r in runs] == [RUNS[r] for r in NEWEST_FIRST]
    assert runs[0].started == dt.datetime(2026, 1, 8, 23, 59, 59, tzinfo=dt.UTC)
    assert runs[0].path == runs_dir / NEWEST_FIRST[0]
    assert list_runs(runs_dir / "missing") == []


def test_prune_keeps_the_newest_and_nothing_else_is_touched(runs_dir: Path) -> None:
    dry = prune_runs(runs_dir, 1, dry_run=True)
    assert [r.run_id for r in dry.deleted] == NEWEST_FIRST[1:]
    assert len(list_runs(runs_dir)) == 4  # a dry run deletes nothing
    pruned = prune_runs(runs_dir, 1)
    assert [r.run_id for r in pruned.kept] == NEWEST_FIRST[:1]
    assert sorted(p.name for p in runs_dir.iterdir()) == sorted(["README", "notes", NEWEST_FIRST[0]])
    assert (runs_dir / "notes" / "keep.txt").read_text(encoding="utf-8") == "mine"
    assert prune_runs(runs_dir, 0).deleted[0].run_id == NEWEST_FIRST[0]
    assert list_runs(runs_dir) == []
    with pytest.raises(ValueError, match="keep must be >= 0"):
        prune_runs(runs_dir, -1)


@pytest.mark.parametrize(
    ("size", "text"),
    [(0, "0 B"), (999, "999 B"), (1_000, "1.0 kB"), (218_400_000, "218.4 MB"), (3 * 10**9, "3.0 GB")],
)
def test_sizes_in_decimal_units(size: int, text: str) -> None:
    assert format_size(size) == text


def test_cli_runs_list(runs_dir: Path) -> None:
    res = runner.invoke(app, ["runs", "list", "--runs-dir", str(runs_dir)])
    assert res.exit_code == 0, res.output
    lines = res.stdout.splitlines()
    assert lines[0].split() == ["RUN", "ID", "STARTED", "(UTC)", "SIZE"]
    assert [ln.split()[0] for ln in lines[1:5]] == NEWEST_FIRST
    assert lines[1].split()[1:] == ["2026-01-08", "23:59", "42", "B"]
    assert lines[3].split()[1:] == ["2026-01-06", "09:30", "2.0", "MB"]
    assert lines[5] == f"4 runs, 2.0 MB in {runs_dir}"
    # the directory from the environment, as for `iiotbed run`; JSON on request
    res = runner.invoke(app, ["runs", "list", "--json"], env={"IIOTBED_RUNS_DIR": str(runs_dir)})
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout)
    assert [r["run_id"] for r in out] == NEWEST_FIRST
    assert out[0]["started"] == "2026-01-08T23:59:59+00:00" and out[0]["size_bytes"] == 42
    res = runner.invoke(app, ["runs", "list", "--runs-dir", str(runs_dir / "none")])
    assert res.exit_code == 0 and res.stdout == f"no runs in {runs_dir / 'none'}\n"


def test_cli_runs_prune(runs_dir: Path) -> None:
    res = runner.invoke(app, ["runs", "prune", "--keep", "1", "--dry-run", "--runs-dir", str(runs_dir)])
    assert res.exit_code == 0, res.output
    assert res.stdout.splitlines()[0].startswith(f"would delete {NEWEST_FIRST[1]}  (2026-01-07 12:00, 300 B)")
    assert res.stdout.splitlines()[-1] == f"would delete 3 runs (2.0 MB); kept 1 in {runs_dir}"
    assert len(list_runs(runs_dir)) == 4
    # the default keeps 5: nothing to do here
    res = runner.invoke(app, ["runs", "prune"], env={"IIOTBED_RUNS_DIR": str(runs_dir)})
    assert res.exit_code == 0, res.output
    assert res.stdout == f"deleted 0 runs (0 B); kept 4 in {runs_dir}\n"
    res = runner.invoke(app, ["runs", "prune", "--keep", "2", "--runs-dir", str(runs_dir)])
    assert res.exit_code == 0, res.output
    assert res.stdout.count("deleted ") == 3
    assert [r.run_id for r in list_runs(runs_dir)] == NEWEST_FIRST[:2]
    assert (runs_dir / "notes" / "keep.txt").exists() and (runs_dir / "README").exists()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["prune", "--keep", "-1"], "--keep"),
        (["prune", "--keep", "many"], "--keep"),
        (["list", "--runs-dir", "{file}"], "is a file"),
        (["prune", "--runs-dir", "{file}"], "is a file"),
        (["tidy"], "No such command 'tidy'"),
    ],
)
def test_cli_runs_usage_errors_exit_2(tmp_path: Path, args: list[str], message: str) -> None:
    file = tmp_path / "a-file"
    file.write_text("", encoding="utf-8")
    res = runner.invoke(app, ["runs", *(a.format(file=file) for a in args)])
    assert res.exit_code == 2, res.output
    text = " ".join(res.output.replace("│", " ").split())  # rich wraps the message in a box
    assert message in text
    assert "Traceback" not in res.output
    assert file.exists()
