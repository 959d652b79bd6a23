"""A wrong attempt at lab 4: answers without asking for a rebirth (and invents seqs)."""

import json

print(json.dumps({"bdSeq": 0, "birth_metrics": 2, "seqs": [1, 2, 3], "rebirth": True}))
