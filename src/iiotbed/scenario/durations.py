"""Durations (``"250ms"``, ``"45min"``, ``"8h"``) and the distributions of random times."""

from __future__ import annotations

import math
import re
from typing import Annotated, Any, Literal, Self

from pydantic import BeforeValidator, Field, model_validator

from iiotbed.scenario._base import Model

__all__ = [
    "Dist",
    "DistField",
    "DistKind",
    "NonNegSeconds",
    "PosSeconds",
    "Seconds",
    "nonneg_dist",
    "parse_duration",
]

_UNITS = {
    "ms": 0.001,
    "s": 1.0,
    "sec": 1.0,
    "min": 60.0,
    "m": 60.0,
    "h": 3600.0,
    "d": 86400.0,
    "w": 604800.0,
}
_DURATION_RE = re.compile(r"^\s*([0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)\s*([a-z]+)?\s*$")


def parse_duration(value: Any) -> Any:
    """Seconds from a number or a string like ``"250ms"``, ``"45min"``, ``"8h"``, ``"7d"``.

    Values that are neither are returned unchanged so the model reports the type error.
    """
    if isinstance(value, bool):
        return value
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str):
        m = _DURATION_RE.match(value)
        if m is None:
            raise ValueError(
                f"expected a duration such as 30s, 45min, 8h or 7d (units: ms, s, min, h, d, w), "
                f"got {value!r}"
            )
        number, unit = m.groups()
        if unit is None:
            return float(number)
        if unit not in _UNITS:
            raise ValueError(
                f"unknown time unit {unit!r} in {value!r}; use one of ms, s, min, h, d, w"
            )
        return float(number) * _UNITS[unit]
    return value


Seconds = Annotated[float, BeforeValidator(parse_duration)]
PosSeconds = Annotated[float, BeforeValidator(parse_duration), Field(gt=0)]
NonNegSeconds = Annotated[float, BeforeValidator(parse_duration), Field(ge=0)]


# --------------------------------------------------------------------------- distributions

DistKind = Literal[
    "fixed", "exponential", "normal", "lognormal", "gamma", "weibull", "uniform", "triangular"
]
_DIST_PARAMS: dict[str, tuple[set[str], set[str]]] = {
    # kind: (required, optional)
    "fixed": ({"value"}, set()),
    "exponential": ({"mean"}, set()),
    "normal": ({"mean", "sd"}, {"min"}),
    "lognormal": ({"mean", "cv"}, set()),
    "gamma": ({"mean", "cv"}, set()),
    "weibull": ({"shape", "scale"}, set()),
    "uniform": ({"low", "high"}, set()),
    "triangular": ({"low", "mode", "high"}, set()),
}


def _coerce_dist(value: Any) -> Any:
    if isinstance(value, int | float | str) and not isinstance(value, bool):
        return {"dist": "fixed", "value": parse_duration(value)}
    if isinstance(value, dict):
        return {k: (parse_duration(v) if k != "dist" else v) for k, v in value.items()}
    return value


class Dist(Model):
    """A random variable. A bare number or duration means a fixed value.

    Kinds and parameters: fixed(value), exponential(mean), normal(mean, sd[, min]),
    lognormal(mean, cv), gamma(mean, cv), weibull(shape, scale), uniform(low, high),
    triangular(low, mode, high). Values are seconds for times, plain numbers otherwise.
    """

    dist: DistKind
    value: float | None = None
    mean: float | None = None
    sd: float | None = Field(default=None, ge=0)
    cv: float | None = Field(default=None, ge=0)
    min: float | None = None
    shape: float | None = Field(default=None, gt=0)
    scale: float | None = Field(default=None, gt=0)
    low: float | None = None
    high: float | None = None
    mode: float | None = None

    @model_validator(mode="before")
    @classmethod
    def _coerce(cls, value: Any) -> Any:
        return _coerce_dist(value)

    @model_validator(mode="after")
    def _check_params(self) -> Self:
        required, optional = _DIST_PARAMS[self.dist]
        given = {k for k in _DIST_PARAMS_ALL if getattr(self, k) is not None}
        missing = required - given
        extra = given - required - optional
        if missing:
            raise ValueError(
                f"a {self.dist} distribution needs {', '.join(sorted(required))}; "
                f"missing {', '.join(sorted(missing))}"
            )
        if extra:
            raise ValueError(
                f"a {self.dist} distribution takes {', '.join(sorted(required | optional))}; "
                f"{', '.join(sorted(extra))} does not apply"
            )
        if self.dist in ("exponential", "lognormal", "gamma") and (self.mean or 0) <= 0:
            raise ValueError(f"mean of a {self.dist} distribution must be > 0, got {self.mean}")
        if self.dist == "uniform" and not (
            self.low is not None and self.high is not None and self.low <= self.high
        ):
            raise ValueError(f"uniform needs low <= high, got low={self.low}, high={self.high}")
        if self.dist == "triangular" and not (
            self.low is not None
            and self.mode is not None
            and self.high is not None
            and self.low <= self.mode <= self.high
            and self.low < self.high
        ):
            raise ValueError(
                f"triangular needs low <= mode <= high and low < high, "
                f"got {self.low}, {self.mode}, {self.high}"
            )
        return self

    @property
    def expected(self) -> float:
        """The distribution's mean (for a normal with ``min``, the untruncated mean)."""
        if self.dist == "fixed":
            return float(self.value or 0.0)
        if self.dist in ("exponential", "normal", "lognormal", "gamma"):
            return float(self.mean or 0.0)
        if self.dist == "weibull":
            assert self.shape is not None and self.scale is not None
            return self.scale * math.gamma(1 + 1 / self.shape)
        if self.dist == "uniform":
            assert self.low is not None and self.high is not None
            return (self.low + self.high) / 2
        assert self.low is not None and self.mode is not None and self.high is not None
        return (self.low + self.mode + self.high) / 3

    def lower_bound(self) -> float:
        """The smallest value the distribution can produce (``-inf`` if unbounded)."""
        if self.dist == "fixed":
            return float(self.value or 0.0)
        if self.dist in ("exponential", "lognormal", "gamma", "weibull"):
            return 0.0
        if self.dist == "normal":
            return self.min if self.min is not None else -math.inf
        return float(self.low or 0.0)


_DIST_PARAMS_ALL = ("value", "mean", "sd", "cv", "min", "shape", "scale", "low", "high", "mode")

DistField = Annotated[Dist, BeforeValidator(_coerce_dist)]


def nonneg_dist(d: Dist, what: str) -> Dist:
    """``d`` itself; ValueError if it can produce a negative value."""
    if d.lower_bound() < 0:
        raise ValueError(
            f"{what} must not be negative; give a {d.dist} distribution that stays >= 0 "
            f"(for normal, set min: 0)"
        )
    return d
