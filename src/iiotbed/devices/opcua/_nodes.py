"""Build one machine's nodes in an asyncua address space, typed after OPC 40001-1.

The DI and Machinery nodesets are loaded first (:mod:`._nodesets`): a machine is organised
by the Machinery ``Machines`` folder; its ``Identification`` is a
``MachineIdentificationType`` AddIn (DI browse names); ``MachineryItemState`` and
``MachineryOperationMode`` are instances of the Machinery state machine types whose
``CurrentState/Id`` points at the type's state node; ``MachineryBuildingBlocks`` (FolderType)
references those AddIns, ``MachineComponents`` (MachineComponentsType) is empty. The
nodes a Machinery type does not define (counters, monitoring, setpoint, the PackML
``State``) stay in the iiotbed namespace. The machine's own nodes are created with our
string NodeIds in one AddNodes call (per-node calls, and asyncua's type instantiation,
dominate start-up time); every mandatory member of each type is among them.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from enum import IntEnum

from asyncua import Server, ua

from iiotbed.devices.opcua._nodesets import Companions
from iiotbed.devices.opcua._packml import PackMLNodes, Writes, add_packml
from iiotbed.devices.opcua.spec import MachineSpec
from iiotbed.protocols import opcua as names
from iiotbed.protocols.opcua import UNECE_URI, UNIT_NAMES, unit_id
from iiotbed.telemetry import ItemState, OperationMode, PackMLState, Tag

__all__ = [
    "Also",
    "FaultBinding",
    "MachineNodes",
    "StateBinding",
    "ValueBinding",
    "build_machine",
    "node_id",
]

_ENUMS: dict[str, type[IntEnum]] = {
    Tag.ITEM_STATE: ItemState,
    Tag.OPERATION_MODE: OperationMode,
    Tag.PACKML_STATE: PackMLState,
}
# (browse name of the state machine object, tag, enum)
STATE_MACHINES: tuple[tuple[str, str, type[IntEnum]], ...] = tuple(
    (obj, tag, _ENUMS[tag]) for obj, tag in names.STATE_MACHINES.items()
)

_HAS_COMPONENT = ua.NodeId(ua.ObjectIds.HasComponent)
_HAS_PROPERTY = ua.NodeId(ua.ObjectIds.HasProperty)
_ORGANIZES = ua.NodeId(ua.ObjectIds.Organizes)
_HAS_ADD_IN = ua.NodeId(ua.ObjectIds.HasAddIn)
BUILDING_BLOCKS = "MachineryBuildingBlocks"  # Machinery namespace, FolderType
COMPONENTS = "MachineComponents"  # Machinery namespace, MachineComponentsType
_READ = ua.AccessLevel.CurrentRead.mask
_READ_WRITE = ua.AccessLevel.CurrentRead.mask | ua.AccessLevel.CurrentWrite.mask


def node_id(ns: int, station: str, *path: str) -> ua.NodeId:
    """String NodeId ``ns=<ns>;s=<station>/<path...>`` of a machine's node."""
    return ua.NodeId("/".join((station, *path)), ns)


#: another node a value sets: (node, its type, its value from the sample's value)
Also = tuple[ua.NodeId, ua.VariantType, Callable[[float], float]]


@dataclass(slots=True)
class ValueBinding:
    """A tag written to one variable (and to ``also``: values computed from it)."""

    nodeid: ua.NodeId
    vtype: ua.VariantType
    also: tuple[Also, ...] = ()


@dataclass(slots=True)
class StateBinding:
    """A state tag written to CurrentState (text) with its Id and Number properties."""

    text: ua.NodeId
    id: ua.NodeId
    number: ua.NodeId
    names: Mapping[int, str]
    #: state number -> NodeId that CurrentState/Id shows (the type's state node)
    ids: Mapping[int, ua.NodeId]
    #: state number -> more nodes the same sample sets (the PackML instance's levels)
    extra: Mapping[int, Writes] = field(default_factory=dict)
    # prebuilt (text, id, number) variants per state number: building a Variant costs more
    # than the rest of a write
    variants: dict[int, tuple[ua.Variant, ua.Variant, ua.Variant]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for number, name in self.names.items():
            self.variants[number] = (
                ua.Variant(ua.LocalizedText(name), ua.VariantType.LocalizedText),
                ua.Variant(self.ids[number], ua.VariantType.NodeId),
                ua.Variant(number, ua.VariantType.UInt32),
            )


@dataclass(slots=True)
class FaultBinding:
    """The Fault tag: a Boolean variable plus an alarm event on each change."""

    nodeid: ua.NodeId
    active: bool = False


@dataclass(slots=True)
class MachineNodes:
    """A machine's node ids and how each tag maps onto them."""

    spec: MachineSpec
    nodeid: ua.NodeId
    speed: ua.NodeId
    bindings: dict[str, ValueBinding | StateBinding | FaultBinding] = field(default_factory=dict)
    methods: tuple[ua.NodeId, ...] = ()  # Start, Stop, ... (names.METHODS order)


def _name(text: str) -> ua.LocalizedText:
    return ua.LocalizedText(text)


def _object(
    nodeid: ua.NodeId,
    parent: ua.NodeId,
    name: ua.QualifiedName,
    *,
    ref: ua.NodeId = _HAS_COMPONENT,
    typedef: int | ua.NodeId = ua.ObjectIds.BaseObjectType,
    notifier: int = 0,
) -> ua.AddNodesItem:
    attrs = ua.ObjectAttributes()
    attrs.DisplayName = _name(name.Name)
    attrs.Description = _name(name.Name)
    attrs.EventNotifier = notifier
    item = ua.AddNodesItem()
    item.RequestedNewNodeId = nodeid
    item.BrowseName = name
    item.NodeClass = ua.NodeClass.Object
    item.ParentNodeId = parent
    item.ReferenceTypeId = ref
    item.TypeDefinition = typedef if isinstance(typedef, ua.NodeId) else ua.NodeId(typedef)
    item.NodeAttributes = attrs
    return item


def _variable(
    nodeid: ua.NodeId,
    parent: ua.NodeId,
    name: ua.QualifiedName,
    value: ua.Variant,
    datatype: int,
    *,
    prop: bool = False,
    typedef: int | None = None,
    writable: bool = False,
    description: str | None = None,
) -> ua.AddNodesItem:
    attrs = ua.VariableAttributes()
    attrs.DisplayName = _name(name.Name)
    attrs.Description = _name(description or name.Name)
    attrs.DataType = ua.NodeId(datatype)
    attrs.Value = value
    attrs.ValueRank = ua.ValueRank.Scalar
    attrs.ArrayDimensions = None
    attrs.AccessLevel = _READ_WRITE if writable else _READ
    attrs.UserAccessLevel = _READ_WRITE if writable else _READ
    attrs.WriteMask = 0
    attrs.UserWriteMask = 0
    attrs.Historizing = False
    item = ua.AddNodesItem()
    item.RequestedNewNodeId = nodeid
    item.BrowseName = name
    item.NodeClass = ua.NodeClass.Variable
    item.ParentNodeId = parent
    item.ReferenceTypeId = _HAS_PROPERTY if prop else _HAS_COMPONENT
    if typedef is None:
        typedef = ua.ObjectIds.PropertyType if prop else ua.ObjectIds.BaseDataVariableType
    item.TypeDefinition = ua.NodeId(typedef)
    item.NodeAttributes = attrs
    return item


def eu_information(code: str) -> ua.EUInformation:
    """EUInformation for a UNECE Rec. 20 common code."""
    display = UNIT_NAMES.get(code.upper(), code)
    return ua.EUInformation(
        NamespaceUri=UNECE_URI,
        UnitId=unit_id(code),
        DisplayName=_name(display),
        Description=_name(code.upper()),
    )


def _text(value: str) -> ua.Variant:
    return ua.Variant(value, ua.VariantType.String)


def _localized(value: str) -> ua.Variant:
    return ua.Variant(_name(value), ua.VariantType.LocalizedText)


async def _add(server: Server, items: list[ua.AddNodesItem]) -> None:
    for result in await server.iserver.isession.add_nodes(items):
        result.StatusCode.check()


async def build_machine(
    server: Server,
    ns: int,
    companions: Companions,
    spec: MachineSpec,
    speed: float,
    method: Callable[[str], Callable[..., object]],
) -> MachineNodes:
    """Add one machine to the Machines folder; ``method(name)`` gives each method's callback."""
    st = spec.name
    co = companions
    folder = co.machines

    def nid(*path: str) -> ua.NodeId:
        return node_id(ns, st, *path)

    def qn(name: str, idx: int = ns) -> ua.QualifiedName:
        return ua.QualifiedName(name, idx)

    machine = nid()
    nodes = MachineNodes(spec=spec, nodeid=machine, speed=nid(names.SPEED_SETPOINT))
    items = [
        _object(
            machine,
            folder,
            qn(st),
            ref=_ORGANIZES,
            notifier=ua.EventNotifier.SubscribeToEvents.mask,
        )
    ]

    # Identification AddIn: MachineIdentificationType's mandatory members and some optional
    # ones, browse names in the DI namespace (YearOfConstruction: Machinery's), AssetPath ours
    ident = nid(names.IDENTIFICATION)
    items.append(
        _object(ident, machine, qn(names.IDENTIFICATION, co.di), ref=_HAS_ADD_IN,
                typedef=co.identification_type)
    )  # fmt: skip
    idprops: list[tuple[ua.QualifiedName, ua.Variant, int]] = [
        (qn("Manufacturer", co.di), _localized(spec.manufacturer), ua.ObjectIds.LocalizedText),
        (qn("SerialNumber", co.di), _text(spec.serial_number), ua.ObjectIds.String),
        (qn("ProductInstanceUri", co.di), _text(spec.product_instance_uri), ua.ObjectIds.String),
        (qn(names.ASSET_PATH), _text(spec.path), ua.ObjectIds.String),
    ]
    if spec.model is not None:
        idprops.append((qn("Model", co.di), _localized(spec.model), ua.ObjectIds.LocalizedText))
    if spec.year_of_construction is not None:
        year = ua.Variant(spec.year_of_construction, ua.VariantType.UInt16)
        idprops.append((qn("YearOfConstruction", co.machinery), year, ua.ObjectIds.UInt16))
    for bname, value, dtype in idprops:
        items.append(
            _variable(nid(names.IDENTIFICATION, bname.Name), ident, bname, value, dtype, prop=True)
        )

    # MachineryBuildingBlocks references the AddIns below; MachineComponents (none here)
    blocks = nid(BUILDING_BLOCKS)
    items.append(
        _object(blocks, machine, qn(BUILDING_BLOCKS, co.machinery), typedef=ua.ObjectIds.FolderType)
    )
    items.append(
        _object(nid(COMPONENTS), machine, qn(COMPONENTS, co.machinery), ref=_HAS_ADD_IN,
                typedef=co.components_type)
    )  # fmt: skip
    addins = [ident]

    # State machines: CurrentState (LocalizedText) with Id (NodeId) and Number (UInt32).
    # The Machinery ones are instances of the Machinery types (AddIns, also referenced from
    # the machine itself so clients browsing machine/<state machine> keep finding them); the
    # PackML state is a plain FiniteStateMachine in our namespace.
    typed: dict[str, tuple[ua.NodeId, Mapping[int, ua.NodeId]]] = {
        Tag.ITEM_STATE: (co.item_state_type, co.item_states),
        Tag.OPERATION_MODE: (co.operation_mode_type, co.operation_modes),
    }
    for obj_name, tag, enum in STATE_MACHINES:
        obj = nid(obj_name)
        if tag in typed:
            typeid, state_ids = typed[tag]
            items.append(
                _object(obj, machine, qn(obj_name, co.machinery), ref=_HAS_ADD_IN, typedef=typeid)
            )
            addins.append(obj)
        else:
            state_ids = {int(m): _state_id(ns, obj_name, m) for m in enum}
            items.append(
                _object(obj, machine, qn(obj_name), typedef=ua.ObjectIds.FiniteStateMachineType)
            )
        first = min(enum, key=int)
        cur = nid(obj_name, names.CURRENT_STATE)
        items.append(
            _variable(
                cur,
                obj,
                qn(names.CURRENT_STATE, 0),
                _localized(_state_text(first)),
                ua.ObjectIds.LocalizedText,
                typedef=ua.ObjectIds.FiniteStateVariableType,
            )
        )
        items.append(
            _variable(
                nid(obj_name, names.CURRENT_STATE, names.STATE_ID),
                cur,
                qn(names.STATE_ID, 0),
                ua.Variant(state_ids[int(first)], ua.VariantType.NodeId),
                ua.ObjectIds.NodeId,
                prop=True,
            )
        )
        items.append(
            _variable(
                nid(obj_name, names.CURRENT_STATE, names.STATE_NUMBER),
                cur,
                qn(names.STATE_NUMBER, 0),
                ua.Variant(int(first), ua.VariantType.UInt32),
                ua.ObjectIds.UInt32,
                prop=True,
            )
        )
        nodes.bindings[tag] = StateBinding(
            text=cur,
            id=nid(obj_name, names.CURRENT_STATE, names.STATE_ID),
            number=nid(obj_name, names.CURRENT_STATE, names.STATE_NUMBER),
            names={int(m): _state_text(m) for m in enum},
            ids=state_ids,
        )

    # Never-reset counters
    counters = nid(names.OPERATION_COUNTERS)
    items.append(_object(counters, machine, qn(names.OPERATION_COUNTERS)))
    for tag in spec.counters:
        cid = nid(names.OPERATION_COUNTERS, tag)
        zero = ua.Variant(0, ua.VariantType.UInt64)
        items.append(_variable(cid, counters, qn(tag), zero, ua.ObjectIds.UInt64))
        nodes.bindings[tag] = ValueBinding(cid, ua.VariantType.UInt64)
    energy = nid(names.OPERATION_COUNTERS, Tag.ENERGY)
    items.append(
        _variable(
            energy,
            counters,
            qn(Tag.ENERGY),
            ua.Variant(0.0, ua.VariantType.Double),
            ua.ObjectIds.Double,
            typedef=ua.ObjectIds.AnalogUnitType,
            description="energy used since commissioning",
        )
    )
    items.append(_eu_property(energy, "KWH"))
    nodes.bindings[Tag.ENERGY] = ValueBinding(energy, ua.VariantType.Double)

    # Process values with engineering units and ranges, plus the fault flag
    monitoring = nid(names.MONITORING)
    items.append(_object(monitoring, machine, qn(names.MONITORING)))
    for pv in spec.process_values:
        pid = nid(names.MONITORING, pv.tag)
        items.append(
            _variable(
                pid,
                monitoring,
                qn(pv.tag),
                ua.Variant(0.0, ua.VariantType.Double),
                ua.ObjectIds.Double,
                typedef=ua.ObjectIds.AnalogUnitRangeType,
                description=pv.description,
            )
        )
        items.append(_eu_property(pid, pv.unit))
        items.append(_range_property(pid, pv.low, pv.high))
        nodes.bindings[pv.tag] = ValueBinding(pid, ua.VariantType.Double)
    fault = nid(names.MONITORING, Tag.FAULT)
    items.append(
        _variable(
            fault,
            monitoring,
            qn(Tag.FAULT),
            ua.Variant(False, ua.VariantType.Boolean),
            ua.ObjectIds.Boolean,
            description="true while a breakdown is active",
        )
    )
    nodes.bindings[Tag.FAULT] = FaultBinding(fault)

    # Writable speed setpoint, factor of nominal speed in (0, 2]
    items.append(
        _variable(
            nodes.speed,
            machine,
            qn(names.SPEED_SETPOINT),
            ua.Variant(float(speed), ua.VariantType.Double),
            ua.ObjectIds.Double,
            typedef=ua.ObjectIds.AnalogUnitRangeType,
            writable=True,
            description="speed factor of nominal, 0 < factor <= 2",
        )
    )
    items.append(_eu_property(nodes.speed, "C62"))
    items.append(_range_property(nodes.speed, 0.0, 2.0))
    # a speed set by another channel (e.g. a Sparkplug DCMD) arrives as a sample
    nodes.bindings[names.SPEED_SETPOINT] = ValueBinding(nodes.speed, ua.VariantType.Double)
    await _add(server, items)
    refs = []
    for target in addins:
        ref = ua.AddReferencesItem()
        ref.SourceNodeId = blocks
        ref.ReferenceTypeId = _HAS_ADD_IN
        ref.IsForward = True
        ref.TargetNodeId = target
        ref.TargetNodeClass = ua.NodeClass.Object
        refs.append(ref)
    for result in await server.iserver.isession.add_references(refs):
        result.check()

    message = ua.Argument(
        Name="Message",
        DataType=ua.NodeId(ua.ObjectIds.String),
        ValueRank=ua.ValueRank.Scalar,
        Description=_name("outcome of the command"),
    )
    parent = server.get_node(machine)
    for name in names.METHODS:
        await parent.add_method(nid(name), qn(name), method(name), [], [message])
    nodes.methods = tuple(nid(name) for name in names.METHODS)

    # the PackML instance, fed by the PackML state and the operation mode samples
    packml = await add_packml(server, machine, ns, co)
    nodes.methods += packml.methods
    for tag, writes in ((Tag.PACKML_STATE, packml.state_writes),
                        (Tag.OPERATION_MODE, packml.mode_writes)):  # fmt: skip
        binding = nodes.bindings[tag]
        assert isinstance(binding, StateBinding)
        binding.extra = writes
        for nodeid, value in writes[min(binding.names)]:  # the initial state, as above
            status = ua.StatusCode(ua.StatusCodes.Good if value is not None
                                   else ua.StatusCodes.BadStateNotActive)  # fmt: skip
            await server.write_attribute_value(nodeid, ua.DataValue(value, status))
    await _bind_packml_status(server, nodes, packml, speed)
    return nodes


async def _bind_packml_status(
    server: Server, nodes: MachineNodes, packml: PackMLNodes, speed: float
) -> None:
    """PackML Status: MachSpeed follows SpeedSetpoint, CurMachSpeed each CycleTime (units
    per minute; 0 outside Execute, see _packml), Starved/Blocked their derived tags."""
    st = packml.status
    ideal = nodes.spec.ideal_cycle_time
    rate = 60.0 / ideal if ideal else 0.0  # units/min at speed factor 1

    def per_minute(cycle_s: float) -> float:
        return 60.0 / cycle_s if cycle_s > 0 else 0.0

    speeds = (
        (names.SPEED_SETPOINT, "MachSpeed", lambda factor: factor * rate, speed * rate),
        (Tag.CYCLE_TIME, "CurMachSpeed", per_minute, 0.0),
    )
    for tag, status, value_of, initial in speeds:
        binding = nodes.bindings.get(tag)
        if isinstance(binding, ValueBinding):
            binding.also += ((st[status], ua.VariantType.Float, value_of),)
        await server.write_attribute_value(
            st[status], ua.DataValue(ua.Variant(initial, ua.VariantType.Float))
        )
        eu_range = await server.get_node(st[status]).get_child(f"0:{names.EU_RANGE}")
        await eu_range.write_value(
            ua.Variant(ua.Range(Low=0.0, High=2.0 * rate), ua.VariantType.ExtensionObject)
        )
    for tag, status in ((Tag.STARVED, "EquipmentStarved"), (Tag.BLOCKED, "EquipmentBlocked")):
        nodes.bindings[tag] = ValueBinding(st[status], ua.VariantType.Boolean)
        await server.write_attribute_value(
            st[status], ua.DataValue(ua.Variant(False, ua.VariantType.Boolean))
        )


def _eu_property(parent: ua.NodeId, code: str) -> ua.AddNodesItem:
    return _variable(
        ua.NodeId(f"{parent.Identifier}/{names.ENGINEERING_UNITS}", parent.NamespaceIndex),
        parent,
        ua.QualifiedName(names.ENGINEERING_UNITS, 0),
        ua.Variant(eu_information(code), ua.VariantType.ExtensionObject),
        ua.ObjectIds.EUInformation,
        prop=True,
    )


def _range_property(parent: ua.NodeId, low: float, high: float) -> ua.AddNodesItem:
    return _variable(
        ua.NodeId(f"{parent.Identifier}/{names.EU_RANGE}", parent.NamespaceIndex),
        parent,
        ua.QualifiedName(names.EU_RANGE, 0),
        ua.Variant(ua.Range(Low=low, High=high), ua.VariantType.ExtensionObject),
        ua.ObjectIds.Range,
        prop=True,
    )


def _state_text(member: IntEnum) -> str:
    # OperationMode.NONE spells the OPC 40001-1 state "None"
    return "None" if member.name == "NONE" else member.name


def _state_id(ns: int, machine: str, member: IntEnum) -> ua.NodeId:
    return ua.NodeId(f"{machine}/{_state_text(member)}", ns)
