"""The VM demo's scenario: the VMI's networks, their NADs, the peers the guest pings, and
the objects and files a run hands to kvnet, built from it (pure data and pure builders).

A :class:`Scenario` says which networks the VMI has and how each is wired on the node;
everything else is computed from it: the NADs and the virt-launcher pod the API holds
(with the networks annotation exactly as KubeVirt writes it), the VMI, the domain
virt-launcher hands to the sidecar, the ``kvnet-cni`` config and environment, the
network-info file KubeVirt's downward API would write. Nothing here does I/O; the run
(:mod:`kvnet.lab.vm.run`) does.
"""

from __future__ import annotations

import ipaddress
import json
import xml.etree.ElementTree as ET
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kvnet.core import naming
from kvnet.core.errors import InvalidEnvironment
from kvnet.domain.vmi import BONDS_ANNOTATION

if TYPE_CHECKING:
    from kvnet.lab.guest import GuestImage

NAMESPACE = "default"
BINDING_NAME = "kvnet"
BINDING_NAD = "kvnet-binding"
CLUSTER_SUBNET = "10.80.0.0/24"
NETWORKS_ANNOTATION = "k8s.v1.cni.cncf.io/networks"
STATUS_ANNOTATION = "k8s.v1.cni.cncf.io/network-status"

# ------------------------------------------------------------------------------------
# The scenario: VMI networks, their NADs and the peers the guest pings (pure data)
# ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Net:
    """One VMI network/interface and the NAD behind it.

    ``segment`` is the node bridge (``bridge``) or the macvlan uplink (``macvlan``);
    ``subnet`` is the host-local range (None: pure L2, e.g. bond members).
    """

    name: str
    kind: str
    segment: str
    subnet: str | None
    mac: str | None = None
    mtu: int | None = None  # the NAD's "mtu" (the pod link's, so the tap's and the guest NIC's)
    subnet6: str | None = None  # a second host-local range: dual stack
    routes: tuple[tuple[str, str], ...] = ()  # host-local's routes: (destination, gateway)
    # kvnet-mirror's target in the node netns (a veth whose peer, ``<mirror>c``, counts the
    # copies): the NAD becomes the conflist [bridge, kvnet-mirror]
    mirror: str | None = None

    @property
    def nad(self) -> str:
        return f"{self.name}-net"

    @property
    def pod_iface(self) -> str:
        return naming.hashed_pod_iface(self.name)


@dataclass(frozen=True)
class Bond:
    """A guest bond over member networks (the ``kvnet.io/bonds`` VMI annotation)."""

    name: str
    members: tuple[str, ...]
    address: str  # CIDR for the bond in the guest
    mode: str = "active-backup"
    miimon: int = 100


@dataclass(frozen=True)
class Peer:
    """A namespace on one network segment with an address the guest pings."""

    segment: str
    kind: str
    addresses: tuple[str, ...]  # CIDRs: .2 of the subnet (and ::2 of the IPv6 subnet)

    @property
    def ips(self) -> tuple[str, ...]:
        return tuple(a.split("/")[0] for a in self.addresses)


@dataclass(frozen=True)
class Scenario:
    """``addressing`` is how the guest gets its attachments' addresses: ``"cloud-init"``
    (the VMI has a cloud-init volume; the sidecar's network data, handed to the test
    guest on its kernel command line) or ``"dhcp"`` (no cloud-init volume; the guest runs
    its DHCPv4/DHCPv6 clients on every NIC and kvnet-guestnet answers, docs/guest-addressing.md)."""

    vmi_name: str
    nets: tuple[Net, ...]
    bonds: tuple[Bond, ...] = ()
    addressing: str = "cloud-init"

    @property
    def dhcp(self) -> bool:
        """The guest has no cloud-init volume and only runs DHCP clients."""
        return self.addressing == "dhcp"

    def net(self, name: str) -> Net:
        return next(n for n in self.nets if n.name == name)

    def bond_of(self, name: str) -> Bond | None:
        return next((b for b in self.bonds if name in b.members), None)

    def peers(self) -> list[Peer]:
        """One peer per segment, at .2 (and ::2) of the segment's subnets (host-local starts at .10)."""
        out: dict[str, Peer] = {}
        for n in self.nets:
            if n.segment in out:
                continue
            bond = self.bond_of(n.name)
            subnets = (
                [n.subnet, n.subnet6]
                if n.subnet
                else [str(ipaddress.ip_interface(bond.address).network)]
                if bond
                else []
            )
            nets = [ipaddress.ip_network(sn) for sn in subnets if sn]
            if nets:
                out[n.segment] = Peer(
                    n.segment, n.kind, tuple(f"{net.network_address + 2}/{net.prefixlen}" for net in nets)
                )
        return list(out.values())

    def expected_peer(self, name: str) -> Peer | None:
        seg = self.net(name).segment
        return next((p for p in self.peers() if p.segment == seg), None)


def default_scenario() -> Scenario:
    """The demo: two bridge networks, a macvlan network, and a guest bond over two bridges."""
    return Scenario(
        vmi_name="vmi-demo",
        nets=(
            Net("blue", "bridge", "kvb-blue", "10.81.0.0/24", subnet6="fd00:81::/64"),
            Net("green", "macvlan", "kvm-green", "10.82.0.0/24"),
            Net("red", "bridge", "kvb-red", "10.83.0.0/24", mtu=1400),
            Net("bond-a", "bridge", "kvb-bond", None, mac="02:6b:76:00:00:a1"),
            Net("bond-b", "bridge", "kvb-bond", None, mac="02:6b:76:00:00:b1"),
        ),
        bonds=(Bond("bond0", ("bond-a", "bond-b"), "10.84.0.5/24"),),
    )


def dhcp_scenario() -> Scenario:
    """A guest without cloud-init that only runs DHCP clients: a dual-stack network with a
    route through its peer, a second NIC on the same L2 with its own range (each NIC's server
    must answer only its own MAC), and a NIC without IPAM, on which nothing may answer."""
    return Scenario(
        vmi_name="vmi-dhcp",
        nets=(
            Net(
                "blue",
                "bridge",
                "kvb-blue",
                "10.81.0.0/24",
                mtu=1400,
                subnet6="fd00:81::/64",
                routes=(("10.99.0.0/16", "10.81.0.2"),),
            ),
            Net("cyan", "bridge", "kvb-blue", "10.85.0.0/24", mtu=1400),
            Net("plain", "bridge", "kvb-plain", None),
        ),
        addressing="dhcp",
    )


def bridge_scenario(count: int) -> Scenario:
    """``count`` bridge networks, each with its own bridge, subnet and peer (benchmark)."""
    return Scenario(
        vmi_name=f"vmi-{count}nic",
        nets=tuple(Net(f"net{i}", "bridge", f"kvb-{i}", f"10.{100 + i}.0.0/24") for i in range(1, count + 1)),
    )


def bridge_nad_config(net: Net, ipam_dir: str | None) -> dict[str, Any]:
    conf: dict[str, Any] = {"cniVersion": "1.0.0", "name": net.nad}
    if net.kind == "bridge":
        conf.update({"type": "bridge", "bridge": net.segment})
        if net.mtu:
            conf["mtu"] = net.mtu
    elif net.kind == "macvlan":
        conf.update({"type": "macvlan", "master": net.segment, "mode": "bridge"})
    else:
        raise InvalidEnvironment(f"network {net.name}: the demo knows bridge and macvlan, not {net.kind!r}")
    if net.subnet:
        subnet = ipaddress.ip_network(net.subnet)
        ranges = [{"subnet": net.subnet, "rangeStart": str(subnet.network_address + 10)}]
        if net.subnet6:
            subnet6 = ipaddress.ip_network(net.subnet6)
            ranges.append({"subnet": net.subnet6, "rangeStart": str(subnet6.network_address + 0x10)})
        ipam: dict[str, Any] = (
            {"type": "host-local", **ranges[0]}
            if len(ranges) == 1
            else {"type": "host-local", "ranges": [[r] for r in ranges]}
        )
        if net.routes:
            ipam["routes"] = [{"dst": dst, "gw": gw} for dst, gw in net.routes]
        if ipam_dir:
            ipam["dataDir"] = ipam_dir
        conf["ipam"] = ipam
    if net.mirror:
        plugin = {k: v for k, v in conf.items() if k not in ("cniVersion", "name")}
        mirror = {"type": "kvnet-mirror", "target": net.mirror, "direction": "both"}
        return {"cniVersion": conf["cniVersion"], "name": conf["name"], "plugins": [plugin, mirror]}
    return conf


def nads(scenario: Scenario, ipam_dir: str | None = None, binding_log: str | None = None) -> list[dict[str, Any]]:
    """The NetworkAttachmentDefinitions: one per network, plus the kvnet binding NAD
    (with its own ``logFile`` at debug level when ``binding_log`` is given)."""
    binding: dict[str, Any] = {"cniVersion": "1.0.0", "name": BINDING_NAD, "type": "kvnet-binding"}
    if binding_log:
        binding.update({"logFile": binding_log, "logLevel": "debug"})
    out = [
        {
            "apiVersion": "k8s.cni.cncf.io/v1",
            "kind": "NetworkAttachmentDefinition",
            "metadata": {"name": n.nad, "namespace": NAMESPACE},
            "spec": {"config": json.dumps(bridge_nad_config(n, ipam_dir))},
        }
        for n in scenario.nets
    ]
    out.append(
        {
            "apiVersion": "k8s.cni.cncf.io/v1",
            "kind": "NetworkAttachmentDefinition",
            "metadata": {"name": BINDING_NAD, "namespace": NAMESPACE},
            "spec": {"config": json.dumps(binding)},
        }
    )
    return out


def vmi(scenario: Scenario, uid: str = "00000000-0000-4000-8000-000000000001") -> dict[str, Any]:
    """The VirtualMachineInstance: every interface bound by kvnet, bonds in the annotation."""
    interfaces = []
    for n in scenario.nets:
        iface: dict[str, Any] = {"name": n.name, "binding": {"name": BINDING_NAME}}
        if n.mac:
            iface["macAddress"] = n.mac
        interfaces.append(iface)
    annotations = {}
    if scenario.bonds:
        annotations[BONDS_ANNOTATION] = json.dumps(
            [
                {
                    "name": b.name,
                    "members": list(b.members),
                    "mode": b.mode,
                    "miimon": b.miimon,
                    "addresses": [b.address],
                }
                for b in scenario.bonds
            ]
        )
    devices: dict[str, Any] = {"interfaces": interfaces}
    spec: dict[str, Any] = {
        "domain": {"devices": devices, "resources": {"requests": {"memory": "256Mi"}}},
        "networks": [{"name": n.name, "multus": {"networkName": n.nad}} for n in scenario.nets],
    }
    if not scenario.dhcp:
        devices["disks"] = [{"name": "cloudinitdisk", "disk": {"bus": "virtio"}}]
        spec["volumes"] = [{"name": "cloudinitdisk", "cloudInitNoCloud": {"userData": "#cloud-config\n"}}]
    return {
        "apiVersion": "kubevirt.io/v1",
        "kind": "VirtualMachineInstance",
        "metadata": {"name": scenario.vmi_name, "namespace": NAMESPACE, "uid": uid, "annotations": annotations},
        "spec": spec,
        "status": {"phase": "Scheduled"},
    }


def networks_annotation(scenario: Scenario) -> list[dict[str, Any]]:
    """What KubeVirt writes for these networks: each attachment (name, namespace, mac,
    interface pod<hash>) followed by the binding plugin's entry (cni-args logicNetworkName)."""
    out: list[dict[str, Any]] = []
    for n in scenario.nets:
        entry: dict[str, Any] = {"name": n.nad, "namespace": NAMESPACE}
        if n.mac:
            entry["mac"] = n.mac
        entry["interface"] = n.pod_iface
        out.append(entry)
        out.append({"name": BINDING_NAD, "namespace": NAMESPACE, "cni-args": {"logicNetworkName": n.name}})
    return out


@dataclass(frozen=True)
class LauncherPodParts:
    """What virt-controller puts in the virt-launcher pod for the VMI's networks: its
    annotations and one hook-sidecar container per name (from ``kubevirt-peer annotation``,
    or :func:`lab_launcher_parts`, the lab's own emulation)."""

    annotations: Mapping[str, str]
    sidecars: tuple[tuple[str, str], ...]  # (container name, image)


SIDECAR_IMAGE = "kvnet-sidecar"


def lab_launcher_parts(scenario: Scenario) -> LauncherPodParts:
    """The lab's emulation of virt-controller's annotations (Go's json.Marshal: compact,
    fields in NetworkSelectionElement order) and its one binding sidecar."""
    value = json.dumps(networks_annotation(scenario), separators=(",", ":"))
    return LauncherPodParts({NETWORKS_ANNOTATION: value}, (("hook-sidecar-0", SIDECAR_IMAGE),))


def peer_launcher_parts(answer: Mapping[str, Any]) -> LauncherPodParts:
    """``kubevirt-peer annotation``'s answer as the pod's parts."""
    sidecars = tuple((str(sc["container"]), str(sc["image"])) for sc in answer.get("hookSidecars") or [])
    return LauncherPodParts(dict(answer.get("annotations") or {}), sidecars)


def kubevirt_cr() -> dict[str, Any]:
    """The KubeVirt CR with kvnet registered as deploy/kubevirt-cr-patch.yaml does (the lab's
    sidecar image name) and emulation on (TCG: no KVM here)."""
    binding = {
        "sidecarImage": SIDECAR_IMAGE,
        "networkAttachmentDefinition": f"{NAMESPACE}/{BINDING_NAD}",
        "downwardAPI": "device-info",
    }
    return {
        "apiVersion": "kubevirt.io/v1",
        "kind": "KubeVirt",
        "metadata": {"name": "kubevirt", "namespace": "kubevirt"},
        "spec": {
            "configuration": {
                "developerConfiguration": {"useEmulation": True},
                "network": {"binding": {BINDING_NAME: binding}},
            }
        },
    }


def vmi_with_interface_status(vmi_obj: Mapping[str, Any], status: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    """The VMI with the ``status.interfaces`` virt-controller reports once the pod's
    network-status is there (``status``: its entries by pod interface): one per VMI
    interface whose pod interface is in it, ``infoSource: multus-status``."""
    out: dict[str, Any] = json.loads(json.dumps(vmi_obj))
    ifaces = []
    for iface in out["spec"]["domain"]["devices"]["interfaces"]:
        pod_iface = naming.hashed_pod_iface(iface["name"])
        if pod_iface in status:
            ifaces.append({"name": iface["name"], "interfaceName": pod_iface, "infoSource": "multus-status"})
    out.setdefault("status", {})["interfaces"] = ifaces
    return out


def launcher_pod(
    scenario: Scenario,
    uid: str = "00000000-0000-4000-8000-000000000002",
    node_name: str | None = None,
    parts: LauncherPodParts | None = None,
) -> dict[str, Any]:
    """The virt-launcher pod; ``node_name`` schedules it (multus-daemon watches only its
    node's pods); ``parts``: virt-controller's annotations and sidecars (default: the lab's)."""
    parts = parts or lab_launcher_parts(scenario)
    pod: dict[str, Any] = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": f"virt-launcher-{scenario.vmi_name}-x7k2p",
            "namespace": NAMESPACE,
            "uid": uid,
            "labels": {"kubevirt.io": "virt-launcher", "vm.kubevirt.io/name": scenario.vmi_name},
            "annotations": dict(parts.annotations),
        },
        "spec": {
            "containers": [
                {"name": "compute", "image": "quay.io/kubevirt/virt-launcher"},
                *({"name": name, "image": image} for name, image in parts.sidecars),
            ]
        },
        "status": {"phase": "Pending"},
    }
    if node_name is not None:
        pod["spec"]["nodeName"] = node_name
    return pod


def example_objects(scenario: Scenario | None = None) -> dict[str, list[dict[str, Any]]]:
    """What ``examples/vm-demo/*.yaml`` hold (the demo's inputs, without run-specific paths)."""
    s = scenario or default_scenario()
    return {"nads.yaml": nads(s), "vmi.yaml": [vmi(s)], "pod.yaml": [launcher_pod(s)]}


# ------------------------------------------------------------------------------------
# Domain XML as virt-launcher hands it to the sidecar (tab-indented, no XML header)
# ------------------------------------------------------------------------------------


def launcher_domain(name: str, uid: str, image: GuestImage, cmdline: str, console_log: Path, channel: Path) -> str:
    """A KubeVirt-shaped domain: type qemu (TCG), q35, ACPI, direct kernel boot, serial
    console to a file and the guest's command channel on a second serial port."""
    root = ET.Element("domain", {"type": "qemu"})
    ET.SubElement(root, "name").text = name
    ET.SubElement(root, "uuid").text = uid
    meta = ET.SubElement(ET.SubElement(root, "metadata"), "kubevirt", {"xmlns": "http://kubevirt.io"})
    ET.SubElement(meta, "uid").text = uid
    ET.SubElement(root, "memory", {"unit": "KiB"}).text = str(256 * 1024)
    ET.SubElement(root, "vcpu", {"placement": "static"}).text = "1"
    os_el = ET.SubElement(root, "os")
    ET.SubElement(os_el, "type", {"arch": "x86_64", "machine": "q35"}).text = "hvm"
    ET.SubElement(os_el, "kernel").text = str(image.kernel)
    ET.SubElement(os_el, "initrd").text = str(image.initrd)
    ET.SubElement(os_el, "cmdline").text = cmdline
    ET.SubElement(ET.SubElement(root, "features"), "acpi")
    ET.SubElement(root, "on_poweroff").text = "destroy"
    ET.SubElement(root, "on_reboot").text = "destroy"
    ET.SubElement(root, "on_crash").text = "destroy"
    devices = ET.SubElement(root, "devices")
    ET.SubElement(devices, "controller", {"type": "usb", "index": "0", "model": "none"})  # as KubeVirt, no USB
    serial = ET.SubElement(devices, "serial", {"type": "file"})
    ET.SubElement(serial, "source", {"path": str(console_log)})
    ET.SubElement(serial, "target", {"port": "0"})
    chan = ET.SubElement(devices, "serial", {"type": "unix"})
    ET.SubElement(chan, "source", {"mode": "bind", "path": str(channel)})
    ET.SubElement(chan, "target", {"port": "1"})
    ET.SubElement(devices, "memballoon", {"model": "none"})
    ET.indent(root, space="\t")
    return ET.tostring(root, encoding="unicode")


@dataclass(frozen=True)
class LabDomainEdits:
    """What the lab adds to the domain KubeVirt's code made (the last OnDefineDomain answer)
    before libvirt gets it: what the converter cannot know here (docs/vm-demo.md)."""

    kernel: Path
    initrd: Path
    cmdline: str  # the guest kernel's command line: the sidecar's network data in it
    console_log: Path  # the serial console's log file, where the lab reads the guest's report
    channel: Path  # the guest's command channel, a second serial port


def edit_converter_domain(domain_xml: str, edits: LabDomainEdits) -> str:
    """The converter's domain as the lab boots it: direct kernel boot in ``<os>`` (KubeVirt
    boots from a disk or ``firmware.kernelBoot`` container), the serial console's ``<log>``
    moved to ``console_log`` (its socket stays KubeVirt's path) and a second serial port for
    the guest's command channel. Everything else stays as KubeVirt's code and the sidecar
    wrote it."""
    root = ET.fromstring(domain_xml)
    os_el = root.find("os")
    devices = root.find("devices")
    if os_el is None or devices is None:
        raise InvalidEnvironment("the converter's domain has no <os> or no <devices>")
    for tag, text in (("kernel", str(edits.kernel)), ("initrd", str(edits.initrd)), ("cmdline", edits.cmdline)):
        for old in os_el.findall(tag):
            os_el.remove(old)
        ET.SubElement(os_el, tag).text = text
    serials = devices.findall("serial")
    console = next((s for s in serials if (t := s.find("target")) is not None and t.get("port") == "0"), None)
    if console is None:
        raise InvalidEnvironment("the converter's domain has no serial port 0 (the guest's console)")
    log = console.find("log")
    if log is None:
        log = ET.SubElement(console, "log", {"append": "on"})
    log.set("file", str(edits.console_log))
    chan = ET.SubElement(devices, "serial", {"type": "unix"})
    ET.SubElement(chan, "target", {"port": "1"})
    ET.SubElement(chan, "source", {"mode": "bind", "path": str(edits.channel)})
    return ET.tostring(root, encoding="unicode")


def converter_paths(domain_xml: str) -> list[str]:
    """The host paths the converter's domain names (disk sources, unix sockets and logs)
    whose folders virt-launcher makes before it defines the domain."""
    root = ET.fromstring(domain_xml)
    paths = [el.get("file", "") for el in root.iter("source")]
    paths += [el.get("path", "") for el in root.iter("source")]
    paths += [el.get("file", "") for el in root.iter("log")]
    paths += [el.get("socket", "") for el in root.iter("listen")]
    return [p for p in paths if p.startswith("/")]


@dataclass(frozen=True)
class DomainNic:
    alias: str
    mac: str
    target: str | None
    mtu: int | None


def domain_nics(domain_xml: str) -> dict[str, DomainNic]:
    """The ``<interface>`` elements of a domain, by VMI interface name (alias ``ua-<name>``)."""
    out: dict[str, DomainNic] = {}
    for iface in ET.fromstring(domain_xml).iter("interface"):
        alias = iface.find("alias")
        mac = iface.find("mac")
        name = naming.alias_interface(alias.get("name") if alias is not None else None)
        if alias is None or mac is None or name is None:
            continue
        target = iface.find("target")
        mtu = iface.find("mtu")
        out[name] = DomainNic(
            alias.get("name", ""),
            mac.get("address", "").lower(),
            target.get("dev") if target is not None else None,
            int(mtu.get("size", "0")) if mtu is not None else None,
        )
    return out


def node_links(scenario: Scenario) -> set[str]:
    """The links the demo itself makes in the node netns: ``lo``, the node bridges (and the
    cluster bridge), the macvlan uplink, the peers' veth ends, the mirror targets and the API link."""
    links = {"lo", "kvc0", "api0", *(n.segment for n in scenario.nets)}
    links |= {name for n in scenario.nets if n.mirror for name in (n.mirror, f"{n.mirror}c")}
    links |= {f"kvp{i}" for i, peer in enumerate(scenario.peers()) if peer.kind == "bridge"}
    return links


# ------------------------------------------------------------------------------------
# A run's files, and what the run hands to kvnet-cni and the sidecar
# ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RunFiles:
    """Where one run keeps its files: all under ``workdir`` (removed after the run)."""

    workdir: Path

    @property
    def bin_dir(self) -> Path:
        return self.workdir / "bin"  # CNI_PATH and binDir

    @property
    def ipam(self) -> Path:
        return self.workdir / "ipam"  # host-local's dataDir

    @property
    def cni_cache(self) -> Path:
        return self.workdir / "cni-cache"

    @property
    def kubeconfig(self) -> Path:
        return self.workdir / "kubeconfig"

    @property
    def cni_log(self) -> Path:
        return self.workdir / "kvnet-cni.log"

    @property
    def binding_log(self) -> Path:
        return self.workdir / "kvnet-binding.log"  # only when the binding runs as its own program

    @property
    def hooks(self) -> Path:
        return self.workdir / "hooks"

    @property
    def network_info(self) -> Path:
        return self.workdir / "network-info"

    @property
    def sidecar_log(self) -> Path:
        return self.workdir / "sidecar.log"

    @property
    def domain_xml(self) -> Path:
        return self.workdir / "domain.xml"

    @property
    def libvirtd(self) -> Path:
        return self.workdir / "libvirtd"

    @property
    def console_log(self) -> Path:
        return self.workdir / "console.log"

    @property
    def channel(self) -> Path:
        return self.workdir / "guest-cmd.sock"  # the guest's command channel (QEMU binds it)


# kvnet-cni, or the real Multus with only kvnet's binding: thin (``multus``), or thick
# (``multus-shim`` to ``multus-daemon`` in the node netns, kvnet/lab/thick.py)
META_PLUGINS = ("kvnet", "multus", "multus-thick")


def cni_config(
    files: RunFiles, *, in_process_binding: bool = True, meta: str = "kvnet", daemon_socket_dir: str | None = None
) -> dict[str, Any]:
    """The meta-plugin config a runtime hands ``kvnet-cni`` (Multus keys, the cluster network
    as the delegate; ``"inProcessBinding": false`` runs kvnet-binding as its own program).
    ``meta="multus"``: the same config for the real Multus, which always runs kvnet-binding
    as its own program; ``meta="multus-thick"``: the same for ``multus-shim``, which hands it
    to ``multus-daemon`` on the socket in ``daemon_socket_dir``."""
    conf: dict[str, Any] = {
        "cniVersion": "1.0.0",
        "name": "kvnet" if meta == "kvnet" else "multus-cni-network",
        "type": "multus-shim" if meta == "multus-thick" else meta,
        "kubeconfig": str(files.kubeconfig),
        "cniDir": str(files.cni_cache),
        "binDir": str(files.bin_dir),
        "confDir": str(files.workdir / "net.d"),
        "logFile": str(files.cni_log),
        "logLevel": "debug",
        "delegates": [
            {
                "cniVersion": "1.0.0",
                "name": "cluster",
                "type": "bridge",
                "bridge": "kvc0",
                "ipam": {
                    "type": "host-local",
                    "subnet": CLUSTER_SUBNET,
                    "rangeStart": "10.80.0.10",
                    "dataDir": str(files.ipam),
                },
            }
        ],
    }
    if not in_process_binding and meta == "kvnet":  # kvnet-binding as its own program, as under Multus
        conf["inProcessBinding"] = False
    if meta == "multus-thick":
        if daemon_socket_dir is None:
            raise InvalidEnvironment("multus-thick needs the daemon's socket folder")
        conf["daemonSocketDir"] = daemon_socket_dir  # multus-shim's key
    return conf


def cni_env(
    command: str, pod: Mapping[str, Any], *, container_id: str, netns: str, cni_path: Path, path: str
) -> dict[str, str]:
    """The ``CNI_*`` environment a runtime sets for ``pod``'s sandbox (``K8S_POD_*`` in CNI_ARGS)."""
    meta = pod["metadata"]
    return {
        "PATH": path,
        "CNI_COMMAND": command,
        "CNI_CONTAINERID": container_id,
        "CNI_NETNS": netns,
        "CNI_IFNAME": "eth0",
        "CNI_PATH": str(cni_path),
        "CNI_ARGS": f"IgnoreUnknown=1;K8S_POD_NAMESPACE={meta['namespace']};K8S_POD_NAME={meta['name']};"
        f"K8S_POD_INFRA_CONTAINER_ID={container_id};K8S_POD_UID={meta['uid']}",
    }


def network_info(scenario: Scenario, status: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    """What KubeVirt's downward API writes to /etc/podinfo/network-info, from network-status
    (``status``: its entries by pod interface), sorted by network."""
    entries = []
    for n in sorted(scenario.nets, key=lambda n: n.name):
        st = status.get(n.pod_iface)
        if st is None:
            continue
        entry: dict[str, Any] = {"network": n.name}
        if st.get("device-info"):
            entry["deviceInfo"] = st["device-info"]
        if st.get("mac"):
            entry["mac"] = st["mac"]
        if st.get("mtu"):
            entry["mtu"] = st["mtu"]
        entries.append(entry)
    return {"interfaces": entries}


def cloud_init_data(scenario: Scenario) -> dict[str, Any]:
    """The noCloud ``cloudInitData`` virt-launcher sends with PreCloudInitIso (the VMI has a
    cloud-init volume)."""
    return {
        "DataSource": "noCloud",
        "NoCloudMetaData": {"instance-id": f"{scenario.vmi_name}.{NAMESPACE}"},
        "UserData": "#cloud-config\n",
        "NetworkData": "",
        "DevicesData": None,
        "VolumeName": "cloudinitdisk",
    }


def domain_name(scenario: Scenario) -> str:
    """The libvirt domain's name, as virt-launcher names it: ``<namespace>_<vmi>``."""
    return f"{NAMESPACE}_{scenario.vmi_name}"


__all__ = [
    "BINDING_NAD",
    "BINDING_NAME",
    "NAMESPACE",
    "SIDECAR_IMAGE",
    "Bond",
    "DomainNic",
    "LabDomainEdits",
    "LauncherPodParts",
    "Net",
    "Peer",
    "RunFiles",
    "Scenario",
    "bridge_nad_config",
    "bridge_scenario",
    "cloud_init_data",
    "cni_config",
    "cni_env",
    "converter_paths",
    "default_scenario",
    "dhcp_scenario",
    "domain_name",
    "domain_nics",
    "edit_converter_domain",
    "example_objects",
    "kubevirt_cr",
    "lab_launcher_parts",
    "launcher_domain",
    "launcher_pod",
    "nads",
    "network_info",
    "networks_annotation",
    "node_links",
    "peer_launcher_parts",
    "vmi",
    "vmi_with_interface_status",
]
