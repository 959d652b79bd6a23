"""Values the live endpoints show that the simulator does not emit: Power and CycleTime.

``Power`` (kW) follows each station's state: the stage's executing, idle, down or off
draw. A break and off shift share the same machine state; only the line's planned state
tells them apart. ``CycleTime`` (s) is the executing time spent on the last completed
unit (pauses at breaks excluded), reported when the station's ProcessedCount moves.
``EquipmentStarved`` / ``EquipmentBlocked`` (PackML) are 1 while the station is Suspended
with its input buffer empty / its output buffer full (both when both hold: it can neither
take a unit nor pass one on); a wait for kits shows neither (no kit stock samples).
"""

from __future__ import annotations

from iiotbed.devices.sim import STATES
from iiotbed.devices.sim.states import Power
from iiotbed.scenario import Scenario
from iiotbed.telemetry import ItemState, PackMLState, PlannedState, Tag

__all__ = ["STATE_TAGS", "Derived", "power_index"]

#: the state tags, in the order :meth:`Derived.state` takes their index
STATE_TAGS = (Tag.ITEM_STATE, Tag.OPERATION_MODE, Tag.PACKML_STATE)


def power_index() -> dict[tuple[int, int, int], Power | None]:
    """(item, mode, packml) -> power class; None where only the calendar tells (break/off)."""
    out: dict[tuple[int, int, int], Power | None] = {}
    for st in STATES:
        key = (int(st.item), int(st.mode), int(st.packml))
        out[key] = st.power if key not in out or out[key] == st.power else None
    return out


class Derived:
    """Per station state, executing time and power; fed in record order by the router."""

    def __init__(self, scenario: Scenario) -> None:
        paths = [path for _, _, path in scenario.station_paths()]
        self._stage_power = {
            path: (s.power.executing, s.power.idle, s.power.down, s.power.off)
            for s, _, path in scenario.station_paths()
        }
        self._power_of = power_index()
        self._state: dict[str, list[int]] = {p: [0, 0, 0] for p in paths}
        self.power: dict[str, float] = {}  # last power shown per station
        self.planned = int(PlannedState.OffShift)
        self._exec_since: dict[str, float | None] = dict.fromkeys(paths)
        self._exec_acc: dict[str, float] = dict.fromkeys(paths, 0.0)
        # the buffers around each station (sim/factory.py: a stage's input buffer, the
        # next stage's is its output) and their levels, fed by the buffers' Level samples
        line, stages = scenario.line_path, scenario.line.stages
        buffers = [(f"{line}/{s.name}/buffer", s.buffer_capacity) for s in stages]
        self._around: dict[str, tuple[str, tuple[str, int] | None]] = {}
        self.next_to: dict[str, list[str]] = {b: [] for b, _ in buffers}  # buffer -> stations
        for i, stage in enumerate(stages):
            out = buffers[i + 1] if i + 1 < len(stages) else None
            for name in stage.station_names:
                path = f"{line}/{stage.name}/{name}"
                self._around[path] = (buffers[i][0], out)
                self.next_to[buffers[i][0]].append(path)
                if out is not None:
                    self.next_to[out[0]].append(path)
        self._level: dict[str, int] = dict.fromkeys(self.next_to, 0)
        self.flow: dict[str, tuple[bool, bool]] = dict.fromkeys(paths, (False, False))

    def state(self, path: str, index: int, value: int, t: float) -> None:
        """A state tag (``STATE_TAGS[index]``) of the station changed at ``t``."""
        self._state[path][index] = value
        if index == 0:
            executing = value == ItemState.Executing
            since = self._exec_since[path]
            if executing and since is None:
                self._exec_since[path] = t
            elif not executing and since is not None:
                self._exec_acc[path] += t - since
                self._exec_since[path] = None

    def cycle_done(self, path: str, t: float) -> float:
        """Executing seconds since the previous unit finished (pauses at breaks excluded)."""
        since = self._exec_since[path]
        cycle = self._exec_acc[path] + (t - since if since is not None else 0.0)
        self._exec_acc[path] = 0.0
        if since is not None:
            self._exec_since[path] = t
        return round(cycle, 6)

    def power_change(self, path: str) -> float | None:
        """The station's draw now (kW) if it differs from the last one shown, else None."""
        item, mode, packml = self._state[path]
        klass = self._power_of.get((item, mode, packml), Power.IDLE)
        if klass is None:  # break or off shift: only the calendar tells them apart
            klass = Power.OFF if self.planned == PlannedState.OffShift else Power.IDLE
        kw = float(self._stage_power[path][klass])
        if self.power.get(path) == kw:
            return None
        self.power[path] = kw
        return kw

    def level(self, buffer: str, value: int) -> None:
        """A buffer's Level sample (units in it now)."""
        self._level[buffer] = value

    def flow_change(self, path: str) -> tuple[bool, bool] | None:
        """(starved, blocked) now if either differs from the last shown, else None."""
        suspended = self._state[path][2] == PackMLState.Suspended
        inbuf, out = self._around[path]
        now = (
            suspended and self._level[inbuf] == 0,
            suspended and out is not None and self._level[out[0]] >= out[1],
        )
        if self.flow[path] == now:
            return None
        self.flow[path] = now
        return now
