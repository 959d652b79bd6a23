"""``iiotbed lab``: the student labs: list them, show a page, check a piece of work."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from iiotbed.cli._common import LogLevel, _logging, _serve, _user_errors, app

if TYPE_CHECKING:
    from iiotbed.labs import Lab, LabRig

__all__ = ["check", "lab_app", "list_cmd", "show"]

lab_app = typer.Typer(
    name="lab",
    help="Labs that check themselves: list, show a page, check your work (exit 0 pass, 1 fail).",
    no_args_is_help=True,
)
app.add_typer(lab_app)

Number = Annotated[int, typer.Argument(help="The lab's number (iiotbed lab list).")]


def _lab(number: int) -> Lab:
    from iiotbed.labs import LabNotFound, find_lab

    try:
        return find_lab(number)
    except LabNotFound as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None


@lab_app.command("list")
def list_cmd() -> None:
    """Every lab: number, kind (live factory or batch) and title."""
    from iiotbed.labs import LABS

    for lab in LABS:
        typer.echo(f"{lab.number:>2}  {lab.kind:<5}  {lab.title}")
    typer.echo("iiotbed lab show N prints a lab's page; iiotbed lab check N FILE checks your work")


@lab_app.command()
def show(number: Number) -> None:
    """Print a lab's page (markdown): goal, background, steps, what to observe, questions."""
    from iiotbed.labs import LabNotFound

    lab = _lab(number)
    try:
        page = lab.page()
    except LabNotFound as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    typer.echo(page.read_text(encoding="utf-8"))
    typer.echo(f"(page: {page}; its picture and the reference solution are beside it)")


@lab_app.command()
def check(
    number: Number,
    file: Annotated[
        Path | None, typer.Argument(help="Your work: a script (live labs) or a scenario file.")
    ] = None,
    reference: Annotated[
        bool, typer.Option("--reference", help="Check the lab's reference solution instead.")
    ] = False,
    broker: Annotated[
        str | None,
        typer.Option(
            "--broker",
            envvar="IIOTBED_BROKER",
            help="MQTT broker the lab's factory uses (default: an embedded one).",
        ),
    ] = None,
    opcua_port: Annotated[
        int | None,
        typer.Option(
            "--opcua-port",
            min=1,
            max=65535,
            help="OPC UA port of the lab's factory (default 4840, another when taken).",
        ),
    ] = None,
    speed: Annotated[
        float | None,
        typer.Option(
            "--speed",
            min=1.0,
            help="Sim seconds per wall second (default: the lab's: 300, lab 6 1200).",
        ),
    ] = None,
    timeout: Annotated[
        float | None, typer.Option("--timeout", min=1.0, help="Wall seconds your script may take.")
    ] = None,
    log_level: LogLevel = None,
) -> None:
    """Check your work on lab N: start what it needs, run or read it, PASS/FAIL per step."""
    from iiotbed.labs import LabNotFound, check_batch, check_on_own_rig

    lab = _lab(number)
    pace = speed or lab.speed
    if reference:
        if file is not None:
            typer.echo("error: give FILE or --reference, not both", err=True)
            raise typer.Exit(2)
        try:
            file = lab.reference()
        except LabNotFound as exc:
            typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(2) from None
    if broker is not None and not broker.startswith("mqtt://"):
        typer.echo(f"error: --broker {broker!r}: expected mqtt://host:port", err=True)
        raise typer.Exit(2)

    _quiet_logs(log_level)
    # progress for a check that will run (a missing FILE is a usage error below)
    runs = file is not None and file.is_file()

    def ready(rig: LabRig) -> None:
        typer.echo(f"lab {lab.number}: factory up at {pace:g}x; your script gets:", err=True)
        for line in rig.describe():
            typer.echo(f"  {line}", err=True)
        limit = timeout or lab.timeout
        typer.echo(
            f"lab {lab.number}: running python {file} (stopped after {limit:g} s)...", err=True
        )

    with _user_errors():
        try:
            if lab.kind == "batch":
                if runs:
                    typer.echo(
                        f"lab {lab.number}: simulating {file} beside the 5G scenario...", err=True
                    )
                report = check_batch(lab, file)
            else:
                if runs:
                    typer.echo(f"lab {lab.number}: starting the factory at {pace:g}x (broker, OPC UA "
                               "servers, platform, gateway: about 10 s)...", err=True)  # fmt: skip
                result = _serve(lambda: check_on_own_rig(
                    lab, file, speed=pace, broker=broker, opcua_port=opcua_port,
                    limit_s=timeout, on_ready=ready,
                ))  # fmt: skip
                if result is None:  # Ctrl-C or SIGTERM: the factory was stopped in order
                    raise typer.Exit(130)
                report = result
        except LabNotFound as exc:
            typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(2) from None
    if not report.passed and report.output:
        typer.echo("your script's output:")
        for line in report.output.splitlines()[-20:]:
            typer.echo(f"  | {line}")
    for line in report.lines():
        typer.echo(line)
    raise typer.Exit(0 if report.passed else 1)


def _quiet_logs(level: str | None) -> None:
    """A student reads PASS/FAIL lines: the services log errors only (--log-level for more),
    asyncua nothing below critical (it logs a closing session's pending requests as
    tracebacks, and nodeset and session-timeout notes at warning)."""
    import logging

    _logging(level, "error")
    if logging.getLogger().level > logging.DEBUG:
        logging.getLogger("asyncua").setLevel(logging.CRITICAL)
