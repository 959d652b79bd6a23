"""The pure SimPy model of a plant line: stations, buffers, supply, crews, calendar.

No I/O, no asyncio, no wall clock. Records (``iiotbed.telemetry`` Sample/Event) go to an
injected sink; ``simulate`` collects them for batch runs.
"""

from iiotbed.devices.sim.calendar import ProductionCalendar
from iiotbed.devices.sim.factory import Factory, record_names, sample_names, simulate
from iiotbed.devices.sim.states import STATES, State
from iiotbed.devices.sim.station import StationControl
from iiotbed.devices.sim.supply import AmrControl

__all__ = ["STATES", "AmrControl", "Factory", "ProductionCalendar", "State", "StationControl",
           "record_names", "sample_names", "simulate"]
