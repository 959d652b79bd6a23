"""The live factory: the simulation paced to wall time behind real protocol endpoints.

- :mod:`.factory` — :class:`LiveFactory` (an ``async with``) and :func:`run_live`: the lifecycle
- :mod:`.routing` — which endpoint shows which record (a pure function)
- :mod:`.derived` — Power and CycleTime, which the simulator does not emit
- :mod:`.trips` — VDA 5050 orders from the simulation's AMR trips
- :mod:`.commands` — commands in, refusals counted, accepted setpoints mirrored
- :mod:`.options` — :class:`LiveOptions` and :class:`LiveSummary`
"""

from iiotbed.devices.live.factory import LiveFactory, run_live
from iiotbed.devices.live.options import LiveOptions, LiveSummary
from iiotbed.devices.live.routing import Routed, RoutePlan, route

__all__ = ["LiveFactory", "LiveOptions", "LiveSummary", "RoutePlan", "Routed", "route", "run_live"]
