"""A wrong attempt at lab 5: claims a pause it never sent."""

import json
import os

print(json.dumps({"amr": os.environ["IIOTBED_LAB_AMR"], "paused_seen": True, "order_id": "trip-1"}))
