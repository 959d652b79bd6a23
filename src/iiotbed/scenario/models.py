"""The typed models of a scenario: plant, products, line, supply, people, network, run."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any, Literal, Self
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import Field, field_validator, model_validator

from iiotbed.scenario._base import Model, Name, Probability
from iiotbed.scenario.calendar import Calendar
from iiotbed.scenario.durations import (
    Dist,
    DistField,
    NonNegSeconds,
    PosSeconds,
    nonneg_dist,
)
from iiotbed.telemetry import asset_path

__all__ = [
    "AmrFleet",
    "Battery",
    "Degradation",
    "Failures",
    "Inspection",
    "Kits",
    "Labour",
    "LabourRole",
    "Line",
    "Link",
    "LiveEndpoint",
    "Maintenance",
    "ManualSupply",
    "Network",
    "Outages",
    "Plant",
    "Power",
    "PredictiveMaintenance",
    "Product",
    "RunSettings",
    "Scenario",
    "Source",
    "Stage",
    "Supply",
    "Technicians",
]


class Plant(Model):
    """Identity of the plant and the line (ISA-95 levels), the epoch and the time zone."""

    enterprise: Name
    site: Name
    area: Name
    line: Name
    epoch: dt.datetime = Field(description="sim time 0, ISO 8601 with a UTC offset")
    timezone: str = "UTC"
    id_prefix: str = Field(
        default="88.999.1",
        pattern=r"^[0-9]+(\.[0-9]+)*$",
        description="identification prefix (Industrial Internet identifier style)",
    )
    manufacturer: str = "iiotbed"

    @field_validator("epoch")
    @classmethod
    def _aware(cls, v: dt.datetime) -> dt.datetime:
        if v.tzinfo is None:
            raise ValueError(
                f"epoch must carry a UTC offset, e.g. 2026-01-05T00:00:00+08:00; got {v.isoformat()}"
            )
        return v

    @field_validator("timezone")
    @classmethod
    def _tz(cls, v: str) -> str:
        try:
            ZoneInfo(v)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(
                f"unknown time zone {v!r}; use an IANA name such as Asia/Shanghai"
            ) from None
        return v

    @property
    def line_path(self) -> str:
        return asset_path(self.enterprise, self.site, self.area, self.line)


# --------------------------------------------------------------------------- products and line


class Product(Model):
    """A product with its ideal cycle time at every stage (ISO 22400 PRU)."""

    name: Name
    mix: float = Field(default=1.0, gt=0, description="relative share of starts")
    ideal_cycle_time: dict[str, PosSeconds] = Field(min_length=1)


class Failures(Model):
    """Breakdowns: time to failure counted in operating time, and hands-on repair time."""

    ttf: DistField = Field(description="operating time between failures (MTBF)")
    repair: DistField = Field(description="hands-on repair time (before technician factors)")

    @field_validator("ttf", "repair")
    @classmethod
    def _nonneg(cls, v: Dist) -> Dist:
        if v.expected <= 0:
            raise ValueError("must have a mean > 0")
        return nonneg_dist(v, "a failure or repair time")


class Degradation(Model):
    """A condition signal rising from ``baseline`` (new) to ``at_failure`` before a breakdown."""

    signal: Name = "Vibration"
    unit: str = Field(default="MMS", description="UNECE Rec. 20 code (MMS = mm/s)")
    baseline: float = 1.0
    at_failure: float = 7.0

    @model_validator(mode="after")
    def _rises(self) -> Self:
        if self.at_failure <= self.baseline:
            raise ValueError(
                f"at_failure must exceed baseline, got baseline={self.baseline}, "
                f"at_failure={self.at_failure}"
            )
        return self


class Power(Model):
    """Electrical power draw by state, kW."""

    executing: float = Field(default=0.0, ge=0)
    idle: float = Field(default=0.0, ge=0)
    down: float = Field(default=0.0, ge=0)
    off: float = Field(default=0.0, ge=0)


class Kits(Model):
    """Line-side component stock of a station, one kit consumed per unit."""

    capacity: int = Field(gt=0)
    reorder_point: int = Field(ge=0)
    initial: int | None = Field(default=None, ge=0)

    @model_validator(mode="after")
    def _levels(self) -> Self:
        if self.reorder_point >= self.capacity:
            raise ValueError(
                f"reorder_point must be below capacity, got reorder_point={self.reorder_point}, "
                f"capacity={self.capacity}"
            )
        if self.initial is not None and self.initial > self.capacity:
            raise ValueError(f"initial ({self.initial}) must not exceed capacity ({self.capacity})")
        return self


class Inspection(Model):
    """How an inspection stage finds defects: a person, or MEC machine vision over a link."""

    method: Literal["manual", "vision"]
    time: DistField = Field(description="time per unit at the station (capture or look)")
    detection_rate: Probability
    false_reject_rate: Probability = 0.0
    rework_fraction: Probability = Field(
        default=0.0, description="detected defects reworked, not scrapped"
    )
    rework_time: NonNegSeconds = 0.0
    link: str | None = Field(default=None, description="network link to the MEC server (vision)")
    inference_time: DistField = Field(default_factory=lambda: Dist(dist="fixed", value=0.0))
    inspectors_per_station: int = Field(default=0, ge=0, description="people per station per shift")

    @model_validator(mode="after")
    def _link(self) -> Self:
        nonneg_dist(self.time, "inspection time")
        nonneg_dist(self.inference_time, "inference time")
        if self.method == "vision" and self.link is None:
            raise ValueError("vision inspection needs 'link': the network link to the MEC server")
        return self


class Stage(Model):
    """A cell of the line: one or more identical stations working in parallel."""

    name: Name
    kind: Literal["process", "inspection"] = "process"
    stations: int | list[Name] = Field(default=1, description="a count, or the station names")
    station_prefix: Name | None = None
    manufacturer: str | None = None
    model: str | None = None
    cycle_time_factor: DistField = Field(
        default_factory=lambda: Dist(dist="fixed", value=1.0),
        description="actual/ideal cycle time; mean > 1 is a speed loss",
    )
    failures: Failures | None = None
    degradation: Degradation | None = None
    defect_probability: Probability = 0.0
    power: Power = Field(default_factory=Power)
    buffer_capacity: int = Field(default=10, ge=1, description="input buffer, units")
    kits: Kits | None = None
    position: tuple[float, float] = (0.0, 0.0)
    inspection: Inspection | None = None
    operators_per_station: int = Field(default=1, ge=0, description="people per station per shift")

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        if isinstance(self.stations, int) and self.stations < 1:
            raise ValueError(f"stations must be >= 1, got {self.stations}")
        if isinstance(self.stations, list):
            if not self.stations:
                raise ValueError("stations must name at least one station")
            if len(set(self.stations)) != len(self.stations):
                raise ValueError(f"station names must be unique, got {self.stations}")
        if self.kind == "inspection" and self.inspection is None:
            raise ValueError(
                "an inspection stage needs an 'inspection' block (method, time, detection_rate)"
            )
        if self.kind == "process" and self.inspection is not None:
            raise ValueError("'inspection' applies to stages with kind: inspection")
        if self.cycle_time_factor.expected <= 0:
            raise ValueError("cycle_time_factor must have a mean > 0")
        nonneg_dist(self.cycle_time_factor, "cycle_time_factor")
        return self

    @property
    def station_names(self) -> list[str]:
        if isinstance(self.stations, list):
            return list(self.stations)
        prefix = self.station_prefix or self.name
        return [f"{prefix}-{i + 1:02d}" for i in range(self.stations)]


class Source(Model):
    """Where units enter the line: saturated (always a unit waiting) or random arrivals."""

    interarrival: DistField | None = Field(default=None, description="omit for a saturated line")


class Line(Model):
    source: Source = Field(default_factory=Source)
    stages: list[Stage] = Field(min_length=1)

    @model_validator(mode="after")
    def _unique(self) -> Self:
        names = [s.name for s in self.stages]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ValueError(f"stage names must be unique, repeated: {', '.join(dup)}")
        stations = [n for s in self.stages for n in s.station_names]
        dup = sorted({n for n in stations if stations.count(n) > 1})
        if dup:
            raise ValueError(
                f"station names must be unique across the line, repeated: {', '.join(dup)}"
            )
        return self


# --------------------------------------------------------------------------- logistics, people, network


class ManualSupply(Model):
    """Material handlers pushing carts from the warehouse to line-side stock."""

    handlers: int = Field(gt=0)
    speed: float = Field(gt=0, description="m/s walking with a cart")
    capacity: int = Field(gt=0, description="kits per trip")
    load_time: NonNegSeconds = 0.0
    unload_time: NonNegSeconds = 0.0


class Battery(Model):
    """AMR battery in percent of capacity."""

    consumption_per_km: float = Field(gt=0, description="% per km driven")
    idle_drain_per_h: float = Field(default=0.0, ge=0, description="% per hour not charging")
    charge_threshold: float = Field(gt=0, lt=100, description="% at which the AMR goes to charge")
    charge_to: float = Field(default=95.0, gt=0, le=100)
    charge_rate_per_h: float = Field(gt=0, description="% per hour on a charger")
    chargers: int = Field(default=1, gt=0)
    charger_position: tuple[float, float] = (0.0, 0.0)
    charger_power: float = Field(default=0.5, ge=0, description="kW drawn while charging")

    @model_validator(mode="after")
    def _levels(self) -> Self:
        if self.charge_to <= self.charge_threshold:
            raise ValueError(
                f"charge_to ({self.charge_to}) must exceed charge_threshold ({self.charge_threshold})"
            )
        return self


class AmrFleet(Model):
    """Autonomous mobile robots delivering kits, dispatched over a network link."""

    count: int = Field(gt=0)
    speed: float = Field(gt=0, description="m/s")
    capacity: int = Field(gt=0, description="kits per trip")
    load_time: NonNegSeconds = 0.0
    unload_time: NonNegSeconds = 0.0
    battery: Battery
    link: str | None = Field(default=None, description="network link carrying dispatch orders")
    manufacturer: str = "ForwardX"
    model: str = "Max 300 Lift"
    supervisors: int = Field(default=0, ge=0, description="people per shift overseeing the fleet")
    dispatch: Literal["fifo", "nearest"] = "fifo"


class Supply(Model):
    """Material supply from the warehouse to line-side kits: manual carts or an AMR fleet."""

    mode: Literal["manual", "amr"]
    warehouse_position: tuple[float, float] = (0.0, 0.0)
    manual: ManualSupply | None = None
    amr: AmrFleet | None = None

    @model_validator(mode="after")
    def _block(self) -> Self:
        if self.mode == "manual" and self.manual is None:
            raise ValueError("mode: manual needs a 'manual' block (handlers, speed, capacity)")
        if self.mode == "amr" and self.amr is None:
            raise ValueError("mode: amr needs an 'amr' block (count, speed, capacity, battery)")
        return self


class Technicians(Model):
    """The maintenance crew; every repair takes one technician."""

    count: int = Field(gt=0)
    response_time: DistField = Field(default_factory=lambda: Dist(dist="fixed", value=0.0))
    repair_time_factor: float = Field(
        default=1.0, gt=0, description="x repair time, e.g. AR-guided < 1"
    )
    ar_guided: bool = False

    @field_validator("response_time")
    @classmethod
    def _nonneg(cls, v: Dist) -> Dist:
        return nonneg_dist(v, "response_time")


class PredictiveMaintenance(Model):
    """Condition monitoring: catch a coming failure ``lead_time`` ahead and service it briefly."""

    enabled: bool = False
    detection_rate: Probability = 0.0
    lead_time: NonNegSeconds = 0.0
    duration: NonNegSeconds = 0.0


class Maintenance(Model):
    predictive: PredictiveMaintenance = Field(default_factory=PredictiveMaintenance)


class Outages(Model):
    """Link blackouts: time between outages and outage duration."""

    interval: DistField
    duration: DistField

    @field_validator("interval", "duration")
    @classmethod
    def _pos(cls, v: Dist) -> Dist:
        if v.expected <= 0:
            raise ValueError("must have a mean > 0")
        return nonneg_dist(v, "an outage time")


class Link(Model):
    """A network link: one-way latency, loss (each loss costs a retransmission) and outages."""

    kind: Literal["5g-urllc", "5g-embb", "wifi", "wired"]
    latency: DistField
    loss: Probability = 0.0
    retransmit_timeout: NonNegSeconds = 0.2
    outages: Outages | None = None

    @field_validator("latency")
    @classmethod
    def _nonneg(cls, v: Dist) -> Dist:
        return nonneg_dist(v, "latency")

    @field_validator("loss")
    @classmethod
    def _not_one(cls, v: float) -> float:
        if v >= 1:
            raise ValueError("loss must be below 1 (a link that loses everything never delivers)")
        return v


LiveEndpoint = Literal["opcua", "sparkplug", "vda5050"]


class Network(Model):
    links: dict[Name, Link] = Field(default_factory=dict)
    endpoints: dict[LiveEndpoint, Name] = Field(
        default_factory=dict,
        description="link shaping a live endpoint's traffic (vda5050 defaults to supply.amr.link)",
    )


LabourRole = Literal["operators", "inspectors", "handlers", "technicians", "amr_supervisors"]
_LABOUR_ROLES: tuple[LabourRole, ...] = (
    "operators",
    "inspectors",
    "handlers",
    "technicians",
    "amr_supervisors",
)


class Labour(Model):
    """Who counts in labour hours (attendance over every shift, breaks included).

    Roles: operators (per station), inspectors (per manual inspection station), handlers
    (manual supply), technicians, amr_supervisors, plus ``other`` named roles per shift.
    """

    counted: list[LabourRole] = Field(default_factory=lambda: list(_LABOUR_ROLES))
    other: dict[Name, int] = Field(
        default_factory=dict, description="extra people per shift by role"
    )


class RunSettings(Model):
    duration: PosSeconds = 7 * 86400.0
    warmup: NonNegSeconds = 0.0
    seed: int = Field(default=1, ge=0)
    replications: int = Field(default=10, ge=1)
    lines: int = Field(
        default=1,
        ge=1,
        le=1000,
        description="copies of the line (a plant): copy i is named <line>-i, seeded seed + i - 1",
    )

    @model_validator(mode="after")
    def _warm(self) -> Self:
        if self.warmup >= self.duration:
            raise ValueError(
                f"warmup ({self.warmup:g} s) must be shorter than duration ({self.duration:g} s)"
            )
        return self


class Scenario(Model):
    """One plant line and everything that drives it. See the module docstring."""

    name: str
    description: str = ""
    plant: Plant
    run: RunSettings = Field(default_factory=RunSettings)
    calendar: Calendar
    products: list[Product] = Field(min_length=1)
    line: Line
    supply: Supply | None = None
    technicians: Technicians
    maintenance: Maintenance = Field(default_factory=Maintenance)
    network: Network = Field(default_factory=Network)
    labour: Labour = Field(default_factory=Labour)
    # set by load_scenario, not by the file
    source_path: Path | None = Field(default=None, exclude=True)
    base_path: Path | None = Field(default=None, exclude=True)
    # set by iiotbed.scenario.plant.line_copy: which copy of a plant's line this is (1-based)
    line_index: int | None = Field(default=None, exclude=True)

    @model_validator(mode="after")
    def _references(self) -> Self:
        stages = {s.name for s in self.line.stages}
        for p in self.products:
            unknown = sorted(set(p.ideal_cycle_time) - stages)
            missing = sorted(stages - set(p.ideal_cycle_time))
            if unknown:
                raise ValueError(
                    f"product {p.name!r} ideal_cycle_time names unknown stage(s) {', '.join(unknown)}; "
                    f"stages are {', '.join(sorted(stages))}"
                )
            if missing:
                raise ValueError(
                    f"product {p.name!r} ideal_cycle_time lacks stage(s) {', '.join(missing)}"
                )
        names = [p.name for p in self.products]
        if len(set(names)) != len(names):
            raise ValueError(f"product names must be unique, got {names}")
        links = set(self.network.links)
        refs: list[tuple[str, str | None]] = [
            (f"stage {s.name!r} inspection.link", s.inspection.link if s.inspection else None)
            for s in self.line.stages
        ]
        if self.supply is not None and self.supply.amr is not None and self.supply.mode == "amr":
            refs.append(("supply.amr.link", self.supply.amr.link))
        refs += [(f"network.endpoints.{k}", v) for k, v in self.network.endpoints.items()]
        for what, ref in refs:
            if ref is not None and ref not in links:
                known = ", ".join(sorted(links)) or "none defined"
                raise ValueError(
                    f"{what} names link {ref!r}, which network.links lacks (known: {known})"
                )
        if any(s.kits is not None for s in self.line.stages) and self.supply is None:
            raise ValueError("stages with kits need a 'supply' section (manual or amr)")
        if self.run.lines > 1:
            last = f"{self.plant.line}-{self.run.lines}"  # the longest copy name
            if len(last) > 64:
                raise ValueError(
                    f"run.lines: {self.run.lines} copies of line {self.plant.line!r} would be "
                    f"named up to {last!r}, longer than 64 characters; shorten plant.line"
                )
        if self.maintenance.predictive.enabled and not any(
            s.failures is not None and s.degradation is not None for s in self.line.stages
        ):
            raise ValueError(
                "maintenance.predictive is enabled but no stage has both failures and degradation"
            )
        return self

    @property
    def line_path(self) -> str:
        return self.plant.line_path

    def stage_path(self, stage: Stage) -> str:
        return f"{self.line_path}/{stage.name}"

    def station_paths(self) -> list[tuple[Stage, str, str]]:
        """(stage, station name, asset path) for every station, in line order."""
        return [
            (s, n, f"{self.line_path}/{s.name}/{n}")
            for s in self.line.stages
            for n in s.station_names
        ]

    def with_run(self, **changes: Any) -> Scenario:
        """A copy with run settings changed (duration, seed, replications, warmup)."""
        run = RunSettings.model_validate({**self.run.model_dump(), **changes})
        return self.model_copy(update={"run": run})
