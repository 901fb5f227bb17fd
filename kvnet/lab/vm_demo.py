"""The whole path on one machine: a VM in a pod gets one NIC per attachment.

Driven the way a cluster drives it: the API stand-in holds the virt-launcher pod (its
networks annotation exactly as KubeVirt writes it) and the NADs; ``kvnet-cni`` ADD runs
as a runtime would run it (env + stdin, inside a "node" netns where the node bridges
live) and calls the real reference plugins and ``kvnet-binding``; ``kvnet-sidecar`` runs
in the pod netns and is called over gRPC by a small virt-launcher-like client (Info,
PreCloudInitIso, OnDefineDomain); libvirtd runs in the pod netns and starts the domain
under QEMU (TCG); the test guest reports what it saw on its serial console and pings a
peer on every network. Then the bond fails over, the VM stops, DEL runs, and
:func:`leftovers` proves nothing is left.

Used by ``kvnet demo`` (:func:`run`), the VM test lane (:func:`run_scenario`) and the
boot benchmark. The API stand-in listens in the root netns on a link-local address
reached from the node netns over a veth pair (a process in the node netns cannot reach
the root netns's 127.0.0.1).
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import os
import random
import socket
import subprocess
import sys
import tempfile
import time
import traceback
import uuid
import xml.etree.ElementTree as ET
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import yaml

from kvnet.core import naming
from kvnet.core.errors import InvalidEnvironment, IOFailure, KvnetError
from kvnet.domain.vmi import BONDS_ANNOTATION
from kvnet.lab import console, guest
from kvnet.lab.netns import NetnsLike, make_netns

NAMESPACE = "default"
BINDING_NAME = "kvnet"
BINDING_NAD = "kvnet-binding"
CLUSTER_SUBNET = "10.80.0.0/24"
CNI_PLUGIN_DIRS = ("/usr/lib/cni", "/opt/cni/bin")
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
    vmi_name: str
    nets: tuple[Net, ...]
    bonds: tuple[Bond, ...] = ()

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
        ipam: dict[str, Any] = {
            "type": "host-local",
            "subnet": net.subnet,
            "rangeStart": str(subnet.network_address + 10),
        }
        if net.subnet6:
            subnet6 = ipaddress.ip_network(net.subnet6)
            ipam = {
                "type": "host-local",
                "ranges": [
                    [{"subnet": net.subnet, "rangeStart": str(subnet.network_address + 10)}],
                    [{"subnet": net.subnet6, "rangeStart": str(subnet6.network_address + 0x10)}],
                ],
            }
        if ipam_dir:
            ipam["dataDir"] = ipam_dir
        conf["ipam"] = ipam
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
    return {
        "apiVersion": "kubevirt.io/v1",
        "kind": "VirtualMachineInstance",
        "metadata": {"name": scenario.vmi_name, "namespace": NAMESPACE, "uid": uid, "annotations": annotations},
        "spec": {
            "domain": {
                "devices": {"interfaces": interfaces, "disks": [{"name": "cloudinitdisk", "disk": {"bus": "virtio"}}]},
                "resources": {"requests": {"memory": "256Mi"}},
            },
            "networks": [{"name": n.name, "multus": {"networkName": n.nad}} for n in scenario.nets],
            "volumes": [{"name": "cloudinitdisk", "cloudInitNoCloud": {"userData": "#cloud-config\n"}}],
        },
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


def launcher_pod(scenario: Scenario, uid: str = "00000000-0000-4000-8000-000000000002") -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": f"virt-launcher-{scenario.vmi_name}-x7k2p",
            "namespace": NAMESPACE,
            "uid": uid,
            "labels": {"kubevirt.io": "virt-launcher", "vm.kubevirt.io/name": scenario.vmi_name},
            # Go's json.Marshal: compact, fields in NetworkSelectionElement order
            "annotations": {NETWORKS_ANNOTATION: json.dumps(networks_annotation(scenario), separators=(",", ":"))},
        },
        "spec": {
            "containers": [
                {"name": "compute", "image": "quay.io/kubevirt/virt-launcher"},
                {"name": "hook-sidecar-0", "image": "kvnet-sidecar"},
            ]
        },
        "status": {"phase": "Pending"},
    }


def example_objects(scenario: Scenario | None = None) -> dict[str, list[dict[str, Any]]]:
    """What ``examples/vm-demo/*.yaml`` hold (the demo's inputs, without run-specific paths)."""
    s = scenario or default_scenario()
    return {"nads.yaml": nads(s), "vmi.yaml": [vmi(s)], "pod.yaml": [launcher_pod(s)]}


# ------------------------------------------------------------------------------------
# Domain XML as virt-launcher hands it to the sidecar (tab-indented, no XML header)
# ------------------------------------------------------------------------------------


def launcher_domain(
    name: str, uid: str, image: guest.GuestImage, cmdline: str, console_log: Path, channel: Path
) -> str:
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


# ------------------------------------------------------------------------------------
# Namespaces and commands
# ------------------------------------------------------------------------------------


NetnsFactory = Callable[[str], NetnsLike]


def sh(*cmd: str, check: bool = True, ns: str | None = None) -> subprocess.CompletedProcess[str]:
    """Run a command (in ``ns`` when given); failures become IOFailure with its stderr."""
    argv = ["ip", "netns", "exec", ns, *cmd] if ns else list(cmd)
    done = subprocess.run(argv, capture_output=True, text=True, check=False)
    if check and done.returncode != 0:
        raise IOFailure(f"{' '.join(argv)} failed with status {done.returncode}", (done.stderr or done.stdout).strip())
    return done


def _bin_dir(workdir: Path) -> Path:
    """CNI_PATH/binDir: the reference plugins plus kvnet's own programs, side by side."""
    bindir = workdir / "bin"
    bindir.mkdir()
    plugins = next((Path(d) for d in CNI_PLUGIN_DIRS if Path(d, "bridge").exists()), None)
    if plugins is None:
        raise InvalidEnvironment("reference CNI plugins not installed (apt-get install containernetworking-plugins)")
    for p in plugins.iterdir():
        (bindir / p.name).symlink_to(p)
    here = Path(sys.executable).parent
    for prog in ("kvnet-cni", "kvnet-binding", "kvnet-sidecar"):
        src = here / prog
        if not src.exists():
            raise InvalidEnvironment(f"{prog} is not installed next to {sys.executable} (pip install -e .)")
        (bindir / prog).symlink_to(src)
    return bindir


# ------------------------------------------------------------------------------------
# The result
# ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class NicRow:
    """One line of the final table: what the pod got and what the guest saw."""

    network: str
    kind: str
    domain_mac: str
    guest_name: str | None
    guest_mac: str | None
    domain_mtu: int | None
    guest_mtu: int | None
    ipam_addresses: tuple[str, ...]  # from network-status (bare IPs)
    guest_addresses: tuple[str, ...]  # CIDRs on the guest link (the bond's for members)
    pings: tuple[tuple[str, bool | None], ...]  # (peer IP, result) for this network's peer
    ipam_subnets: tuple[str, ...] = ()  # what the scenario's NAD allocates from, in order (empty: no IPAM)

    def expected_guest_addresses(self) -> tuple[str, ...]:
        """The CIDRs the guest link must carry for this row's IPAM addresses (empty without IPAM)."""
        return tuple(
            f"{ip}/{ipaddress.ip_network(sn).prefixlen}"
            for ip, sn in zip(self.ipam_addresses, self.ipam_subnets, strict=False)
        )

    @property
    def ipam_ok(self) -> bool:
        """network-status has one address from each subnet the NAD allocates from (none when
        it has no IPAM), and those are the guest link's addresses."""
        if len(self.ipam_addresses) != len(self.ipam_subnets):
            return False
        try:
            inside = all(
                ipaddress.ip_address(ip) in ipaddress.ip_network(sn)
                for ip, sn in zip(self.ipam_addresses, self.ipam_subnets, strict=False)
            )
        except ValueError:
            return False
        return inside and (
            not self.ipam_subnets or sorted(self.guest_addresses) == sorted(self.expected_guest_addresses())
        )

    @property
    def ok(self) -> bool:
        return (
            self.guest_mac == self.domain_mac
            and (self.domain_mtu is None or self.guest_mtu == self.domain_mtu)
            and self.ipam_ok
            and bool(self.pings)
            and all(ok is True for _, ok in self.pings)
        )


@dataclass(frozen=True)
class Failover:
    """The active member before, after its link went down, and after failing back (its link
    up again, the other one down), with the pings through the bond after each switch."""

    bond: str
    before: str | None
    after: str | None
    ping_after: bool | None
    back: str | None = None
    ping_back: bool | None = None

    @property
    def ok(self) -> bool:
        return (
            self.before is not None
            and self.after not in (None, self.before)
            and self.ping_after is True
            and self.back == self.before
            and self.ping_back is True
        )


@dataclass
class DemoResult:
    scenario: Scenario
    rows: list[NicRow] = field(default_factory=list)
    failover: Failover | None = None
    timings: dict[str, float] = field(default_factory=dict)
    leftovers: list[str] = field(default_factory=list)
    console_text: str = ""
    guest_errors: list[str] = field(default_factory=list)
    error: str | None = None
    netns: list[str] = field(default_factory=list)  # every netns the run made (all deleted at the end)
    cni_log: str = ""  # the meta-plugin's logFile (debug level)
    binding_log: str = ""  # kvnet-binding's own logFile (only when it runs as a separate program)
    traceback: str = ""  # where an unexpected exception came from

    @property
    def ok(self) -> bool:
        return (
            self.error is None
            and [r.network for r in self.rows] == [n.name for n in self.scenario.nets]
            and all(r.ok for r in self.rows)
            and (self.failover is None or self.failover.ok)
            and not self.leftovers
            and not self.guest_errors
        )

    def console_tail(self, lines: int = 80) -> str:
        kept = self.console_text.splitlines()[-lines:]
        return f"--- guest console (last {len(kept)} lines) ---\n" + "\n".join(kept)

    def explain(self) -> str:
        """Everything a failing assertion should show."""
        parts = [format_table(self)]
        if self.error:
            parts.append(f"error: {self.error}")
        if self.traceback:
            parts.append(self.traceback.rstrip())
        if self.leftovers:
            parts.append("left behind:\n  " + "\n  ".join(self.leftovers))
        if self.guest_errors:
            parts.append("guest errors:\n  " + "\n  ".join(self.guest_errors))
        parts.append(self.console_tail())
        return "\n".join(parts)


def format_table(result: DemoResult) -> str:
    head = ("network", "kind", "guest NIC", "MAC (domain = guest)", "MTU", "IPAM addresses", "guest addresses", "pings")
    rows = [head]
    for r in result.rows:
        mac = r.domain_mac if r.guest_mac == r.domain_mac else f"{r.domain_mac} != {r.guest_mac or '-'}"
        pings = ", ".join(f"{ip} {'-' if ok is None else ('ok' if ok else 'FAIL')}" for ip, ok in r.pings) or "-"
        mtu = (
            str(r.guest_mtu or "-") if r.guest_mtu == r.domain_mtu else f"{r.domain_mtu or '-'} != {r.guest_mtu or '-'}"
        )
        ipam = " ".join(r.ipam_addresses) or "-"
        rows.append(
            (r.network, r.kind, r.guest_name or "MISSING", mac, mtu, ipam, " ".join(r.guest_addresses) or "-", pings)
        )
    widths = [max(len(str(row[i])) for row in rows) for i in range(len(head))]
    lines = ["  ".join(str(c).ljust(w) for c, w in zip(row, widths, strict=False)).rstrip() for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    if result.failover:
        f = result.failover
        verdict = "ok" if f.ok else "FAILED"
        ping = "-" if f.ping_after is None else ("ok" if f.ping_after else "FAIL")
        back = "-" if f.ping_back is None else ("ok" if f.ping_back else "FAIL")
        lines.append(
            f"failover {f.bond}: active {f.before or '-'} -> {f.after or '-'} (ping {ping}) -> back to {f.back or '-'} (ping {back}): {verdict}"
        )
    return "\n".join(lines)


# ------------------------------------------------------------------------------------
# The run
# ------------------------------------------------------------------------------------

Progress = Callable[[str], None]


class _Run:
    """One scenario from node set-up to teardown; every step registers its undo."""

    def __init__(
        self,
        image: guest.GuestImage,
        scenario: Scenario,
        workdir: Path,
        progress: Progress,
        netns_factory: NetnsFactory,
        in_process_binding: bool = True,
    ) -> None:
        self.image = image
        self.in_process_binding = in_process_binding
        self.s = scenario
        self.w = workdir
        self.say = progress
        self.make_ns = netns_factory
        self.result = DemoResult(scenario)
        self.stack = contextlib.ExitStack()
        self.netns_names: list[str] = []
        self.container_id = uuid.uuid4().hex
        self.api_link = f"kvd{uuid.uuid4().hex[:6]}a"
        self.domain_name = f"{NAMESPACE}_{scenario.vmi_name}"
        self.console_log = workdir / "console.log"
        self.channel = workdir / "guest-cmd.sock"
        self.seq = 0
        self.pids: list[int] = []  # long-lived processes whose command line may not name the workdir
        self.chan: socket.socket | None = None  # one connection to the guest's command channel, kept open

    # --- helpers -------------------------------------------------------------------

    def ns(self, prefix: str) -> NetnsLike:
        made = self.make_ns(prefix)
        self.netns_names.append(made.name)
        self.result.netns.append(made.name)
        self.stack.callback(sh, "ip", "netns", "delete", made.name, check=False)
        return made

    def timed(self, key: str, start: float) -> float:
        now = time.monotonic()
        self.result.timings[key] = now - start
        return now

    # --- node, peers, API ------------------------------------------------------------

    def setup_node(self) -> None:
        self.node = self.ns("kvd")
        self.pod = self.ns("kvd")
        node = self.node.name
        segments = {n.segment: n.kind for n in self.s.nets}
        segments["kvc0"] = "bridge"
        for seg, kind in segments.items():
            if kind == "bridge":
                sh("ip", "-n", node, "link", "add", seg, "type", "bridge")
                sh("ip", "-n", node, "link", "set", seg, "up")
        for i, peer in enumerate(self.s.peers()):
            pns = self.ns("kvd")
            if peer.kind == "bridge":
                sh(
                    "ip",
                    "-n",
                    node,
                    "link",
                    "add",
                    f"kvp{i}",
                    "type",
                    "veth",
                    "peer",
                    "name",
                    "eth0",
                    "netns",
                    pns.name,
                )
                sh("ip", "-n", node, "link", "set", f"kvp{i}", "master", peer.segment, "up")
            else:  # macvlan uplink: a veth whose other end is the peer
                sh(
                    "ip",
                    "-n",
                    node,
                    "link",
                    "add",
                    peer.segment,
                    "type",
                    "veth",
                    "peer",
                    "name",
                    "eth0",
                    "netns",
                    pns.name,
                )
                sh("ip", "-n", node, "link", "set", peer.segment, "up")
            for address in peer.addresses:
                sh("ip", "-n", pns.name, "addr", "add", address, "dev", "eth0", "nodad")
            sh("ip", "-n", pns.name, "link", "set", "eth0", "up")
        # runs after CNI DEL (registered later, so undone earlier) and before the netns go
        self.stack.callback(self._check_links)
        self.say(f"node netns {node}, pod netns {self.pod.name}, {len(self.s.peers())} peer netns")

    def _check_links(self) -> None:
        self.result.leftovers += link_leftovers(self.s, self.pod.name, self.node.name)

    def start_api(self) -> None:
        from kvnet.lab.apiserver import ApiStandIn

        base = random.randrange(1, 254) * 256 + random.randrange(0, 64) * 4
        host_ip = str(ipaddress.ip_address("169.254.0.0") + base + 1)
        node_ip = str(ipaddress.ip_address("169.254.0.0") + base + 2)
        sh("ip", "link", "add", self.api_link, "type", "veth", "peer", "name", "api0", "netns", self.node.name)
        self.stack.callback(sh, "ip", "link", "delete", self.api_link, check=False)
        sh("ip", "addr", "add", f"{host_ip}/30", "dev", self.api_link)
        sh("ip", "link", "set", self.api_link, "up")
        sh("ip", "-n", self.node.name, "addr", "add", f"{node_ip}/30", "dev", "api0")
        sh("ip", "-n", self.node.name, "link", "set", "api0", "up")
        self.ipam_dir = self.w / "ipam"
        self.api = ApiStandIn(host_ip, 0)
        self.api.start()
        self.stack.callback(self.api.stop)
        self.pod_obj = launcher_pod(self.s)
        self.vmi_obj = vmi(self.s)
        binding_log = None if self.in_process_binding else str(self.w / "kvnet-binding.log")
        self.api.load([*nads(self.s, str(self.ipam_dir), binding_log), self.pod_obj])
        self.kubeconfig = self.w / "kubeconfig"
        self.api.write_kubeconfig(str(self.kubeconfig))
        self.say(
            f"API stand-in at {self.api.url}: pod {NAMESPACE}/{self.pod_obj['metadata']['name']} and {len(self.s.nets) + 1} NADs"
        )

    # --- CNI -----------------------------------------------------------------------

    def cni_config(self) -> dict[str, Any]:
        conf: dict[str, Any] = {
            "cniVersion": "1.0.0",
            "name": "kvnet",
            "type": "kvnet",
            "kubeconfig": str(self.kubeconfig),
            "cniDir": str(self.w / "cni-cache"),
            "binDir": str(self.bindir),
            "confDir": str(self.w / "net.d"),
            "logFile": str(self.w / "kvnet-cni.log"),
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
                        "dataDir": str(self.ipam_dir),
                    },
                }
            ],
        }
        if not self.in_process_binding:  # kvnet-binding as its own program, as under Multus
            conf["inProcessBinding"] = False
        return conf

    def cni(self, command: str) -> dict[str, Any]:
        meta = self.pod_obj["metadata"]
        env = {
            "PATH": os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin"),
            "CNI_COMMAND": command,
            "CNI_CONTAINERID": self.container_id,
            "CNI_NETNS": self.pod.path,
            "CNI_IFNAME": "eth0",
            "CNI_PATH": str(self.bindir),
            "CNI_ARGS": f"IgnoreUnknown=1;K8S_POD_NAMESPACE={meta['namespace']};K8S_POD_NAME={meta['name']};"
            f"K8S_POD_INFRA_CONTAINER_ID={self.container_id};K8S_POD_UID={meta['uid']}",
        }
        done = subprocess.run(
            ["ip", "netns", "exec", self.node.name, str(self.bindir / "kvnet-cni")],
            input=json.dumps(self.cni_config()),
            env=env,
            capture_output=True,
            text=True,
            check=False,
            timeout=120,
        )
        if done.returncode != 0:
            raise IOFailure(
                f"kvnet-cni {command} failed with status {done.returncode}: {done.stdout.strip()}",
                done.stderr.strip()[-2000:],
            )
        return json.loads(done.stdout) if done.stdout.strip() else {}

    def add(self) -> None:
        self.bindir = _bin_dir(self.w)
        t0 = time.monotonic()
        self.stack.callback(self._del)
        self.cni("ADD")
        self.timed("cni_add", t0)
        pod = self.api.get("pods", NAMESPACE, self.pod_obj["metadata"]["name"]) or {}
        status = json.loads(pod.get("metadata", {}).get("annotations", {}).get(STATUS_ANNOTATION, "[]"))
        self.status = {e.get("interface"): e for e in status}
        self.say(f"kvnet-cni ADD: {len(status)} network-status entries in {self.result.timings['cni_add']:.2f} s")

    def _del(self) -> None:
        t0 = time.monotonic()
        try:
            self.cni("DEL")
        except KvnetError as err:
            self.result.leftovers.append(f"CNI DEL failed: {err.msg} {err.details}")
        self.timed("cni_del", t0)

    # --- sidecar -------------------------------------------------------------------

    def network_info(self) -> dict[str, Any]:
        """What KubeVirt's downward API writes to /etc/podinfo/network-info."""
        entries = []
        for n in sorted(self.s.nets, key=lambda n: n.name):
            st = self.status.get(n.pod_iface)
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

    def start_sidecar(self) -> None:
        t0 = time.monotonic()
        hooks = self.w / "hooks"
        hooks.mkdir()
        info_file = self.w / "network-info"
        info_file.write_text(json.dumps(self.network_info()))
        log = (self.w / "sidecar.log").open("ab")
        self.stack.callback(log.close)
        env = {**os.environ, "NETWORK_BINDING_PLUGIN_NAME": BINDING_NAME, "CONTAINER_NAME": "hook-sidecar-0"}
        proc = subprocess.Popen(
            [
                "ip",
                "netns",
                "exec",
                self.pod.name,
                str(self.bindir / "kvnet-sidecar"),
                "--hooks-dir",
                str(hooks),
                "--name",
                BINDING_NAME,
                "--network-info",
                str(info_file),
                "--network-info-timeout",
                "10",
            ],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=log,
            env=env,
            start_new_session=True,
        )
        self.sidecar = proc
        self.stack.callback(self._stop_sidecar)
        deadline = time.monotonic() + 20
        sock: Path | None = None
        while sock is None:
            sock = next((p for p in hooks.iterdir() if p.is_socket()), None) if hooks.exists() else None
            if proc.poll() is not None:
                raise IOFailure(
                    f"kvnet-sidecar exited with status {proc.returncode} before listening",
                    _tail(self.w / "sidecar.log"),
                )
            if time.monotonic() > deadline:
                raise IOFailure("kvnet-sidecar did not publish its socket within 20 s", _tail(self.w / "sidecar.log"))
            time.sleep(0.02)
        from kvnet.lab.launcher import LauncherClient  # grpc and the generated messages, only when a VM runs

        self.hook = LauncherClient(hooks)  # virt-launcher's hook manager: Info with a 1 s deadline, newest version
        self.hook.collect(1, timeout=max(1.0, deadline - time.monotonic()))
        self.timed("sidecar_start", t0)

    def _hook_errors(self, point: str) -> contextlib.AbstractContextManager[None]:
        """A failed hook call as an ``IOFailure`` naming the sidecar and the hook point."""
        from kvnet.lab.launcher import as_io_failure

        return as_io_failure(point, ", ".join(sc.name for sc in self.hook.sidecars) or BINDING_NAME)

    def _stop_sidecar(self) -> None:
        proc = self.sidecar
        if proc.poll() is None:
            with contextlib.suppress(KvnetError), self._hook_errors("Shutdown"):
                self.hook.shutdown(timeout=5.0)
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.terminate()
                try:
                    proc.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(timeout=5)

    def hooks(self, stay: int) -> None:
        t0 = time.monotonic()
        cloud_init = {
            "DataSource": "noCloud",
            "NoCloudMetaData": {"instance-id": f"{self.s.vmi_name}.{NAMESPACE}"},
            "UserData": "#cloud-config\n",
            "NetworkData": "",
            "DevicesData": None,
            "VolumeName": "cloudinitdisk",
        }
        with self._hook_errors("PreCloudInitIso"):
            answer = self.hook.pre_cloud_init_iso(self.vmi_obj, cloud_init, timeout=30.0)
        text = answer.get("NetworkData") or ""
        try:
            self.network_data: dict[str, Any] = yaml.safe_load(text) if text.strip() else {"version": 2}
        except yaml.YAMLError as err:
            raise IOFailure(f"the sidecar's NetworkData for VMI {self.s.vmi_name} is not YAML: {err}") from None
        peers = [ip for p in self.s.peers() for ip in p.ips]
        self.cmdline = self.image.cmdline(guest.network_cmdline(self.network_data, peers=peers, stay=stay))
        uid = self.vmi_obj["metadata"]["uid"]
        domain = launcher_domain(self.domain_name, uid, self.image, self.cmdline, self.console_log, self.channel)
        with self._hook_errors("OnDefineDomain"):
            self.domain_xml = self.hook.on_define_domain(domain, self.vmi_obj, timeout=30.0)
        self.nics = domain_nics(self.domain_xml)
        (self.w / "domain.xml").write_text(self.domain_xml)
        self.timed("sidecar_hooks", t0)
        self.say(
            f"sidecar: network data for {len(self.network_data.get('ethernets', {}))} ethernets, "
            f"{len(self.network_data.get('bonds', {}))} bonds; domain has {len(self.nics)} kvnet NICs"
        )

    # --- libvirt and the guest ---------------------------------------------------------

    def boot(self) -> None:
        from kvnet.lab.libvirtd import Libvirtd

        t0 = time.monotonic()
        self.libvirtd = Libvirtd(str(self.w / "libvirtd"), netns=self.pod.name)
        self.libvirtd.start()
        self.stack.callback(self.libvirtd.stop)
        with contextlib.suppress(OSError, ValueError):
            self.pids.append(int((self.w / "libvirtd" / "run" / "libvirtd.pid").read_text().split()[0]))
        self.stack.callback(self._check_domains)
        self.timed("libvirtd_start", t0)
        t1 = time.monotonic()
        self.libvirtd.define_validate(self.domain_xml)
        self.stack.callback(self.libvirtd.undefine, self.domain_name)
        self.libvirtd.start_domain(self.domain_name)
        t2 = self.timed("define_start", t1)
        self.say(
            f"domain {self.domain_name} defined and started in the pod netns ({self.result.timings['define_start']:.2f} s)"
        )
        want = len(self.s.nets)
        report = console.wait_for(self.console_log, lambda r: r.has("nics"), 90, alive=self._domain_alive)
        if report is None:
            raise IOFailure(f"guest did not report its NICs within 90 s (domain {self.domain_name})")
        self.timed("guest_nics", t2)
        self.result.timings["add_to_nics"] = time.monotonic() - self.t_start
        self.say(
            f"guest up: {len(report.nics)}/{want} NICs reported {self.result.timings['guest_nics']:.2f} s after start"
        )

    def _domain_alive(self) -> bool:
        done = self.libvirtd.virsh("domstate", self.domain_name, check=False)
        return done.returncode == 0 and "running" in done.stdout

    def _check_domains(self) -> None:
        done = self.libvirtd.virsh("list", "--all", "--name", check=False)
        names = [n for n in done.stdout.split() if n]
        if names:
            self.result.leftovers.append(f"libvirt domains still defined: {', '.join(names)}")

    def command(self, cmd: str, timeout: float = 30) -> console.GuestReport:
        """Send a line on the guest's command channel and wait for its ``done`` line."""
        self.seq += 1
        seq = str(self.seq)
        if self.chan is None:
            self.chan = socket.socket(socket.AF_UNIX)
            self.stack.callback(self.chan.close)
            self.chan.connect(str(self.channel))
        self.chan.sendall(f"{cmd} {seq}\n".encode())
        report = console.wait_for(self.console_log, lambda r: r.has("done", seq=seq), timeout, alive=self._domain_alive)
        if report is None:
            raise IOFailure(f"guest did not answer {cmd!r} within {timeout:.0f} s")
        return report

    def observe(self) -> console.GuestReport:
        report = console.wait_for(
            self.console_log, lambda r: r.has("ready") or r.has("poweroff"), 90, alive=self._domain_alive
        )
        if report is None:
            raise IOFailure("guest did not finish configuring and pinging within 90 s")
        self.result.guest_errors = [
            " ".join([e.kind, *(f"{k}={v}" for k, v in e.fields.items())]) for e in report.errors
        ]
        for n in self.s.nets:
            dn = self.nics.get(n.name)
            domain_mac = dn.mac if dn else "-"
            seen = any(nic.mac == domain_mac for nic in report.nics)
            # set-name gives the link the VMI interface name; bond members take the bond's MAC
            link = report.links.get(n.name) or (report.link_by_mac(domain_mac) if dn else None)
            st = self.status.get(n.pod_iface) or {}
            ips = st.get("ips") or []
            bond = self.s.bond_of(n.name)
            peer = self.s.expected_peer(n.name)
            if bond is not None:
                bond_link = report.links.get(bond.name)
                guest_addrs = bond_link.addrs if bond_link else ()
            else:
                guest_addrs = link.addrs if link else ()
            self.result.rows.append(
                NicRow(
                    network=n.name,
                    kind=n.kind + (f" ({bond.name})" if bond else ""),
                    domain_mac=domain_mac,
                    guest_name=link.name if link and seen else None,
                    guest_mac=domain_mac if seen else None,
                    domain_mtu=dn.mtu if dn else None,
                    guest_mtu=link.mtu if link and seen else None,
                    ipam_addresses=tuple(ips),
                    guest_addresses=guest_addrs,
                    pings=tuple((ip, report.last_ping(ip)) for ip in (peer.ips if peer else ())),
                    ipam_subnets=tuple(sn for sn in (n.subnet, n.subnet6) if sn) if n.subnet else (),
                )
            )
        return report

    def fail_over(self, report: console.GuestReport) -> None:
        for bond in self.s.bonds:
            state = report.bonds.get(bond.name)
            before = state.active if state else None
            peer = self.s.expected_peer(bond.members[0])
            if before is None or before not in self.nics:
                self.result.failover = Failover(bond.name, before, None, None)
                continue
            ips = peer.ips if peer else ()
            target = self.nics[before].target or self.nics[before].mac
            self.libvirtd.virsh("domif-setlink", self.domain_name, target, "down")
            self.say(f"failover: {bond.name} active member {before}; virsh domif-setlink {target} down")
            after, ping = self._switched(bond.name, before, ips)
            self.result.failover = Failover(bond.name, before, after, ping)
            self.say(
                f"failover: {bond.name} now on {after or '-'}, ping {' '.join(ips) or '-'}: {'ok' if ping else 'FAIL'}"
            )
            if after is None or after == before or after not in self.nics:
                continue
            other = self.nics[after].target or self.nics[after].mac
            self.libvirtd.virsh("domif-setlink", self.domain_name, target, "up")
            time.sleep(3 * bond.miimon / 1000)  # let miimon see the link come back
            self.libvirtd.virsh("domif-setlink", self.domain_name, other, "down")
            back, ping_back = self._switched(bond.name, after, ips)
            self.result.failover = Failover(bond.name, before, after, ping, back, ping_back)
            self.say(
                f"failback: {other} down, {target} up: {bond.name} on {back or '-'}, ping: {'ok' if ping_back else 'FAIL'}"
            )

    def _switched(self, bond: str, old: str, ips: Sequence[str]) -> tuple[str | None, bool | None]:
        """Ask the guest until the bond's active member is not ``old`` (20 s); then the pings."""
        deadline = time.monotonic() + 20
        active: str | None = old
        report: console.GuestReport | None = None
        while time.monotonic() < deadline:
            report = self.command("status")
            now = report.bonds.get(bond)
            active = now.active if now else None
            if active not in (None, old):
                break
            time.sleep(0.2)
        results = [report.last_ping(ip) for ip in ips] if report else []
        return active, (all(results) if results else None)

    def power_off(self) -> None:
        with contextlib.suppress(KvnetError, OSError):
            self.command("poweroff", timeout=10)
        deadline = time.monotonic() + 20
        while self._domain_alive() and time.monotonic() < deadline:
            time.sleep(0.1)
        if self._domain_alive():
            self.libvirtd.destroy_domain(self.domain_name)
            self.say("guest did not power off; domain destroyed")
        else:
            self.say("guest powered off")

    # --- driver ----------------------------------------------------------------------

    def run(self, *, failover: bool, stay: int) -> DemoResult:
        try:
            with self.stack:
                self.setup_node()
                self.start_api()
                self.t_start = time.monotonic()
                self.add()
                self.start_sidecar()
                self.hooks(stay)
                self.boot()
                report = self.observe()
                if failover and self.s.bonds:
                    self.fail_over(report)
                self.power_off()
                self.result.console_text = console.read_text(self.console_log)
        except KvnetError as err:
            self.result.error = f"{type(err).__name__}: {err.msg}" + (f"\n{err.details}" if err.details else "")
            self.result.traceback = traceback.format_exc()
        except Exception as err:  # any failure keeps the console log and runs the leftovers check
            self.result.error = f"{type(err).__name__}: {err}"
            self.result.traceback = traceback.format_exc()
        if not self.result.console_text:
            self.result.console_text = console.read_text(self.console_log)
        self.result.cni_log = console.read_text(self.w / "kvnet-cni.log")
        self.result.binding_log = console.read_text(self.w / "kvnet-binding.log")
        self.result.leftovers.extend(leftovers(self.w, self.netns_names, [self.api_link], self.container_id, self.pids))
        return self.result


def _tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def node_links(scenario: Scenario) -> set[str]:
    """The links the demo itself makes in the node netns: ``lo``, the node bridges (and the
    cluster bridge), the macvlan uplink, the peers' veth ends and the API link."""
    links = {"lo", "kvc0", "api0", *(n.segment for n in scenario.nets)}
    links |= {f"kvp{i}" for i, peer in enumerate(scenario.peers()) if peer.kind == "bridge"}
    return links


def link_leftovers(scenario: Scenario, pod_ns: str, node_ns: str) -> list[str]:
    """Links left after CNI DEL: the pod netns may hold only ``lo``, the node netns only
    what the demo made itself (:func:`node_links`). Run before the netns are deleted."""
    found: list[str] = []
    for ns, kept, where in ((pod_ns, {"lo"}, "pod"), (node_ns, node_links(scenario), "node")):
        done = sh("ip", "-n", ns, "-j", "link", "show", check=False)
        try:
            if done.returncode != 0:
                raise ValueError(done.stderr.strip())
            names = [str(link["ifname"]) for link in json.loads(done.stdout or "[]")]
        except (ValueError, KeyError, TypeError) as err:
            found.append(f"links in the {where} netns {ns} could not be listed: {err}")
            continue
        found += [f"link {name} in the {where} netns {ns}" for name in names if name not in kept]
    return found


def leftovers(
    workdir: Path, netns_names: Sequence[str], root_links: Sequence[str], container_id: str, pids: Sequence[int] = ()
) -> list[str]:
    """What a run left behind: netns, root links, IP leases, cache files, processes."""
    found: list[str] = []
    found += [f"process {pid} (libvirtd) still running" for pid in pids if Path(f"/proc/{pid}").exists()]
    listed = sh("ip", "netns", "list", check=False).stdout.split()
    found += [f"netns {n}" for n in netns_names if n in listed]
    for link in root_links:
        if sh("ip", "link", "show", link, check=False).returncode == 0:
            found.append(f"link {link} in the root netns")
    ipam = workdir / "ipam"
    if ipam.exists():
        for f in ipam.rglob("*"):
            if f.is_file() and f.name != "lock" and not f.name.startswith("last_reserved_ip"):
                found.append(f"lease {f.relative_to(workdir)}")
    cache = workdir / "cni-cache"
    if cache.exists():
        found += [f"cache file {f.relative_to(workdir)}" for f in cache.rglob("*") if f.is_file()]
    for results in (Path("/var/lib/cni/results"), cache / "results"):
        if results.exists():
            found += [f"cache file {f}" for f in results.iterdir() if container_id in f.name]
    me = os.getpid()
    marker = str(workdir).encode()
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or int(proc.name) == me:
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes()
        except OSError:
            continue
        if marker in cmdline:
            text = cmdline.replace(b"\x00", b" ").decode(errors="replace")[:120]
            found.append(f"process {proc.name}: {text}")
    return found


def run_scenario(
    guest_dir: str | Path,
    scenario: Scenario | None = None,
    *,
    progress: Progress | None = None,
    failover: bool = True,
    stay: int = 120,
    netns_factory: NetnsFactory | None = None,
    keep_workdir: bool = False,
    in_process_binding: bool = True,
) -> DemoResult:
    """Run the whole path once and return what happened (never raises for a failed step:
    the error, the console log and any leftovers are in the result).

    ``in_process_binding=False`` puts ``"inProcessBinding": false`` in the kvnet-cni config,
    so each ``kvnet-binding`` delegate runs as its own program (what Multus users get); the
    binding NAD then has its own ``logFile``, read into ``DemoResult.binding_log``."""
    if os.geteuid() != 0:
        raise InvalidEnvironment("the VM demo needs root (network namespaces, libvirtd)")
    image = guest.load(Path(guest_dir))
    scenario = scenario or default_scenario()
    say = progress or (lambda _msg: None)
    workdir = Path(tempfile.mkdtemp(prefix="kvnet-vm-"))
    try:
        run_ = _Run(image, scenario, workdir, say, netns_factory or make_netns, in_process_binding=in_process_binding)
        return run_.run(failover=failover, stay=stay)
    finally:
        if not keep_workdir:
            subprocess.run(["rm", "-rf", str(workdir)], check=False)


def run(guest_dir: str | Path, out: TextIO = sys.stderr) -> int:
    """``kvnet demo``'s VM half: progress lines, the guest's NIC table, the failover, 0 on success."""
    start = time.monotonic()

    def say(msg: str) -> None:
        print(f"[{time.monotonic() - start:6.1f}s] {msg}", file=out, flush=True)

    say("VM demo: a VM in a pod gets one NIC per attachment (real plugins, libvirtd, QEMU TCG)")
    try:
        result = run_scenario(guest_dir, progress=say)
    except KvnetError as err:
        print(f"VM demo cannot run: {err.msg}", file=out)
        return 1
    print("", file=out)
    print(format_table(result), file=out)
    t = result.timings
    if "add_to_nics" in t:
        print(
            f"\nCNI ADD {t.get('cni_add', 0):.2f} s, sidecar {t.get('sidecar_start', 0) + t.get('sidecar_hooks', 0):.2f} s, "
            f"define+start {t.get('define_start', 0):.2f} s, guest boot to NIC report {t.get('guest_nics', 0):.2f} s "
            f"(ADD to NICs {t['add_to_nics']:.2f} s)",
            file=out,
        )
    if result.error:
        print(f"\nerror: {result.error}", file=out)
    if result.traceback and not result.ok:
        print(result.traceback.rstrip(), file=out)
    if result.leftovers:
        print("left behind:\n  " + "\n  ".join(result.leftovers), file=out)
    else:
        print("teardown: nothing left (netns, links, leases, cache files, domains, processes)", file=out)
    if not result.ok:
        print(result.console_tail(40), file=out)
    print(f"VM demo {'passed' if result.ok else 'FAILED'} in {time.monotonic() - start:.0f} s", file=out)
    return 0 if result.ok else 1


__all__ = [
    "Bond",
    "DemoResult",
    "Net",
    "Scenario",
    "bridge_scenario",
    "default_scenario",
    "example_objects",
    "format_table",
    "launcher_domain",
    "leftovers",
    "link_leftovers",
    "node_links",
    "run",
    "run_scenario",
]
