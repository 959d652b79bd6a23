"""``iiotbed runs``: list and prune the directories ``iiotbed run`` leaves behind."""

from __future__ import annotations

import json
from typing import Annotated

import typer

from iiotbed.cli._common import DEFAULT_RUNS_DIR, AsJson, RunsDir, app

__all__ = ["list_cmd", "prune", "runs_app"]

runs_app = typer.Typer(
    name="runs",
    help="The runs `iiotbed run` keeps (store, event log, gateway buffer): list, prune.",
    no_args_is_help=True,
)
app.add_typer(runs_app)


@runs_app.command("list")
def list_cmd(runs_dir: RunsDir = DEFAULT_RUNS_DIR, as_json: AsJson = False) -> None:
    """Every run, newest first: run id, start time (UTC) and size on disk."""
    from iiotbed.testbed.runs import format_size, list_runs

    runs = list_runs(runs_dir)
    if as_json:
        out = [
            {"run_id": r.run_id, "started": r.started.isoformat(), "size_bytes": r.size,
             "path": str(r.path)}
            for r in runs
        ]  # fmt: skip
        typer.echo(json.dumps(out, indent=2))
        return
    if not runs:
        typer.echo(f"no runs in {runs_dir}")
        return
    width = max(len(r.run_id) for r in runs)
    typer.echo(f"{'RUN ID':<{width}}  {'STARTED (UTC)':<16}  {'SIZE':>9}")
    for r in runs:
        typer.echo(f"{r.run_id:<{width}}  {r.started:%Y-%m-%d %H:%M}  {format_size(r.size):>9}")
    total = sum(r.size for r in runs)
    typer.echo(f"{len(runs)} run{'s' * (len(runs) != 1)}, {format_size(total)} in {runs_dir}")


@runs_app.command()
def prune(
    keep: Annotated[
        int, typer.Option("--keep", min=0, help="How many of the newest runs to keep.")
    ] = 5,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Only print what would be deleted.")
    ] = False,
    runs_dir: RunsDir = DEFAULT_RUNS_DIR,
) -> None:
    """Delete all but the newest runs (by the time in their run id)."""
    from iiotbed.testbed.runs import format_size, prune_runs

    pruned = prune_runs(runs_dir, keep, dry_run=dry_run)
    verb = "would delete" if dry_run else "deleted"
    for r in pruned.deleted:
        typer.echo(f"{verb} {r.run_id}  ({r.started:%Y-%m-%d %H:%M}, {format_size(r.size)})")
    n, freed = len(pruned.deleted), format_size(sum(r.size for r in pruned.deleted))
    typer.echo(f"{verb} {n} run{'s' * (n != 1)} ({freed}); kept {len(pruned.kept)} in {runs_dir}")
