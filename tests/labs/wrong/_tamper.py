"""Print the reference solution's answer with one field changed (wrong attempts).

The test runs the reference first and hands its answer (JSON) over in
IIOTBED_LAB_REFERENCE_ANSWER, so a wrong attempt costs no second experiment.
"""

import json
import os


def tampered(change):
    answer = json.loads(os.environ["IIOTBED_LAB_REFERENCE_ANSWER"])
    change(answer)
    print(json.dumps(answer))
