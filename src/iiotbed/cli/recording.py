"""Commands: ``record``, ``recording info``, ``replay`` (recorded runs in one MCAP file)."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from iiotbed.cli._common import (
    AsJson,
    Duration,
    FileArg,
    OpcuaPort,
    SparkplugGroup,
    _check_broker,
    _duration,
    _err,
    _load,
    _user_errors,
    app,
)

if TYPE_CHECKING:
    from iiotbed.recording import Recording

__all__ = ["info", "record_cmd", "recording_app", "replay_cmd"]

recording_app = typer.Typer(
    name="recording",
    help="Recorded runs (MCAP files written by `iiotbed record`): info.",
    no_args_is_help=True,
)
app.add_typer(recording_app)

RecordingArg = Annotated[
    Path,
    typer.Argument(help="A recording (.mcap) written by `iiotbed record`.", show_default=False),
]


@contextmanager
def _bad_recording() -> Iterator[None]:
    """A recording that cannot be read is the user's input: exit 2 with the message."""
    from iiotbed.recording import RecordingError

    try:
        yield
    except RecordingError as exc:
        _err(f"error: {exc}")
        raise typer.Exit(2) from None


def _open(path: Path) -> Recording:
    from iiotbed.recording import open_recording

    with _bad_recording():
        return open_recording(path)


@app.command("record")
def record_cmd(
    file: FileArg,
    output: Annotated[
        Path, typer.Option("--output", "-o", dir_okay=False, help="The recording to write (.mcap).")
    ],
    speed: Annotated[
        float, typer.Option("--speed", min=0.001, help="Sim seconds per wall second while paced.")
    ] = 2000.0,
    duration: Duration = None,
    broker: Annotated[
        str | None,
        typer.Option(
            "--broker",
            envvar="IIOTBED_BROKER",
            help="MQTT broker the devices publish to (default: an embedded one on a free port).",
        ),
    ] = None,
    replication: Annotated[
        int, typer.Option("--replication", min=0, help="Which replication's random streams.")
    ] = 0,
    opcua_port: OpcuaPort = 4840,
    sparkplug_group: SparkplugGroup = None,
    as_json: AsJson = False,
) -> None:
    """Run the factory live (as `iiotbed devices`) and record every layer into one MCAP file.

    `--duration` counts from the first shift, as `iiotbed run`: `8h` is the first day shift.
    """
    import asyncio

    from iiotbed.cli.progress import ProgressLine, progress_mode
    from iiotbed.cli.run import _first_production
    from iiotbed.recording import RecordOptions, record
    from iiotbed.testbed.progress import live_progress

    with _user_errors():
        d = _duration(duration)
        _check_broker(broker)
        if not output.parent.is_dir():
            raise typer.BadParameter(f"{output.parent} is not a directory", param_hint="--output")
        scenario = _load(file)
        end = _first_production(scenario) + d if d is not None else scenario.run.duration
        if d is not None:
            scenario = _load(file, duration=end)
        opts = RecordOptions(speed=speed, end=end, broker=broker, replication=replication,
                             opcua_port=opcua_port, sparkplug_group=sparkplug_group)  # fmt: skip

        def say(message: str) -> None:
            _err(message) if as_json else typer.echo(message)
            sys.stdout.flush()

        say(
            f"{scenario.name}: recording sim time 0 .. {end / 3600:g} h at {speed:g}x into {output}"
        )
        mode = progress_mode(as_json=as_json)
        summary = asyncio.run(record(
            scenario, file, output, opts, say=say,
            watch=lambda live: ProgressLine(lambda: live_progress(live), mode),
        ))  # fmt: skip
        if as_json:
            typer.echo(json.dumps({
                "path": str(summary.path), "size_bytes": summary.size,
                "mqtt_messages": summary.mqtt_messages, "records": summary.records,
                "opcua_values": summary.opcua_values, "wall_s": round(summary.wall_s, 3),
                "answer_key": summary.answer_key.to_dict(),
            }, indent=2))  # fmt: skip
            return
        typer.echo(
            f"wrote {summary.path}: {summary.size / 1e6:.2f} MB, {summary.mqtt_messages} MQTT "
            f"messages, {summary.records} records, {summary.opcua_values} OPC UA values "
            f"in {summary.wall_s:.1f} s"
        )
        _print_key(summary.answer_key.to_dict())


@recording_app.command("info")
def info(path: RecordingArg, as_json: AsJson = False) -> None:
    """Scenario, seed, window, channels, message counts and the answer key of a recording."""
    rec = _open(path)
    d = rec.to_dict()
    if as_json:
        typer.echo(json.dumps(d, indent=2))
        return
    start, end = d["window"]
    typer.echo(f"{path}: iiotbed recording, schema version {d['schema_version']} "
               f"(written by iiotbed {d['software_version']})")  # fmt: skip
    typer.echo(f"scenario: {d['scenario']} ({d['scenario_file']}), seed {d['seed']}, "
               f"replication {d['replication']}, recorded at {d['speed']:g}x")  # fmt: skip
    typer.echo(f"window: sim time {start:g} .. {end:g} s ({(end - start) / 3600:.2f} h); "
               f"paced from {d['paced_from']:g} s")  # fmt: skip
    typer.echo("messages: " + ", ".join(f"{k} {v}" for k, v in d["counts"].items()))
    typer.echo(f"channels ({len(d['channels'])}):")
    for c in d["channels"]:
        flags = "" if c["qos"] is None else f"  qos {c['qos']}{' retained' if c['retain'] else ''}"
        typer.echo(f"  {c['topic']}  [{c['protocol']}, {c['encoding']}]  {c['messages']}{flags}")
    _print_key(d["answer_key"])


def _print_key(key: dict[str, Any]) -> None:
    from iiotbed.cli._common import _SHOWN, _fmt

    line = key["line"]
    start, end = key["window"]
    typer.echo(f"answer key over sim time {start:g} .. {end:g} s:")
    for k in (*_SHOWN, "scrap_count", "processed", "failures"):
        if k in line:
            v = line[k]
            typer.echo(f"  {k:<22} {'n/a' if v is None else _fmt(v)}")


@app.command("replay")
def replay_cmd(
    path: RecordingArg,
    broker: Annotated[
        str | None,
        typer.Option("--broker", envvar="IIOTBED_BROKER", help="MQTT broker to publish to."),
    ] = None,
    speed: Annotated[
        float | None,
        typer.Option(
            "--speed",
            min=0.001,
            help="Sim seconds per wall second after the unpaced start (default 1: real time).",
        ),
    ] = None,
    max_: Annotated[
        bool,
        typer.Option(
            "--max", help="As fast as the broker acknowledges (never faster than its PUBACKs)."
        ),
    ] = False,
    loop: Annotated[
        bool, typer.Option("--loop", help="Start again at the end, until Ctrl-C.")
    ] = False,
    only: Annotated[
        str | None,
        typer.Option(
            "--only",
            help="Comma-separated protocols to replay: sparkplug, vda5050, mqtt, "
            "opcua (with --opcua-port).",
        ),
    ] = None,
    topic_prefix: Annotated[
        str, typer.Option("--topic-prefix", help="Put this before every topic, e.g. lab1/.")
    ] = "",
    opcua_port: Annotated[
        int | None,
        typer.Option(
            "--opcua-port",
            min=1,
            max=65535,
            help="Also re-serve the recorded machines over OPC UA on this port.",
        ),
    ] = None,
    as_json: AsJson = False,
) -> None:
    """Publish a recording to a broker as its devices would now: Sparkplug sessions re-born,
    VDA 5050 header ids continuous, at a speed or as fast as the broker acknowledges."""
    import asyncio

    from iiotbed.recording.replay import ReplayOptions, ReplayStats, replay

    with _user_errors():
        if broker is None:
            raise typer.BadParameter("give the broker to publish to, e.g. mqtt://127.0.0.1:1883",
                                     param_hint="--broker")  # fmt: skip
        _check_broker(broker)
        if max_ and speed is not None:
            raise typer.BadParameter("give --speed or --max, not both", param_hint="--max")
        wanted = _protocols(only)
        if "#" in topic_prefix or "+" in topic_prefix:
            raise typer.BadParameter(f"{topic_prefix!r} has a wildcard; a topic prefix is plain "
                                     "text such as lab1/", param_hint="--topic-prefix")  # fmt: skip
        rec = _open(path)
        opts = ReplayOptions(broker=broker, speed=None if max_ else (speed or 1.0),
                             loops=0 if loop else 1, only=wanted, topic_prefix=topic_prefix,
                             opcua_port=opcua_port)  # fmt: skip
        stats = ReplayStats()
        pace = "as fast as the broker acknowledges" if max_ else f"at {opts.speed:g}x"
        (_err if as_json else typer.echo)(
            f"replaying {path} ({rec.meta.get('scenario_name')}) to {broker} {pace}"
            + (", looping until Ctrl-C" if loop else "")
            + (f"; OPC UA at opc.tcp://127.0.0.1:{opcua_port}/iiotbed/" if opcua_port else "")
        )
        try:
            with _bad_recording():
                asyncio.run(replay(rec, opts, stats=stats))
        except KeyboardInterrupt:
            _err("stopped")
        d: dict[str, Any] = {"published": dict(sorted(stats.published.items())), "total": stats.total,
             "skipped": stats.skipped, "sessions": stats.sessions, "loops": stats.loops,
             "wall_s": round(stats.wall_s, 3), "opcua_values": stats.opcua_values,
             "rebirths": stats.rebirths,
             "endpoints": stats.endpoints,
             "rate_per_s": round(stats.total / stats.wall_s, 1) if stats.wall_s > 0 else None}  # fmt: skip
        if as_json:
            typer.echo(json.dumps(d, indent=2))
            return
        per = ", ".join(f"{k} {v}" for k, v in d["published"].items()) or "nothing"
        typer.echo(f"published {d['total']} messages ({per}) in {stats.wall_s:.2f} s over "
                   f"{stats.sessions} sessions, {stats.loops} pass(es); skipped {stats.skipped}"
                   + (f"; answered {stats.rebirths} rebirth request(s)" if stats.rebirths else ""))  # fmt: skip
        if stats.endpoints:
            typer.echo(f"OPC UA: {stats.opcua_values} values set on {', '.join(stats.endpoints)}")


def _protocols(only: str | None) -> frozenset[str] | None:
    from iiotbed.recording import PROTOCOLS

    if only is None:
        return None
    names = frozenset(p.strip() for p in only.split(",") if p.strip())
    bad = sorted(names - set(PROTOCOLS))
    if bad or not names:
        raise typer.BadParameter(f"unknown protocol {', '.join(bad) or repr(only)}; choose from "
                                 f"{', '.join(PROTOCOLS)}", param_hint="--only")  # fmt: skip
    return names
