"""iiotbed: a simulated Industrial-IoT factory with an answer key.

The scenario (``iiotbed.scenario``) drives a pure SimPy model (``iiotbed.devices.sim``)
whose event log is the answer key; ``iiotbed.platform.kpi`` turns records into ISO 22400 KPIs.
"""

__version__ = "0.1.0"

__all__ = ["__version__"]
