"""The platform: KPI engine (and, as they arrive, ingest, storage and HTTP API).

Imports stay light: nothing here pulls in pydantic, a database driver or a web framework.
"""

from iiotbed.platform.kpi import KPI_INFO, KpiAccumulator, KpiInfo, KpiReport, compute_kpis
from iiotbed.platform.layout import Layout, StationLayout

__all__ = [
    "KPI_INFO",
    "KpiAccumulator",
    "KpiInfo",
    "KpiReport",
    "Layout",
    "StationLayout",
    "compute_kpis",
]
