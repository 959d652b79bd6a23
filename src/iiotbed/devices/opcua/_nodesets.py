"""The OPC Foundation companion nodesets the machine servers load: DI, Machinery, PackML.

The NodeSet2 files ship as package data (``nodesets/``, OPC Foundation MIT licence in
``nodesets/LICENSE.txt``). Each server imports them at start (asyncua ``import_xml``,
~0.3-0.5 s for the three); the XML text is read from the package once per process.
:class:`Companions` holds what the address-space builder needs from them: namespace
indexes, the Machinery ``Machines`` folder, the type nodes machines are instances of,
and the state nodes a ``CurrentState/Id`` points at.
"""

from __future__ import annotations

import asyncio
import functools
from dataclasses import dataclass
from importlib import resources
from typing import Final

from asyncua import Server, ua

from iiotbed.telemetry import ItemState, OperationMode, PackMLState

__all__ = [
    "DI_URI",
    "MACHINERY_URI",
    "NODESETS",
    "PACKML_URI",
    "Companions",
    "load_companions",
]

DI_URI: Final = "http://opcfoundation.org/UA/DI/"
MACHINERY_URI: Final = "http://opcfoundation.org/UA/Machinery/"
PACKML_URI: Final = "http://opcfoundation.org/UA/PackML/"
#: files under ``nodesets/``, in import order (each needs the ones before it)
NODESETS: Final = ("Opc.Ua.Di.NodeSet2.xml", "Opc.Ua.Machinery.NodeSet2.xml",
                   "Opc.Ua.PackML.NodeSet2.xml")  # fmt: skip

# numeric ids inside the Machinery nodeset (stable across its releases)
_MACHINES_FOLDER: Final = 1001
_IDENTIFICATION_TYPE: Final = 1012  # MachineIdentificationType
_ITEM_STATE_TYPE: Final = 1002  # MachineryItemState_StateMachineType
_OPERATION_MODE_TYPE: Final = 1008  # MachineryOperationModeStateMachineType
_COMPONENTS_TYPE: Final = 1006  # MachineComponentsType
# ... and inside the PackML nodeset (OPC 30050)
_PACKML_OBJECT_TYPE: Final = 6  # PackMLBaseObjectType
_PACKML_LEVELS: Final = (3, 2, 1)  # Base, Machine, Execute state machine types, outer first


@dataclass(frozen=True, slots=True)
class Companions:
    """Namespace indexes and nodes of the loaded companion specifications."""

    di: int
    machinery: int
    packml: int
    machines: ua.NodeId  # the Machinery Machines folder
    identification_type: ua.NodeId
    item_state_type: ua.NodeId
    operation_mode_type: ua.NodeId
    components_type: ua.NodeId
    packml_object_type: ua.NodeId
    #: state number -> the state's node in its state machine type (what CurrentState/Id holds)
    item_states: dict[int, ua.NodeId]
    operation_modes: dict[int, ua.NodeId]
    #: per PackML level (Base, Machine, Execute): state name -> the state's node
    packml_states: tuple[dict[str, ua.NodeId], ...]


@functools.cache
def _xml(name: str) -> str:
    return (resources.files(__package__) / "nodesets" / name).read_text(encoding="utf-8")


async def load_companions(server: Server) -> Companions:
    """Import DI, Machinery and PackML into an initialised server; their namespaces are
    appended to the namespace array."""
    for name in NODESETS:
        # reading ~0.5 MB of package data blocks: once per process, off the event loop
        text = await asyncio.to_thread(_xml, name)
        await server.import_xml(xmlstring=text)
    uris = await server.get_namespace_array()
    di, machinery, packml = (uris.index(u) for u in (DI_URI, MACHINERY_URI, PACKML_URI))

    def m(i: int) -> ua.NodeId:
        return ua.NodeId(i, machinery)

    packml_states = tuple(
        [await _state_nodes(server, ua.NodeId(i, packml)) for i in _PACKML_LEVELS]
    )
    known = {name for level in packml_states for name in level}
    missing = {s.name for s in PackMLState} - known
    if missing:
        raise RuntimeError(f"the PackML nodeset has no state(s) {', '.join(sorted(missing))}")
    return Companions(
        di=di,
        machinery=machinery,
        packml=packml,
        machines=m(_MACHINES_FOLDER),
        identification_type=m(_IDENTIFICATION_TYPE),
        item_state_type=m(_ITEM_STATE_TYPE),
        operation_mode_type=m(_OPERATION_MODE_TYPE),
        components_type=m(_COMPONENTS_TYPE),
        packml_object_type=ua.NodeId(_PACKML_OBJECT_TYPE, packml),
        item_states=await _states(server, m(_ITEM_STATE_TYPE), ItemState),
        operation_modes=await _states(server, m(_OPERATION_MODE_TYPE), OperationMode),
        packml_states=packml_states,
    )


async def _state_nodes(server: Server, typeid: ua.NodeId) -> dict[str, ua.NodeId]:
    """The states a state machine type defines (its StateType components), by name."""
    out = {}
    for ref in await server.get_node(typeid).get_references(
        refs=ua.ObjectIds.HasComponent, direction=ua.BrowseDirection.Forward,
        nodeclassmask=ua.NodeClass.Object,
    ):  # fmt: skip
        if ref.BrowseName.NamespaceIndex == typeid.NamespaceIndex and ref.TypeDefinition in _STATE_TYPES:
            out[ref.BrowseName.Name] = ref.NodeId
    return out


_STATE_TYPES: Final = (ua.NodeId(ua.ObjectIds.StateType), ua.NodeId(ua.ObjectIds.InitialStateType))


async def _states(
    server: Server, typeid: ua.NodeId, enum: type[ItemState] | type[OperationMode]
) -> dict[int, ua.NodeId]:
    """The state nodes of a Machinery state machine type, by our enum's numbers."""
    nodes = await _state_nodes(server, typeid)
    out = {}
    for member in enum:
        name = "None" if member.name == "NONE" else member.name
        if name not in nodes:
            raise RuntimeError(f"the Machinery nodeset has no state {name!r} in {typeid}")
        out[int(member)] = nodes[name]
    return out
