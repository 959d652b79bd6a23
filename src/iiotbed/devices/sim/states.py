"""Station states: what each situation shows as OPC 40001-1 state, mode and PackML state.

====================  ============  ===========  ==============  =======
situation             ItemState     OpMode       PackML          power
====================  ============  ===========  ==============  =======
running a cycle       Executing     Processing   Execute (6)     executing
starved / blocked     NotExecuting  Processing   Suspended (5)   idle
stopped (control)     NotExecuting  Processing   Stopped (2)     idle
held (control)        NotExecuting  Processing   Held (11)       idle
break                 NotExecuting  NONE         Idle (4)        idle
off shift             NotExecuting  NONE         Idle (4)        off
planned maintenance   OutOfService  Maintenance  Stopped (2)     down
breakdown (Fault=1)   OutOfService  Maintenance  Aborted (9)     down
predictive maint.     OutOfService  Maintenance  Held (11)       down
====================  ============  ===========  ==============  =======
"""

from __future__ import annotations

from enum import IntEnum
from typing import NamedTuple

from iiotbed.telemetry import ItemState, OperationMode, PackMLState

__all__ = ["STATES", "Activity", "Power", "State"]


class Power(IntEnum):
    EXECUTING = 0
    IDLE = 1
    DOWN = 2
    OFF = 3


class Activity(IntEnum):
    """What the station's process is doing (the state also depends on calendar and control)."""

    EXECUTING = 0
    WAITING = 1  # starved (input or kits) or blocked (output)
    PAUSED = 2  # a cycle interrupted by the calendar or a Stop/Hold
    BREAKDOWN = 3
    PREDICTIVE = 4


class State(NamedTuple):
    name: str
    item: int
    mode: int
    packml: int
    power: Power


_E, _N, _O = ItemState.Executing, ItemState.NotExecuting, ItemState.OutOfService
_P, _M, _X = OperationMode.Processing, OperationMode.Maintenance, OperationMode.NONE

EXECUTING = State("executing", _E, _P, PackMLState.Execute, Power.EXECUTING)
SUSPENDED = State("suspended", _N, _P, PackMLState.Suspended, Power.IDLE)
STOPPED = State("stopped", _N, _P, PackMLState.Stopped, Power.IDLE)
HELD = State("held", _N, _P, PackMLState.Held, Power.IDLE)
BREAK = State("break", _N, _X, PackMLState.Idle, Power.IDLE)
OFF_SHIFT = State("off-shift", _N, _X, PackMLState.Idle, Power.OFF)
PLANNED_MAINTENANCE = State("planned-maintenance", _O, _M, PackMLState.Stopped, Power.DOWN)
BREAKDOWN = State("breakdown", _O, _M, PackMLState.Aborted, Power.DOWN)
PREDICTIVE = State("predictive-maintenance", _O, _M, PackMLState.Held, Power.DOWN)

STATES = (
    EXECUTING, SUSPENDED, STOPPED, HELD, BREAK, OFF_SHIFT, PLANNED_MAINTENANCE, BREAKDOWN,
    PREDICTIVE,
)
