"""Run a lab's reference solution and change one field of its answer (wrong attempts)."""

import json
import subprocess
import sys
from pathlib import Path

SOLUTIONS = Path(__file__).resolve().parents[3] / "labs" / "solutions"


def tampered(solution, change):
    out = subprocess.run([sys.executable, str(SOLUTIONS / solution)], capture_output=True,
                         text=True, check=True, cwd=SOLUTIONS).stdout
    answer = json.loads(out.strip().splitlines()[-1])
    change(answer)
    print(json.dumps(answer))
