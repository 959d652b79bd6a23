"""Two KPI reports equal to 1e-9, the first difference named by its path."""

from __future__ import annotations

import math
from typing import Any

from iiotbed.platform.kpi import KpiReport


def assert_same_report(a: KpiReport, b: KpiReport) -> None:
    def walk(x: Any, y: Any, where: str) -> None:
        if isinstance(x, dict):
            assert x.keys() == y.keys(), where
            for k in x:
                walk(x[k], y[k], f"{where}/{k}")
        elif x is None or y is None:
            assert x == y, where
        else:
            assert math.isclose(x, y, rel_tol=1e-9, abs_tol=1e-9), f"{where}: {x} != {y}"

    walk(a.to_dict(), b.to_dict(), "")
