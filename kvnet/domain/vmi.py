"""The parts of a KubeVirt VMI that decide its NICs, parsed and validated up front.

The translation must never discover halfway through rendering that a MAC is malformed,
so every field that can reach the domain XML is checked here, with an error that names
the VMI interface. Accepts the VMI as a dict (from JSON or YAML); a ``VirtualMachine``
is unwrapped to its ``spec.template``.
"""

from __future__ import annotations

import functools
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from kvnet.core.errors import DeviceError, TranslationError
from kvnet.core.model import PciAddress, is_mac

BONDS_ANNOTATION = "kvnet.io/bonds"

# Models libvirt's QEMU driver accepts for <interface><model type>. "virtio" follows
# KubeVirt: it becomes virtio-non-transitional (virtio-transitional with
# useVirtioTransitional).
KNOWN_MODELS = frozenset(
    {
        "virtio",
        "virtio-transitional",
        "virtio-non-transitional",
        "e1000",
        "e1000e",
        "igb",
        "rtl8139",
        "ne2k_pci",
        "pcnet",
        "i82551",
        "i82557b",
        "i82559er",
        "vmxnet3",
        "usb-net",
    }
)
# KubeVirt interface kinds (the keys under spec.domain.devices.interfaces[])
BINDING_KINDS = ("bridge", "masquerade", "sriov", "slirp", "passt", "macvtap")
STATES = ("", "up", "down", "absent")
MAX_ACPI_INDEX = 16383
MAX_QUEUES = 256  # KubeVirt's cap on multiqueue queues
# KubeVirt's admission rule for interface (= network) names
_NAME_RE = re.compile(r"^[A-Za-z0-9_-]+$")


@dataclass(frozen=True)
class VmiNetwork:
    """``spec.networks[]``: the pod network or a Multus network (``multus.networkName``)."""

    name: str
    network_name: str | None = None  # multus.networkName; None for the pod network
    default: bool = False  # pod network, or multus.default: true

    @property
    def is_pod_network(self) -> bool:
        return self.network_name is None


@dataclass(frozen=True)
class VmiInterface:
    """``spec.domain.devices.interfaces[]``: the guest side of one network."""

    name: str
    kind: str  # "binding" or one of BINDING_KINDS
    binding: str | None = None  # binding.name for kind "binding"
    mac: str | None = None
    model: str | None = None
    pci_address: PciAddress | None = None
    acpi_index: int | None = None
    boot_order: int | None = None
    state: str = ""


@dataclass(frozen=True)
class VmiStatusInterface:
    """``status.interfaces[]`` (what KubeVirt reports; informational here)."""

    name: str
    mac: str | None = None
    interface_name: str | None = None


@dataclass(frozen=True)
class Vmi:
    """A validated VMI: networks, interfaces and the knobs that change NIC XML."""

    name: str
    namespace: str
    networks: tuple[VmiNetwork, ...] = ()
    interfaces: tuple[VmiInterface, ...] = ()
    multiqueue: bool = False
    virtio_transitional: bool = False
    vcpus: int = 1
    annotations: Mapping[str, str] = field(default_factory=dict)
    status_interfaces: tuple[VmiStatusInterface, ...] = ()

    @functools.cached_property
    def _network_by_name(self) -> dict[str, VmiNetwork]:
        """``spec.networks`` by name (the first of a name), built once: one lookup per interface, not a scan."""
        out: dict[str, VmiNetwork] = {}
        for net in self.networks:
            out.setdefault(net.name, net)
        return out

    def network(self, name: str) -> VmiNetwork:
        net = self._network_by_name.get(name)
        if net is not None:
            return net
        raise TranslationError(
            f"VMI {self.namespace}/{self.name}: interface {name!r} has no network of that name in spec.networks"
        )

    def interface(self, name: str) -> VmiInterface | None:
        return next((i for i in self.interfaces if i.name == name), None)

    def multus_secondaries(self) -> tuple[VmiNetwork, ...]:
        """Multus networks that are not the default, in spec order (KubeVirt's ordinal order)."""
        return tuple(n for n in self.networks if not n.default)

    @functools.cached_property
    def _secondary_positions(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for i, net in enumerate(self.multus_secondaries(), start=1):
            out.setdefault(net.name, i)
        return out

    def secondary_position(self, name: str) -> int:
        """1-based position of network ``name`` among :meth:`multus_secondaries` (its ordinal ``net<N>``)."""
        return self._secondary_positions[name]


def _map(obj: Any, where: str) -> Mapping[str, Any]:
    if obj is None:
        return {}
    if not isinstance(obj, Mapping):
        raise TranslationError(f"{where} must be an object, got {type(obj).__name__}")
    return obj


def _list(obj: Any, where: str) -> list[Any]:
    if obj is None:
        return []
    if not isinstance(obj, list):
        raise TranslationError(f"{where} must be a list, got {type(obj).__name__}")
    return obj


def _positive_int(value: Any, what: str, who: str, *, upper: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1 or (upper is not None and value > upper):
        bound = f"1..{upper}" if upper else "a positive integer"
        raise TranslationError(f"interface {who!r}: {what} {value!r} is not {bound}")
    return value


def _parse_network(raw: Any, i: int) -> VmiNetwork:
    net = _map(raw, f"spec.networks[{i}]")
    name = net.get("name")
    if not isinstance(name, str) or not _NAME_RE.match(name):
        raise TranslationError(
            f"spec.networks[{i}]: name {name!r} is not a valid network name (letters, digits, - and _)"
        )
    if "pod" in net:
        return VmiNetwork(name=name, network_name=None, default=True)
    multus = _map(net.get("multus"), f"network {name!r}: multus")
    target = multus.get("networkName")
    if not isinstance(target, str) or not target:
        raise TranslationError(f"network {name!r}: needs pod: {{}} or multus.networkName")
    return VmiNetwork(name=name, network_name=target, default=bool(multus.get("default", False)))


_DOTTED_MAC = re.compile(r"^[0-9a-fA-F]{4}\.[0-9a-fA-F]{4}\.[0-9a-fA-F]{4}$")


def _normal_mac(text: Any) -> str | None:
    """The MAC forms Go's net.ParseMAC takes for 48 bits (as KubeVirt does), as ``aa:bb:...``."""
    if not isinstance(text, str):
        return None
    if _DOTTED_MAC.match(text):
        digits = text.replace(".", "")
        text = ":".join(digits[i : i + 2] for i in range(0, 12, 2))
    text = text.replace("-", ":")
    return text.lower() if is_mac(text) else None


def _parse_interface(raw: Any, i: int) -> VmiInterface:
    iface = _map(raw, f"spec.domain.devices.interfaces[{i}]")
    name = iface.get("name")
    if not isinstance(name, str) or not _NAME_RE.match(name):
        raise TranslationError(
            f"spec.domain.devices.interfaces[{i}]: name {name!r} is not a valid interface name (letters, digits, - and _)"
        )
    kinds = [k for k in BINDING_KINDS if k in iface]
    binding_name: str | None = None
    if "binding" in iface:
        binding = _map(iface["binding"], f"interface {name!r}: binding")
        binding_name = binding.get("name")
        if not isinstance(binding_name, str) or not binding_name:
            raise TranslationError(f"interface {name!r}: binding.name must be a non-empty string")
        kinds.append("binding")
    if len(kinds) != 1:
        raise TranslationError(
            f"interface {name!r}: exactly one of binding, {', '.join(BINDING_KINDS)} must be set, got {kinds or 'none'}"
        )
    mac = iface.get("macAddress")
    if mac is not None:
        mac = _normal_mac(mac)
        if mac is None:
            raise TranslationError(
                f"interface {name!r}: macAddress {iface['macAddress']!r} is not a MAC address (xx:xx:xx:xx:xx:xx)"
            )
    model = iface.get("model")
    if model is not None and (
        not isinstance(model, str) or model not in KNOWN_MODELS
    ):  # a list is not hashable: check first
        raise TranslationError(
            f"interface {name!r}: model {model!r} is not a NIC model libvirt knows ({', '.join(sorted(KNOWN_MODELS))})"
        )
    pci: PciAddress | None = None
    if iface.get("pciAddress") is not None:
        try:
            pci = PciAddress.parse(iface["pciAddress"])
        except DeviceError:
            raise TranslationError(
                f"interface {name!r}: pciAddress {iface['pciAddress']!r} is not a PCI address (DDDD:BB:SS.F)"
            ) from None
    acpi = iface.get("acpiIndex")
    if acpi is not None:
        acpi = _positive_int(acpi, "acpiIndex", name, upper=MAX_ACPI_INDEX)
    boot = iface.get("bootOrder")
    if boot is not None:
        boot = _positive_int(boot, "bootOrder", name)
    state = iface.get("state", "") or ""
    if state not in STATES:
        raise TranslationError(f"interface {name!r}: state {state!r} is not one of up, down, absent")
    return VmiInterface(
        name=name,
        kind=kinds[0],
        binding=binding_name,
        mac=mac,
        model=model,
        pci_address=pci,
        acpi_index=acpi,
        boot_order=boot,
        state=state,
    )


def _cpu_quantity(text: Any) -> int | None:
    """A Kubernetes CPU quantity ("2", "1500m", 2) rounded up to whole vCPUs."""
    if isinstance(text, bool):
        return None
    if isinstance(text, (int, float)):
        return max(1, math.ceil(text))
    if isinstance(text, str):
        m = re.fullmatch(r"(\d+(?:\.\d+)?)(m?)", text.strip())
        if m:
            value = float(m[1]) / (1000 if m[2] else 1)
            return max(1, math.ceil(value))
    return None


def _vcpus(domain: Mapping[str, Any]) -> int:
    """KubeVirt's vCPU count: cores*sockets*threads, else the CPU limit/request, else 1."""
    cpu = _map(domain.get("cpu"), "spec.domain.cpu")
    if cpu:
        n = 1
        for key in ("cores", "sockets", "threads"):
            v = cpu.get(key, 1)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise TranslationError(f"spec.domain.cpu.{key} {v!r} is not a positive integer")
            n *= v
        return n
    resources = _map(domain.get("resources"), "spec.domain.resources")
    for key in ("limits", "requests"):
        found = _cpu_quantity(_map(resources.get(key), f"spec.domain.resources.{key}").get("cpu"))
        if found:
            return found
    return 1


def parse_vmi(obj: Mapping[str, Any]) -> Vmi:
    """Validate a VMI (or a VirtualMachine, whose ``spec.template`` is used)."""
    obj = _map(obj, "VMI")
    meta = _map(obj.get("metadata"), "metadata")
    spec = _map(obj.get("spec"), "spec")
    if obj.get("kind") == "VirtualMachine" or ("template" in spec and "domain" not in spec):
        template = _map(spec.get("template"), "spec.template")
        tmeta = _map(template.get("metadata"), "spec.template.metadata")
        meta = {
            **meta,
            "annotations": {
                **_map(meta.get("annotations"), "metadata.annotations"),
                **_map(tmeta.get("annotations"), "spec.template.metadata.annotations"),
            },
        }
        spec = _map(template.get("spec"), "spec.template.spec")
    domain = _map(spec.get("domain"), "spec.domain")
    devices = _map(domain.get("devices"), "spec.domain.devices")
    networks = tuple(_parse_network(n, i) for i, n in enumerate(_list(spec.get("networks"), "spec.networks")))
    interfaces = tuple(
        _parse_interface(n, i) for i, n in enumerate(_list(devices.get("interfaces"), "spec.domain.devices.interfaces"))
    )
    _check_unique(networks, interfaces)
    net_names = {n.name for n in networks}
    for iface in interfaces:
        if iface.name not in net_names:
            raise TranslationError(f"interface {iface.name!r}: no network named {iface.name!r} in spec.networks")
    annotations = {str(k): str(v) for k, v in _map(meta.get("annotations"), "metadata.annotations").items()}
    status = _map(obj.get("status"), "status")
    status_ifaces = tuple(
        VmiStatusInterface(name=str(s.get("name", "")), mac=s.get("mac"), interface_name=s.get("interfaceName"))
        for s in (_map(x, "status.interfaces[]") for x in _list(status.get("interfaces"), "status.interfaces"))
    )
    return Vmi(
        name=str(meta.get("name", "")),
        namespace=str(meta.get("namespace", "default")),
        networks=networks,
        interfaces=interfaces,
        multiqueue=bool(devices.get("networkInterfaceMultiqueue", False)),
        virtio_transitional=bool(devices.get("useVirtioTransitional", False)),
        vcpus=_vcpus(domain),
        annotations=annotations,
        status_interfaces=status_ifaces,
    )


def _check_unique(networks: tuple[VmiNetwork, ...], interfaces: tuple[VmiInterface, ...]) -> None:
    seen: set[str] = set()
    for n in networks:
        if n.name in seen:
            raise TranslationError(f"network {n.name!r} is declared twice in spec.networks")
        seen.add(n.name)
    if sum(1 for n in networks if n.default) > 1:
        raise TranslationError("spec.networks has more than one default (pod or multus.default) network")
    seen.clear()
    macs: dict[object, str] = {}
    boots: dict[object, str] = {}
    acpis: dict[object, str] = {}
    for i in interfaces:
        if i.name in seen:
            raise TranslationError(f"interface {i.name!r} is declared twice in spec.domain.devices.interfaces")
        seen.add(i.name)
        for value, table, what in (
            (i.mac, macs, "macAddress"),
            (i.boot_order, boots, "bootOrder"),
            (i.acpi_index, acpis, "acpiIndex"),
        ):
            if value is None:
                continue
            if value in table:
                raise TranslationError(
                    f"interface {i.name!r}: {what} {value!r} is already used by interface {table[value]!r}"
                )
            table[value] = i.name
