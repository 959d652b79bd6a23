"""Student labs that check themselves: the catalogue, the rig a live lab runs on, checkers.

``iiotbed lab list | show N | check N [FILE]``: each lab is a page in the repository's
``labs/`` folder and a checker here. A live lab's checker starts the factory behind real
protocols (:class:`LabRig`: broker, platform, devices, gateway), runs the student's script
against it and sets its answer beside what the simulation did; a batch lab's checker
simulates the student's scenario file beside the one it changes. Each step prints PASS or
FAIL with a hint.
"""

from iiotbed.labs.catalogue import LABS, Lab, LabNotFound, find_lab, labs_dir
from iiotbed.labs.report import CheckReport, Step
from iiotbed.labs.rig import LabRig, Watcher
from iiotbed.labs.runner import LAB_SPEED, check_batch, check_live, check_on_own_rig

__all__ = [
    "LABS",
    "LAB_SPEED",
    "CheckReport",
    "Lab",
    "LabNotFound",
    "LabRig",
    "Step",
    "Watcher",
    "check_batch",
    "check_live",
    "check_on_own_rig",
    "find_lab",
    "labs_dir",
]
