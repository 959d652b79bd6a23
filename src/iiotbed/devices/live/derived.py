"""Values the live endpoints show that the simulator does not emit: Power and CycleTime.

``Power`` (kW) follows each station's state: the stage's executing, idle, down or off
draw. A break and off shift share the same machine state; only the line's planned state
tells them apart. ``CycleTime`` (s) is the executing time spent on the last completed
unit (pauses at breaks excluded), reported when the station's ProcessedCount moves.
"""

from __future__ import annotations

from iiotbed.devices.sim import STATES
from iiotbed.devices.sim.states import Power
from iiotbed.scenario import Scenario
from iiotbed.telemetry import ItemState, PlannedState, Tag

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
