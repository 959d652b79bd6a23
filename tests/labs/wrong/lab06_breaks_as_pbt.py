"""A wrong attempt at lab 6: the reference solution with breaks counted as PBT.

Breaks are planned downtime: counted in PBT they lower availability (the station is idle
through them) and OEE. Reuses the reference's window (IIOTBED_LAB_REFERENCE_ANSWER): the
samples are stored already, no second wait.
"""

import importlib.util
import json
import os
from pathlib import Path

spec = importlib.util.spec_from_file_location(
    "lab06_oee", Path(__file__).resolve().parents[3] / "labs/solutions/lab06_oee.py")
ref = importlib.util.module_from_spec(spec)
spec.loader.exec_module(ref)
ref.planned_busy = lambda planned, item: planned in (ref.PRODUCTION, ref.BREAK) and item is not None
answer = json.loads(os.environ["IIOTBED_LAB_REFERENCE_ANSWER"])
ref.main(window=(answer["t0"], answer["t1"]))
