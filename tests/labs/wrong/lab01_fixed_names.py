"""A wrong attempt at lab 1: guesses the identification instead of reading it."""

import json
import os

station = os.environ["IIOTBED_LAB_STATION"]
print(json.dumps({"station": station, "Manufacturer": "TCL", "SerialNumber": station,
                  "ProductInstanceUri": f"88.188.1/{station}", "ItemState": "Execute"}))
