"""Machines as OPC UA servers (asyncua), shaped after OPC 40001-1 Machinery."""

from iiotbed.devices.opcua._security import Security, SecurityProfile, ensure_certificate
from iiotbed.devices.opcua.server import MachineServer, MachineServers, build_servers
from iiotbed.devices.opcua.spec import (
    MachineSpec,
    ProcessValue,
    StationControl,
    machine_specs,
    namespace_uri,
)

__all__ = [
    "MachineServer",
    "MachineServers",
    "MachineSpec",
    "ProcessValue",
    "Security",
    "SecurityProfile",
    "StationControl",
    "build_servers",
    "ensure_certificate",
    "machine_specs",
    "namespace_uri",
]
