"""A machine's PackML face: an instance of ``PackMLBaseObjectType`` (OPC 30050).

PackML nests its state machines: ``BaseStateMachine`` (Aborting, Aborted, Cleared) holds
``MachineState`` (Clearing, Stopped, Stopping, Running) while Cleared, which holds
``ExecuteState`` (Idle, Starting, Execute, Holding, ... Complete) while Running. One
PackTags state number (what the simulator emits, the same numbers as the nodeset's
``StateNumber`` properties) therefore sets the ``CurrentState`` of one, two or three levels;
the levels below the active one are null with status ``BadStateNotActive`` (OPC 10000-16). ``Status/UnitModeCurrent`` follows the Machinery
operation mode. The instance is made by asyncua from the type (mandatory members only);
its four mandatory methods (SetUnitMode, SetMachSpeed, SetProduct, SetParameter) answer
``BadNotSupported``: the machines take commands through Start/Stop/... and SpeedSetpoint.

``Status`` also shows the speeds and the flow (OPC 30050 ``PackMLStatusObjectType``):
``MachSpeed`` is the setpoint and ``CurMachSpeed`` the rate of the last unit, both in
units per minute, ``CurMachSpeed`` 0 outside Execute; ``EquipmentStarved`` /
``EquipmentBlocked`` are derived by the live layer from the buffers around the station.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Final

from asyncua import Server, ua
from asyncua.common.instantiate_util import instantiate

from iiotbed.devices.opcua._nodesets import Companions
from iiotbed.telemetry import OperationMode, PackMLState

__all__ = ["PACKML", "STATUS", "PackMLNodes", "add_packml"]

PACKML: Final = "PackML"  # browse name (iiotbed namespace) of the instance under a machine
_LEVELS: Final = ("BaseStateMachine", "MachineState", "ExecuteState")
_CLEARED, _RUNNING = "Cleared", "Running"
_METHODS: Final = ("SetUnitMode", "SetMachSpeed", "SetProduct", "SetParameter")
#: ProductionMaintenanceModeEnum: 0 Invalid, 1 Produce, 2 Maintenance, 3 Manual
_UNIT_MODE: Final = {
    OperationMode.NONE: 0,
    OperationMode.Processing: 1,
    OperationMode.Maintenance: 2,
    OperationMode.Setup: 3,
}
#: the Status variables fed beside the state (OPC 30050 browse names, PackML namespace)
STATUS: Final = ("MachSpeed", "CurMachSpeed", "EquipmentStarved", "EquipmentBlocked")
_ZERO: Final = ua.Variant(0.0, ua.VariantType.Float)
#: (node, value) pairs; a None value: the node is null with status BadStateNotActive
Writes = tuple[tuple[ua.NodeId, ua.Variant | None], ...]


@dataclass(slots=True)
class PackMLNodes:
    """The instance's node, its methods, and the writes each state or mode number means."""

    nodeid: ua.NodeId
    methods: tuple[ua.NodeId, ...]
    #: PackTags state number -> (node, value) for every level's CurrentState and Id
    state_writes: dict[int, Writes] = field(default_factory=dict)
    #: operation mode number -> the UnitModeCurrent write
    mode_writes: dict[int, Writes] = field(default_factory=dict)
    #: Status variable (``STATUS`` names) -> its node
    status: dict[str, ua.NodeId] = field(default_factory=dict)


def _levels_of(state: PackMLState, co: Companions) -> list[str | None]:
    """The state name each level shows for a PackTags state (None: that level is inactive)."""
    base, machine, _execute = co.packml_states
    if state.name in base:
        return [state.name, None, None]
    if state.name in machine:
        return [_CLEARED, state.name, None]
    return [_CLEARED, _RUNNING, state.name]


async def add_packml(server: Server, machine: ua.NodeId, ns: int, co: Companions) -> PackMLNodes:
    """Instantiate ``PackMLBaseObjectType`` as ``<machine>/PackML`` and bind its states."""
    nodeid = ua.NodeId(f"{machine.Identifier}/{PACKML}", ns)
    (obj,) = [
        n for n in await instantiate(
            server.get_node(machine), server.get_node(co.packml_object_type), nodeid,
            bname=ua.QualifiedName(PACKML, ns), instantiate_optional=False,
        )
        if n.nodeid == nodeid
    ]  # fmt: skip
    p = co.packml
    sm = await obj.get_child(f"{p}:{_LEVELS[0]}")
    level_nodes = [sm, await sm.get_child(f"{p}:{_LEVELS[1]}")]
    level_nodes.append(await level_nodes[1].get_child(f"{p}:{_LEVELS[2]}"))
    current = [await n.get_child("0:CurrentState") for n in level_nodes]
    ids = [await c.get_child("0:Id") for c in current]
    out = PackMLNodes(nodeid=nodeid, methods=())
    for variable in STATUS:
        out.status[variable] = (await obj.get_child([f"{p}:Status", f"{p}:{variable}"])).nodeid
    for state in PackMLState:
        writes: list[tuple[ua.NodeId, ua.Variant | None]] = []
        if state is not PackMLState.Execute:  # no unit under way: no current speed
            writes.append((out.status["CurMachSpeed"], _ZERO))
        for level, name in enumerate(_levels_of(state, co)):
            if name is None:
                writes += [(current[level].nodeid, None), (ids[level].nodeid, None)]
            else:
                state_node = co.packml_states[level][name]
                writes.append(
                    (current[level].nodeid,
                     ua.Variant(ua.LocalizedText(name), ua.VariantType.LocalizedText))
                )  # fmt: skip
                writes.append((ids[level].nodeid, ua.Variant(state_node, ua.VariantType.NodeId)))
        out.state_writes[int(state)] = tuple(writes)
    mode = await obj.get_child([f"{p}:Status", f"{p}:UnitModeCurrent"])
    for m, unit_mode in _UNIT_MODE.items():
        out.mode_writes[int(m)] = ((mode.nodeid, ua.Variant(unit_mode, ua.VariantType.Int32)),)
    methods = []
    for name in _METHODS:
        method = await obj.get_child(f"{p}:{name}")
        server.link_method(method, _not_supported)
        methods.append(method.nodeid)
    out.methods = tuple(methods)
    return out


async def _not_supported(parent: ua.NodeId, *args: ua.Variant) -> ua.StatusCode:
    return ua.StatusCode(ua.StatusCodes.BadNotSupported)
