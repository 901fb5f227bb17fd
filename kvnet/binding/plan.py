"""``kvnet-binding``: plumb one pod interface of a virt-launcher pod for the VM.

KubeVirt adds the binding NAD right after the attachment's own entry, so this plugin
runs as an independent delegate after the attachment's plugin: no ``prevResult``, an
``CNI_IFNAME`` of ``net<N>`` that is not its interface, and ``args.cni.logicNetworkName``
naming the VMI network. It finds the pod interface itself (``pod<hash>``, or the older
``net<N>``), reads it, computes the desired plumbing (a pure :func:`plan`), logs it once
and applies it with an undo for every step:

- bridge mode (veth and most kinds): in-pod bridge ``k6t-<x>`` with the pod link and
  ``tap<x>`` as ports; the pod link takes a new locally administered MAC (the guest takes
  the original one) and gives up its IPAM addresses and routes;
- redirect mode (macvlan, ipvlan: their lower device delivers only the link's own MAC):
  tc ingress + mirred redirect both ways between the pod link and ``tap<x>``; no bridge,
  no MAC change; addresses and routes removed the same way;
- a pod link that is a macvtap or a tap already: nothing;
- no pod link: nothing, unless the conf names an SR-IOV VF (``deviceID``, as Multus passes
  it): a VF bound to ``vfio-pci`` has no netdev (the VM takes the PCI device), a VF with a
  kernel driver must have its netdev in the pod, so its absence is an error.

The original MAC, MTU, addresses, gateways and routes are kept in the pod link's ifalias
as a binding record (``kvnet.core.bindrecord``) for the sidecar, and for DEL to restore.
The pod each plan leaves is a ``kvnet.core.plumbing`` value (``DesiredPlumbing.after``): its
names, MACs and mode rule are the ones ``kvnet render`` and the lab's fake pod assume.
"""

from __future__ import annotations

import ipaddress
import logging
import re
from collections.abc import Callable, Mapping
from contextlib import AbstractContextManager, ExitStack
from dataclasses import dataclass
from typing import Any, Protocol

from kvnet.binding import sriov
from kvnet.binding.netlink import AddressState, LinkState, NetnsMissing, RouteState, open_netns
from kvnet.core import bindrecord
from kvnet.core.errors import DecodeFailure, DeviceError, InvalidConfig, KvnetError, NetlinkFailure
from kvnet.core.model import BindingRecord, GuestIpConfig
from kvnet.core.naming import bridge_name, hashed_pod_iface, ifname_problem, tap_name
from kvnet.core.naming import swapped_mac as swapped_mac  # where callers have always found it
from kvnet.core.plumbing import MODES, BridgedTap, Macvtap, Plumbing, VfioVf, tap_plumbing

log = logging.getLogger("kvnet.binding")

DEFAULT_TAP_OWNER = 107  # the qemu user of virt-launcher
DIRECT_KINDS = frozenset({"macvtap", "tun"})  # the VM uses the pod link itself
RTPROT_KERNEL = 2


class PlumbingDrift(NetlinkFailure):
    """CHECK: the pod netns is not plumbed as ADD left it."""


# ------------------------------------------------------------------------------------
# What the binding needs from netlink (kvnet.binding.netlink.PodNetns is the real one)
# ------------------------------------------------------------------------------------


class PodNetlink(Protocol):
    """The netlink operations the binding uses, on one open netns."""

    def link(self, name: str) -> LinkState | None: ...
    def link_names(self) -> tuple[str, ...]: ...
    def addresses(self, name: str) -> tuple[AddressState, ...]: ...
    def routes(self, name: str) -> tuple[RouteState, ...]: ...
    def tc_redirect_target(self, name: str) -> str | None: ...
    def create_bridge(self, name: str, *, mtu: int) -> None: ...
    def create_tap(self, name: str, *, owner_uid: int, owner_gid: int, multi_queue: bool, mtu: int) -> None: ...
    def set_master(self, name: str, master: str | None) -> None: ...
    def learning(self, name: str) -> bool | None: ...
    def set_learning(self, name: str, learning: bool) -> None: ...
    def set_mac(self, name: str, mac: str) -> None: ...
    def set_up(self, name: str, up: bool = True) -> None: ...
    def set_alias(self, name: str, alias: str) -> None: ...
    def add_address(self, name: str, cidr: str) -> None: ...
    def remove_address(self, name: str, cidr: str) -> None: ...
    def add_route(self, name: str, route: RouteState) -> None: ...
    def remove_route(self, name: str, route: RouteState) -> None: ...
    def delete_link(self, name: str) -> None: ...
    def tc_redirect(self, name: str, to: str) -> None: ...
    def clear_tc(self, name: str) -> None: ...


NetnsOpener = Callable[[str], AbstractContextManager[PodNetlink]]


class Request(Protocol):
    """The part of ``kvnet.cni.protocol.CniRequest`` the binding reads."""

    @property
    def container_id(self) -> str: ...
    @property
    def netns(self) -> str: ...
    @property
    def ifname(self) -> str: ...
    @property
    def config(self) -> Mapping[str, Any]: ...


# ------------------------------------------------------------------------------------
# Config and desired state (plain data)
# ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class BindingConfig:
    """The binding NAD's conf: ``mode``, ``multiQueue``, ``tapOwner``, ``logFile``, ``logLevel``.

    ``device_id`` is the SR-IOV VF of the attachment when the runtime passes one
    (``runtimeConfig.deviceID``, else the top-level ``deviceID``); ``sysfs_root`` is where
    its sysfs tree is read (``sysfsRoot``, ``/`` unless a test or the demo points elsewhere).
    """

    mode: str = "auto"
    multi_queue: bool = False
    tap_uid: int = DEFAULT_TAP_OWNER
    tap_gid: int = DEFAULT_TAP_OWNER
    log_file: str | None = None
    log_level: str = "error"
    device_id: str | None = None
    sysfs_root: str = "/"

    @classmethod
    def parse(cls, conf: Mapping[str, Any]) -> BindingConfig:
        """Read the keys from a CNI conf; unknown keys are ignored, bad values refused."""
        where = f"binding conf {conf.get('name')!r}"
        mode = conf.get("mode", "auto")
        if mode not in MODES:
            raise InvalidConfig(f"{where}: mode {mode!r} is not one of {', '.join(MODES)}")
        multi_queue = conf.get("multiQueue", False)
        if not isinstance(multi_queue, bool):
            raise InvalidConfig(f"{where}: multiQueue must be true or false, got {multi_queue!r}")
        owner = conf.get("tapOwner", {})
        if not isinstance(owner, Mapping):
            raise InvalidConfig(f'{where}: tapOwner must be an object like {{"uid": 107, "gid": 107}}')
        ids = {}
        for key in ("uid", "gid"):
            value = owner.get(key, DEFAULT_TAP_OWNER)
            if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value < 2**32 - 1:
                raise InvalidConfig(f"{where}: tapOwner.{key} must be a non-negative integer, got {value!r}")
            ids[key] = value
        log_file = conf.get("logFile")
        if log_file is not None and (not isinstance(log_file, str) or not log_file):
            raise InvalidConfig(f"{where}: logFile must be a path, got {log_file!r}")
        level = conf.get("logLevel", "error")
        if level not in ("debug", "verbose", "error", "panic"):
            raise InvalidConfig(f"{where}: logLevel {level!r} is not one of debug, verbose, error, panic")
        root = conf.get("sysfsRoot", "/")
        if not isinstance(root, str) or not root.startswith("/"):
            raise InvalidConfig(f"{where}: sysfsRoot must be an absolute path, got {root!r}")
        return cls(mode, multi_queue, ids["uid"], ids["gid"], log_file, level, device_id(conf), root)


def device_id(conf: Mapping[str, Any]) -> str | None:
    """The SR-IOV device Multus hands to a delegate, or None.

    Multus sets the top-level ``deviceID`` (and ``pciBusID``) in the conf of a NAD with a
    ``resourceName``, and ``runtimeConfig.deviceID`` for a plugin that declares the
    ``deviceID`` capability (the ID from the resource map, or the networks-annotation
    element's ``deviceID``). The per-call ``runtimeConfig`` wins over the conf.
    """
    where = f"binding conf {conf.get('name')!r}"
    rc = conf.get("runtimeConfig")
    candidates = [
        ("runtimeConfig.deviceID", rc.get("deviceID") if isinstance(rc, Mapping) else None),
        ("deviceID", conf.get("deviceID")),
    ]
    for key, value in candidates:
        if value is None or value == "":
            continue
        if not isinstance(value, str):
            raise InvalidConfig(f"{where}: {key} must be a PCI address string, got {value!r}")
        return value
    return None


@dataclass(frozen=True)
class ObservedPodLink:
    """The pod interface as read before planning: the link, its addresses and routes."""

    link: LinkState
    addresses: tuple[AddressState, ...] = ()
    routes: tuple[RouteState, ...] = ()


@dataclass(frozen=True)
class TapSpec:
    """The tap the VM's ``<interface type="ethernet">`` targets."""

    name: str
    mtu: int
    owner_uid: int
    owner_gid: int
    multi_queue: bool


@dataclass(frozen=True)
class DesiredPlumbing:
    """What the pod netns should look like for one attachment.

    ``mode`` is ``bridge``, ``redirect`` or ``none``; ``reason`` says why. ``pod_mac`` is
    the MAC the pod link ends with; ``record`` is what its ifalias carries. ``after`` is the
    pod after ADD as the sidecar will read it (``kvnet.core.plumbing``), the value ``bridge``,
    ``pod_mac`` and the tap's name are taken from; None when the binding cannot tell (no
    pod link and no ``deviceID``, or a tap the VM is to use as it is).
    """

    network: str
    pod_iface: str
    mode: str
    reason: str
    record: BindingRecord | None = None
    tap: TapSpec | None = None
    bridge: str | None = None
    pod_mac: str | None = None
    after: Plumbing | None = None
    server_tap: str | None = None  # the guest-address server's tap (bridge mode with IPAM)

    def describe(self) -> str:
        if self.mode == "none":
            return f"network {self.network} ({self.pod_iface}): nothing to do: {self.reason}"
        assert self.tap is not None and self.record is not None
        parts = [
            f"network {self.network} ({self.pod_iface}): {self.mode} mode ({self.reason})",
            f"tap {self.tap.name} mtu {self.tap.mtu} owner {self.tap.owner_uid}:{self.tap.owner_gid}"
            f"{' multi-queue' if self.tap.multi_queue else ''}",
        ]
        if self.bridge:
            parts.append(f"bridge {self.bridge}, pod MAC {self.record.original_mac} -> {self.pod_mac}")
        if self.server_tap:
            parts.append(f"guest-address server tap {self.server_tap}")
        parts.append(
            f"guest MAC {self.record.original_mac}, addresses {list(self.record.ip.addresses)} moved to the record"
        )
        return "; ".join(parts)


# ------------------------------------------------------------------------------------
# Pure functions
# ------------------------------------------------------------------------------------


def logic_network_name(conf: Mapping[str, Any]) -> str:
    """``args.cni.logicNetworkName`` of the stdin conf (set from the selection's cni-args)."""
    args = conf.get("args")
    cni = args.get("cni") if isinstance(args, Mapping) else None
    name = cni.get("logicNetworkName") if isinstance(cni, Mapping) else None
    if not isinstance(name, str) or not name:
        raise InvalidConfig(
            f"binding conf {conf.get('name')!r}: args.cni.logicNetworkName is missing; KubeVirt sets it"
            " in the cni-args of the binding NAD's networks-annotation entry"
        )
    return name


def find_pod_iface(link_names: tuple[str, ...] | list[str], network: str, cni_ifname: str = "") -> str:
    """The pod interface of ``network``: ``pod<hash>``, else the ordinal ``net<N>``.

    KubeVirt puts the binding entry right after the attachment's, so when the netns has
    no hashed link, the attachment is the ``net<N-1>`` before this plugin's ``net<N>``.
    """
    hashed = hashed_pod_iface(network)
    if hashed in link_names:
        return hashed
    m = re.fullmatch(r"net(\d+)", cni_ifname or "")
    if m and int(m[1]) > 1 and f"net{int(m[1]) - 1}" in link_names:
        return f"net{int(m[1]) - 1}"
    return hashed


def _is_default(dst: str) -> bool:
    return dst in ("0.0.0.0/0", "::/0")


def _kept_route(route: RouteState) -> bool:
    """Routes the record keeps: not the kernel's connected ones, not IPv6 link-local/multicast."""
    if route.proto == RTPROT_KERNEL:
        return False
    net = ipaddress.ip_network(route.dst, strict=False)
    return not (net.version == 6 and (net.is_link_local or net.is_multicast))


def _global(addresses: tuple[AddressState, ...]) -> tuple[str, ...]:
    return tuple(a.cidr for a in addresses if a.scope == 0 and not ipaddress.ip_interface(a.cidr).is_link_local)


def record_from(observed: ObservedPodLink) -> BindingRecord:
    """The record of a pod link not yet bound: its MAC, MTU, addresses and routes."""
    routes = [r for r in observed.routes if _kept_route(r)]
    gateways = tuple(dict.fromkeys(r.gateway for r in routes if _is_default(r.dst) and r.gateway))
    others = tuple((r.dst, r.gateway or "") for r in routes if not _is_default(r.dst))
    return BindingRecord(
        original_mac=observed.link.mac.lower(),
        mtu=observed.link.mtu,
        ip=GuestIpConfig(_global(observed.addresses), gateways, others),
    )


def plan(
    observed: ObservedPodLink | None,
    network: str,
    config: BindingConfig,
    *,
    pod_iface: str,
    vf: sriov.VfInfo | None = None,
) -> DesiredPlumbing:
    """The desired plumbing for one attachment, from what the pod link looks like. Pure.

    A pod link that already carries a kvnet record (a repeated ADD) is planned from the
    record, so the plan is the same before and after ADD. ``vf`` is the SR-IOV VF the
    conf's ``deviceID`` names, as sysfs shows it (read only when the pod link is absent).
    """
    if observed is None:
        if vf is None:
            return DesiredPlumbing(network, pod_iface, "none", f"no pod link {pod_iface} (a VFIO VF, or no netdev)")
        if vf.is_vfio:
            return DesiredPlumbing(
                network,
                pod_iface,
                "none",
                f"VFIO VF {vf.address}: nothing to plumb",
                after=VfioVf(pod_iface, vf.address),
            )
        where = f"SR-IOV VF {vf.address} (deviceID)"
        if vf.driver is None:
            raise InvalidConfig(
                f"network {network}: {where} is bound to no driver: it has no netdev for the pod link {pod_iface}"
                " and no VM can take it (bind it to vfio-pci for a PCI hostdev)"
            )
        netdev = f"{', '.join(vf.netdevs)}, still on the node" if vf.netdevs else "not on the node either"
        raise InvalidConfig(
            f"network {network}: {where} is bound to {vf.driver}, not vfio-pci, but its netdev ({netdev}) is not"
            f" in the pod as {pod_iface}: the attachment's plugin did not move it there (or bind the VF to vfio-pci"
            " for a PCI hostdev)"
        )
    link = observed.link
    if link.kind in DIRECT_KINDS:
        direct = Macvtap(pod_iface, link.mac, link.mtu) if link.kind == "macvtap" else None
        return DesiredPlumbing(
            network, pod_iface, "none", f"pod link {pod_iface} is a {link.kind}: the VM uses it directly", after=direct
        )
    if link.kind == "bridge":
        raise InvalidConfig(f"network {network}: pod interface {pod_iface} is a bridge; kvnet-binding cannot bind it")
    try:
        record = bindrecord.decode(link.alias)
    except DecodeFailure as err:
        raise DecodeFailure(f"network {network}: pod interface {pod_iface}: {err.msg}") from None
    if record is None and link.alias.strip():
        raise InvalidConfig(
            f"network {network}: pod interface {pod_iface} already carries an ifalias not written by kvnet"
            f" ({link.alias!r}); kvnet-binding keeps its record there"
        )
    if record is None:
        record = record_from(observed)
        try:
            bindrecord.encode(record)
        except InvalidConfig as err:
            raise InvalidConfig(f"network {network}: pod interface {pod_iface}: {err.msg}") from None
    after = tap_plumbing(pod_iface, record, link.kind, mode=config.mode, multi_queue=config.multi_queue)
    reason = f"auto for a {link.kind or 'physical'} pod link" if config.mode == "auto" else "set in the binding conf"
    tap = TapSpec(after.tap, record.mtu, config.tap_uid, config.tap_gid, config.multi_queue)
    problem = ifname_problem(tap.name)
    if problem:
        raise InvalidConfig(f"network {network}: cannot name the tap for {pod_iface}: {problem}")
    bridge = after.bridge if isinstance(after, BridgedTap) else None
    server = bindrecord.server_tap_name(pod_iface) if bridge and record.ip.addresses else None
    return DesiredPlumbing(network, pod_iface, after.mode, reason, record, tap, bridge, after.pod_mac, after, server)


# ------------------------------------------------------------------------------------
# The CNI commands
# ------------------------------------------------------------------------------------


def _observe(ns: PodNetlink, pod_iface: str) -> ObservedPodLink | None:
    link = ns.link(pod_iface)
    if link is None:
        return None
    return ObservedPodLink(link, ns.addresses(pod_iface), ns.routes(pod_iface))


def _discover(network: str, config: BindingConfig) -> sriov.VfInfo | None:
    """The VF named by ``deviceID`` as sysfs shows it; None without a ``deviceID``."""
    if config.device_id is None:
        return None
    try:
        return sriov.discover_vf(config.device_id, root=config.sysfs_root)
    except DeviceError as err:
        raise DeviceError(f"network {network}: deviceID {config.device_id!r}: {err.msg}") from None


def _prepare(request: Request, ns: PodNetlink) -> tuple[DesiredPlumbing, ObservedPodLink | None]:
    network = logic_network_name(request.config)
    config = BindingConfig.parse(request.config)
    pod_iface = find_pod_iface(ns.link_names(), network, request.ifname)
    observed = _observe(ns, pod_iface)
    vf = _discover(network, config) if observed is None else None
    return plan(observed, network, config, pod_iface=pod_iface, vf=vf), observed


def add(request: Request, *, nl: NetnsOpener = open_netns) -> dict[str, Any]:
    """ADD: read, plan, log once, apply with undo; a repeated ADD changes nothing.

    The result has no interfaces and no IPs (docs/design.md §4): an interface reported here would
    replace the attachment's own entry in network-status.
    """
    with nl(request.netns) as ns:
        desired, observed = _prepare(request, ns)
        log.info("ADD container %s: %s", request.container_id, desired.describe())
        if desired.mode != "none":
            assert observed is not None
            _apply(ns, desired, observed)
    return {"cniVersion": request.config.get("cniVersion") or "1.0.0"}


def _apply(ns: PodNetlink, d: DesiredPlumbing, observed: ObservedPodLink) -> None:
    assert d.record is not None and d.tap is not None and d.pod_mac is not None
    pod, link, tap = d.pod_iface, observed.link, d.tap
    with ExitStack() as undo:
        alias = bindrecord.encode(d.record)
        if link.alias != alias:
            ns.set_alias(pod, alias)
            _on_undo(undo, ns.set_alias, pod, link.alias)
        if d.bridge and _ensure_link(ns, d.bridge, "bridge", lambda: ns.create_bridge(d.bridge or "", mtu=tap.mtu)):
            _on_undo(undo, ns.delete_link, d.bridge)
        create_tap = lambda: ns.create_tap(  # noqa: E731
            tap.name, owner_uid=tap.owner_uid, owner_gid=tap.owner_gid, multi_queue=tap.multi_queue, mtu=tap.mtu
        )
        if _ensure_link(ns, tap.name, "tun", create_tap):
            _on_undo(undo, ns.delete_link, tap.name)
        if d.bridge:
            tap_link = ns.link(tap.name)
            if tap_link is None or tap_link.master != d.bridge:
                ns.set_master(tap.name, d.bridge)
            ns.set_up(d.bridge)
        ns.set_up(tap.name)
        if d.server_tap and d.bridge:
            _add_server_tap(ns, d.server_tap, d.bridge, tap, undo)
        if link.mac != d.pod_mac:
            ns.set_mac(pod, d.pod_mac)
            _on_undo(undo, ns.set_mac, pod, link.mac)
        _strip_l3(ns, pod, d.record, observed, undo)
        if d.bridge and link.master != d.bridge:
            ns.set_master(pod, d.bridge)
            _on_undo(undo, ns.set_master, pod, link.master)
        if d.bridge and ns.learning(pod) is not False:
            ns.set_learning(pod, False)  # the guest's MAC is never learned on the pod side
        if d.mode == "redirect":
            for src, dst in ((pod, tap.name), (tap.name, pod)):
                if ns.tc_redirect_target(src) != dst:
                    ns.clear_tc(src)
                    _on_undo(undo, ns.clear_tc, src)
                    ns.tc_redirect(src, dst)
        if not link.up:
            ns.set_up(pod)
        undo.pop_all()


def _add_server_tap(ns: PodNetlink, name: str, bridge: str, tap: TapSpec, undo: ExitStack) -> None:
    """The guest-address server's port on the in-pod bridge: a persistent tap owned by the
    tap owner (the sidecar's uid), which opens it without capabilities (docs/guest-addressing.md)."""
    create = lambda: ns.create_tap(  # noqa: E731
        name, owner_uid=tap.owner_uid, owner_gid=tap.owner_gid, multi_queue=False, mtu=tap.mtu
    )
    if _ensure_link(ns, name, "tun", create):
        _on_undo(undo, ns.delete_link, name)
    existing = ns.link(name)
    if existing is None or existing.master != bridge:
        ns.set_master(name, bridge)
    ns.set_up(name)


def _on_undo(undo: ExitStack, step: Callable[..., None], *args: Any) -> None:
    """Register an undo step that never hides the error being undone: its own failure is logged."""

    def run() -> None:
        try:
            step(*args)
        except KvnetError as err:
            log.error("undoing a failed ADD: %s%s failed: %s", getattr(step, "__name__", "step"), args, err.msg)

    undo.callback(run)


def _ensure_link(ns: PodNetlink, name: str, kind: str, create: Callable[[], None]) -> bool:
    """Create ``name`` unless a link of that kind exists; True when it was created here."""
    existing = ns.link(name)
    if existing is None:
        create()
        return True
    if existing.kind != kind:
        raise InvalidConfig(
            f"link {name} exists in the pod netns and is a {existing.kind or 'physical'} link, not a {kind}"
        )
    return False


def _strip_l3(ns: PodNetlink, pod: str, record: BindingRecord, observed: ObservedPodLink, undo: ExitStack) -> None:
    """Take the recorded addresses and routes off the pod link; undo puts them back."""
    present = set(_global(observed.addresses))
    routes = [r for r in observed.routes if _kept_route(r)]
    if not present and not routes:
        return
    _on_undo(undo, _restore_l3, ns, pod, record)
    for r in routes:
        ns.remove_route(pod, r)
    for cidr in record.ip.addresses:
        if cidr in present:
            ns.remove_address(pod, cidr)
    for r in ns.routes(pod):  # IPv4 routes go with their addresses; anything left is ours too
        if _kept_route(r):
            ns.remove_route(pod, r)


def _restore_l3(ns: PodNetlink, pod: str, record: BindingRecord) -> None:
    """Put the recorded addresses, default routes and routes back on the pod link."""
    have = {a.cidr for a in ns.addresses(pod)}
    for cidr in record.ip.addresses:
        if cidr not in have:
            ns.add_address(pod, cidr)
    have_routes = {(r.dst, r.gateway or "") for r in ns.routes(pod)}
    wanted = [("0.0.0.0/0" if ":" not in gw else "::/0", gw) for gw in record.ip.gateways] + list(record.ip.routes)
    for dst, via in wanted:
        if (dst, via) not in have_routes:
            ns.add_route(pod, RouteState(dst, via or None))


def delete(request: Request, *, nl: NetnsOpener = open_netns) -> None:
    """DEL: give the pod link back exactly as the attachment's plugin made it; idempotent.

    Fine when the netns, the pod link, the tap or the bridge are already gone. A conf
    without ``logicNetworkName`` names no pod link: DEL logs it and succeeds, so a pod's
    teardown is never blocked by a conf that ADD would have refused anyway.
    """
    try:
        network = logic_network_name(request.config)
    except InvalidConfig as err:
        log.error("DEL container %s: %s; nothing to undo", request.container_id, err.msg)
        return
    if not request.netns:
        return
    try:
        with nl(request.netns) as ns:
            _undo_binding(ns, network, request)
    except NetnsMissing as err:
        log.info("DEL container %s network %s: %s; nothing to undo", request.container_id, network, err)


def _undo_binding(ns: PodNetlink, network: str, request: Request) -> None:
    pod = find_pod_iface(ns.link_names(), network, request.ifname)
    tap, bridge = tap_name(pod), bridge_name(pod)
    link = ns.link(pod)
    ours = link is not None and bindrecord.is_tagged(link.alias)
    record = None
    if link is not None and ours:
        try:
            record = bindrecord.decode(link.alias)
        except DecodeFailure as err:  # cannot restore, but still take our plumbing away
            log.error(
                "DEL container %s network %s: pod interface %s: %s; its MAC and addresses are not restored",
                request.container_id,
                network,
                pod,
                err.msg,
            )
    log.info(
        "DEL container %s network %s (%s): %s",
        request.container_id,
        network,
        pod,
        "restoring from the record" if record else "no record on the pod link",
    )
    if link is not None and ours:
        ns.clear_tc(pod)
        if link.master is not None:
            ns.set_master(pod, None)
        if record is not None and link.mac != record.original_mac:
            ns.set_mac(pod, record.original_mac)
    for name, kind in ((tap, "tun"), (bindrecord.server_tap_name(pod), "tun"), (bridge, "bridge")):
        existing = ns.link(name)
        if existing is not None and existing.kind == kind:
            ns.delete_link(name)
    if link is not None and ours:
        if record is not None:
            _restore_l3(ns, pod, record)
        ns.set_alias(pod, "")


def check(request: Request, *, nl: NetnsOpener = open_netns) -> None:
    """CHECK: compare the netns with the plan; raise ``PlumbingDrift`` naming what differs."""
    with nl(request.netns) as ns:
        d, observed = _prepare(request, ns)
        if d.mode == "none":
            return
        assert observed is not None and d.record is not None and d.tap is not None
        where = f"network {d.network}: "
        link = observed.link
        if bindrecord.decode(link.alias) != d.record:
            raise PlumbingDrift(f"{where}pod interface {d.pod_iface} carries no kvnet binding record")
        if link.mac != d.pod_mac:
            raise PlumbingDrift(f"{where}pod interface {d.pod_iface} has MAC {link.mac}, expected {d.pod_mac}")
        left = _global(observed.addresses)
        if left:
            raise PlumbingDrift(f"{where}pod interface {d.pod_iface} still has addresses {list(left)}")
        tap = ns.link(d.tap.name)
        if tap is None or tap.kind != "tun":
            raise PlumbingDrift(f"{where}tap {d.tap.name} is missing")
        if tap.mtu != d.tap.mtu:
            raise PlumbingDrift(f"{where}tap {d.tap.name} has MTU {tap.mtu}, expected {d.tap.mtu}")
        if (tap.owner, tap.group) != (d.tap.owner_uid, d.tap.owner_gid):
            raise PlumbingDrift(
                f"{where}tap {d.tap.name} is owned by {tap.owner}:{tap.group}, expected {d.tap.owner_uid}:{d.tap.owner_gid}"
            )
        if tap.multi_queue != d.tap.multi_queue:
            raise PlumbingDrift(
                f"{where}tap {d.tap.name} multi-queue is {tap.multi_queue}, expected {d.tap.multi_queue}"
            )
        if d.bridge:
            bridge = ns.link(d.bridge)
            if bridge is None or bridge.kind != "bridge":
                raise PlumbingDrift(f"{where}bridge {d.bridge} is missing")
            for port in (d.pod_iface, d.tap.name):
                state = link if port == d.pod_iface else tap
                if state.master != d.bridge:
                    raise PlumbingDrift(f"{where}{port} is not a port of {d.bridge} (master {state.master})")
            if ns.learning(d.pod_iface) is not False:
                raise PlumbingDrift(f"{where}bridge port {d.pod_iface} learns MAC addresses; expected learning off")
        else:
            for src, dst in ((d.pod_iface, d.tap.name), (d.tap.name, d.pod_iface)):
                target = ns.tc_redirect_target(src)
                if target != dst:
                    raise PlumbingDrift(f"{where}ingress of {src} is redirected to {target}, expected {dst}")
