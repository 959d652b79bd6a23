"""Gateway settings: typed (pydantic), from a ``gateway.yaml`` or derived from a scenario.

A settings file fails with every problem as ``file:line: key: what is wrong``, the same
:class:`~iiotbed.errors.ScenarioError` the scenario loader raises. The format is in
``docs/gateway.md``; ``examples/gateway.yaml`` is a complete example.
"""

from __future__ import annotations

import datetime as dt
import os
import re
import uuid
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from iiotbed._yaml import Located, load_located
from iiotbed.errors import ScenarioError, UnsError
from iiotbed.protocols.uns import stream_topic
from iiotbed.scenario import Scenario, validation_issues

__all__ = [
    "GatewaySettings",
    "JsonMqttSettings",
    "MappingSettings",
    "OpcUaSettings",
    "OutputSettings",
    "SparkplugSettings",
    "Vda5050Settings",
    "load_settings",
    "new_run_id",
    "settings_from_scenario",
]

Seconds = Annotated[float, Field(gt=0)]
_ID = r"^[A-Za-z0-9][A-Za-z0-9_.-]*$"


def new_run_id(name: str, now: dt.datetime | None = None, suffix: str | None = None) -> str:
    """A fresh run id: ``<slug of name>-<UTC time>-<6 random hex>`` (or ``suffix``).

    Sample ids hash the run id, so two runs never share an id, even on one seed.
    """
    now = now or dt.datetime.now(dt.UTC)
    slug = re.sub(r"[^A-Za-z0-9]+", "-", name).strip("-").lower()[:40] or "run"
    return f"{slug}-{now:%Y%m%dT%H%M%SZ}-{suffix or uuid.uuid4().hex[:6]}"


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Backoff(_Model):
    """Reconnect waits: ``initial`` doubling up to ``max`` seconds, each drawn in [d/2, d]."""

    initial: Seconds = 0.5
    max: Seconds = 10.0


def _broker(v: str | None) -> str | None:
    # mqtts://user:password@host:8883?ca=FILE too (iiotbed.mqtt parses it; never echo a password)
    if v is not None and not re.match(r"^mqtts?://([^/@\s]+@)?[^/:@?\s]+(:\d{1,5})?/?(\?\S*)?$", v):
        shown = re.sub(r"(://[^:/@]*:)[^@/]*@", r"\1***@", v)
        raise ValueError(f"broker URL {shown!r} must look like mqtt://host:port or mqtts://user:password@host:8883")
    return v


def _ingest_default() -> str:
    return os.environ.get("IIOTBED_GATEWAY_INGEST", "auto")


class OutputSettings(_Model):
    """Where the UNS goes, and the durable buffer in front of it.

    ``ingest``: wait for the platform's ingest before forwarding (``require``), once one
    was online (``auto``), or never (``off``); default from ``IIOTBED_GATEWAY_INGEST``,
    else ``auto``. ``resend_window``: seconds of confirmed batches sent again after a lost
    broker connection (0: none). See docs/gateway.md, "Hand-over to the platform".
    """

    broker: str
    root: str = Field("uns", pattern=r"^[^_]")
    buffer: Path = Path(".iiotbed/gateway.db")
    batch_size: int = Field(1000, gt=0, le=100_000)
    max_rows: int = Field(1_000_000, gt=0)
    current_values: bool = True
    flush_interval: Seconds = 0.02  # with publishing 0.05 s: p99 device -> stored < 100 ms
    backoff: Backoff = Backoff(initial=0.2, max=10.0)
    ingest: Literal["auto", "require", "off"] = Field(
        default_factory=_ingest_default, validate_default=True
    )
    resend_window: float = Field(2.0, ge=0, le=60)

    _b = field_validator("broker")(_broker)

    @field_validator("root")
    @classmethod
    def _root(cls, v: str) -> str:
        return _levels(v, "root")

    @field_validator("ingest", mode="before")
    @classmethod
    def _ingest(cls, v: Any) -> Any:
        if v not in ("auto", "require", "off"):
            raise ValueError(
                f"ingest must be auto, require or off (its default comes from "
                f"IIOTBED_GATEWAY_INGEST, else auto); got {v!r}"
            )
        return v


def _levels(v: str, what: str) -> str:
    try:
        stream_topic(v, "r") if what == "line" else stream_topic("l", v)
    except UnsError as exc:
        raise ValueError(exc.reason) from None
    return v


class OpcUaSettings(_Model):
    """OPC UA servers to browse (``Objects/Machines``) and subscribe to."""

    endpoints: list[Annotated[str, Field(pattern=r"^opc\.tcp://")]] = Field(min_length=1)
    sampling_interval: float = Field(0.0, ge=0, description="s; 0 = as fast as the server can")
    publishing_interval: Seconds = 0.05
    queue_size: int = Field(100, gt=0)
    events: bool = True
    user: str | None = None
    password: str | None = None
    # with both: Basic256Sha256 SignAndEncrypt sessions (the servers' secure profile)
    certificate: Path | None = Field(None, description="client certificate, DER or PEM")
    private_key: Path | None = Field(None, description="its private key, PEM")
    assets: dict[str, str] = Field(default_factory=dict, description="browse name -> asset path")
    backoff: Backoff = Backoff()

    @model_validator(mode="after")
    def _pair(self) -> OpcUaSettings:
        if (self.certificate is None) != (self.private_key is None):
            raise ValueError("give certificate and private_key together (or neither)")
        for path in (self.certificate, self.private_key):
            if path is not None and not path.is_file():
                raise ValueError(f"{path}: no such file (certificate and private_key are files)")
        return self


class SparkplugSettings(_Model):
    """A Sparkplug B host application on a broker."""

    broker: str | None = None  # default: the output broker
    host_id: str = Field("iiotbed-gateway", pattern=_ID)
    groups: list[Annotated[str, Field(pattern=_ID)]] = Field(default_factory=list)
    # only these edge nodes (a plant's line: another line's devices have the same names)
    edge_nodes: list[Annotated[str, Field(pattern=_ID)]] = Field(default_factory=list)
    assets: dict[str, str] = Field(default_factory=dict)
    rebirth_interval: Seconds = 2.0
    backoff: Backoff = Backoff()

    _b = field_validator("broker")(_broker)


class Vda5050Settings(_Model):
    """An AMR fleet speaking VDA 5050."""

    broker: str | None = None
    manufacturer: str = Field("+", pattern=r"^(\+|[^/+#]+)$")
    interface_name: str = Field("uagv", pattern=_ID)
    major_version: str = Field("v2", pattern=_ID)
    prefix: str | None = None
    assets: dict[str, str] = Field(default_factory=dict, description="serial -> asset path")
    backoff: Backoff = Backoff()

    _b = field_validator("broker")(_broker)


class MappingSettings(_Model):
    """One JSON-over-MQTT rule (see :class:`~iiotbed.gateway.collectors.JsonMapping`)."""

    topic: str = Field(min_length=1)
    asset: str = Field(min_length=1)
    tag: str = Field(min_length=1)
    value: str = ""
    unit: str | None = None
    timestamp: str | None = None
    quality: str | None = None


class JsonMqttSettings(_Model):
    """Generic JSON messages mapped to samples."""

    broker: str | None = None
    qos: Literal[0, 1] = 1
    mappings: list[MappingSettings] = Field(min_length=1)
    backoff: Backoff = Backoff()

    _b = field_validator("broker")(_broker)


class GatewaySettings(_Model):
    """Everything one gateway needs."""

    id: str = Field("gw-1", pattern=_ID)
    # absent: a fresh one per start (a repeated run must not look like a resend of the last)
    run_id: str = Field(
        default_factory=lambda data: new_run_id(str(data.get("id", "gw"))),
        min_length=1,
        max_length=200,
    )
    epoch: dt.datetime
    line: str = Field(min_length=1, description="asset path of the line: the stream topic")
    metrics_interval: Seconds = 5.0
    output: OutputSettings
    opcua: OpcUaSettings | None = None
    sparkplug: SparkplugSettings | None = None
    vda5050: Vda5050Settings | None = None
    json_mqtt: JsonMqttSettings | None = None

    @field_validator("epoch")
    @classmethod
    def _aware(cls, v: dt.datetime) -> dt.datetime:
        if v.tzinfo is None:
            raise ValueError(f"epoch must carry a UTC offset, e.g. 2026-01-05T00:00:00+08:00; got {v}")
        return v

    @field_validator("line")
    @classmethod
    def _line(cls, v: str) -> str:
        return _levels(v, "line")

    def collector_names(self) -> list[str]:
        return [n for n in ("opcua", "sparkplug", "vda5050", "json_mqtt") if getattr(self, n)]


def _check_mappings(doc: Located, settings: GatewaySettings, path: Path) -> None:
    from iiotbed.errors import ScenarioIssue
    from iiotbed.gateway.collectors.json_mqtt import JsonMapping

    if settings.json_mqtt is None:
        return
    issues = []
    for i, m in enumerate(settings.json_mqtt.mappings):
        try:
            JsonMapping(**m.model_dump())
        except Exception as exc:  # JsonMapping raises ValueError or UnsError (unit)
            loc: tuple[str | int, ...] = ("json_mqtt", "mappings", i)
            origin = doc.origin_of(loc)
            ipath, line = origin if origin is not None else (path, None)
            issues.append(ScenarioIssue(ipath, line, f"json_mqtt.mappings[{i}]", str(exc)))
    if issues:
        raise ScenarioError(issues)


def load_settings(path: str | Path) -> GatewaySettings:
    """Read and validate a ``gateway.yaml``; raises :class:`ScenarioError` with file:line."""
    path = Path(path)
    doc = load_located(path)
    if not isinstance(doc.data, dict):
        raise ScenarioError.single(path, 1, "a gateway file must be a mapping of settings")
    try:
        settings = GatewaySettings.model_validate(doc.data)
    except ValidationError as exc:
        issues = validation_issues(doc, exc, path)
        for issue in issues:
            issue.message = issue.message.replace(
                "the scenario format in the README", "the gateway format in docs/gateway.md"
            )
        raise ScenarioError(issues) from None
    _check_mappings(doc, settings, path)
    return settings


def settings_from_scenario(
    scenario: Scenario,
    broker: str,
    *,
    opcua_port: int = 4840,
    opcua_layout: Literal["line", "machine"] = "line",
    host: str = "127.0.0.1",
    replication: int = 0,
    root: str = "uns",
    buffer: Path = Path(".iiotbed/gateway.db"),
    sparkplug_group: str | None = None,
    vda_manufacturer: str | None = None,
    **changes: Any,
) -> GatewaySettings:
    """Settings that collect what ``iiotbed devices`` serves for ``scenario``.

    Without ``run_id=`` in ``changes`` the run id is a fresh :func:`new_run_id`.

    Endpoints, Sparkplug ids (group ``<enterprise>-<site>``, edge node ``<area>-<line>``),
    VDA 5050 manufacturer and every asset path come from the scenario, as the live factory
    derives them.
    """
    plant = scenario.plant
    stations = scenario.station_paths()
    if opcua_layout == "machine":
        endpoints = [f"opc.tcp://{host}:{opcua_port + i}/iiotbed/" for i in range(len(stations))]
    else:
        endpoints = [f"opc.tcp://{host}:{opcua_port}/iiotbed/"]
    line = scenario.line_path
    group = sparkplug_group or f"{plant.enterprise}-{plant.site}"
    edge = f"{plant.area}-{plant.line}"
    spb_assets = {name: path for _, name, path in stations}
    spb_assets.update({"line": line, "ar-headsets": f"{line}/technicians", edge: line})
    supply = scenario.supply
    fleet = supply.amr if supply is not None and supply.mode == "amr" else None
    vda = None
    if fleet is not None:
        amrs = {f"amr-{i + 1:02d}": f"{line}/amr-{i + 1:02d}" for i in range(fleet.count)}
        vda = Vda5050Settings(
            manufacturer=vda_manufacturer or fleet.manufacturer, assets=amrs, prefix=line
        )
    data: dict[str, Any] = {
        "id": f"gw-{plant.line}",
        "run_id": new_run_id(f"{scenario.name}-r{replication}"),
        "epoch": plant.epoch,
        "line": line,
        "output": OutputSettings(broker=broker, root=root, buffer=buffer),
        "opcua": OpcUaSettings(endpoints=endpoints, assets={n: p for _, n, p in stations}),
        "sparkplug": SparkplugSettings(groups=[group], assets=spb_assets),
        "vda5050": vda,
    }
    data.update(changes)
    return GatewaySettings.model_validate(data)
