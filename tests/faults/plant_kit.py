"""Helpers of the plant cases: one line of a ``run: {lines: N}`` plant as processes, a plant
file, and OPC UA ports for its lines.

``test_plant_lines.py`` runs a gateway per line (each line its own run id); the three-line
case (``test_plant_three_lines.py``) runs the lines' devices here and two redundant gateway
processes over all of them.
"""

from __future__ import annotations

import socket
from collections import Counter
from pathlib import Path

from kit import SCENARIOS, Mosquitto, Testbed
from redundancy import stored_keys


def plant_file(path: Path, lines: int, template: Path = SCENARIOS / "single-machine.yaml") -> Path:
    """A plant of ``lines`` copies of ``template`` (lines ``line-1-1``...), written to ``path``."""
    path.write_text(f"extends: {template}\nrun: {{lines: {lines}}}\n")
    return path


def free_ports(n: int, tries: int = 50) -> int:
    """The first of ``n`` consecutive TCP ports free on 127.0.0.1 (one OPC UA port per line:
    ``iiotbed gateway --line A --line B ... --opcua-port BASE`` takes line i at BASE + i - 1)."""
    for _ in range(tries):
        socks = []
        try:
            first = socket.socket()
            socks.append(first)
            first.bind(("127.0.0.1", 0))
            base = int(first.getsockname()[1])
            if base + n > 65535:
                continue
            for port in range(base + 1, base + n):
                s = socket.socket()
                socks.append(s)
                s.bind(("127.0.0.1", port))
            return base
        except OSError:
            continue
        finally:
            for s in socks:
                s.close()
    raise RuntimeError(f"no {n} consecutive free ports on 127.0.0.1")


class LineBed(Testbed):
    """One line of the plant: its devices and (unless the case runs its own) its gateway;
    the platform is shared (``api_port``: where its API answers)."""

    __test__ = False

    def __init__(self, workdir: Path, broker: Mosquitto, plant: Path, line: str, *,
                 duration: float, speed: float, store: str, api_port: int,
                 opcua_port: int | None = None,
                 primary_host: str | None = None) -> None:  # fmt: skip
        workdir.mkdir()
        super().__init__(workdir, broker, plant, duration=duration, speed=speed, store=store,
                         opcua_port=opcua_port, primary_host=primary_host)  # fmt: skip
        self.line = line
        self.api_port = api_port

    def devices_args(self) -> list[str]:
        return [*super().devices_args(), "--line", self.line]

    def gateway_args(self) -> list[str]:
        return [*super().gateway_args(), "--line", self.line]

    def answer_key(self, start: float, end: float) -> dict[str, float]:
        from iiotbed.platform.layout import Layout
        from iiotbed.scenario import load_scenario
        from iiotbed.scenario.plant import select_line
        from iiotbed.testbed.agreement import line_view
        from iiotbed.testbed.report import replay_answer_key

        scenario = select_line(load_scenario(self.scenario), self.line)
        layout = Layout.from_scenario(scenario)
        return line_view(replay_answer_key(self.events, layout, start, end))


def rows_at(
    store: str, run_id: str, keys: list[tuple[str, str, float]]
) -> list[tuple[object, ...]]:
    """The stored rows (asset, tag, t, value, quality, gateway_ts) of ``run_id`` at ``keys``
    ((asset, tag, t) to the ms): what a failure message shows of a doubled sample."""
    import psycopg

    url, schema = store.split("?schema=")
    out: list[tuple[object, ...]] = []
    with psycopg.connect(url) as db:
        for asset, tag, t in keys:
            out += db.execute(
                f"SELECT s.asset, s.tag, x.t, x.value_num, x.value_text, x.quality, x.gateway_ts "
                f'FROM "{schema}".samples x JOIN "{schema}".series s ON s.id = x.series '
                f'JOIN "{schema}".run_keys r ON r.id = s.run WHERE r.run_id = %s AND s.asset = %s '
                "AND s.tag = %s AND abs(x.t - %s) < 0.001",
                (run_id, asset, tag, t),
            ).fetchall()
    return out


def stored_exact(store: str, run_id: str) -> Counter[tuple[str, str, float]]:
    """How many samples the PostgreSQL store holds per (asset, tag, t) of ``run_id``, ``t`` as
    stored. One source value may reach the store by two protocols (OPC UA stamps to 100 ns,
    Sparkplug to the ms: two ``t`` within a ms); a second gateway adds a row at the *same*
    ``t`` only (another value or quality), which this count shows."""
    return stored_keys(store, run_id, ms=False)
