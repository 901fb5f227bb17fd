"""Each delegate's call, computed once: interface name, CNI_ARGS, env and runtime config.

:func:`plan` turns the delegate list into :class:`PlannedDelegate` values that ADD, its
rollback, DEL and CHECK all use, so the four build a delegate's call in one way: Multus's
``getIfname``, ``newCNIRuntimeConf`` (CNI_ARGS) and ``mergeCNIRuntimeConfig``. ADD also
validates the plan before anything runs.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from kvnet.cni import libcni_cache
from kvnet.cni.delegate import DelegateEnv
from kvnet.cni.protocol import CniRequest
from kvnet.core.errors import InvalidConfig, KvnetError
from kvnet.core.gojson import go_quote
from kvnet.core.naming import cni_name_ok, ifname_problem, ordinal_pod_iface
from kvnet.meta.cache import CachedDelegate
from kvnet.meta.config import MultusConfig
from kvnet.meta.pod import PodArgs
from kvnet.meta.ports import DeviceInfoStore
from kvnet.meta.wording import cmd_prefix


@dataclass(frozen=True)
class PlannedDelegate:
    """One delegate of the pod with the call it gets: ``index`` in the full list (the
    main network is 0), ``ifname``, the ``env`` of DEL and CHECK, ``add_env`` (the same
    with the deprecated ``MAC=``/``IP=`` CNI_ARGS, which only ADD gets, as Multus's
    ``DelegateAdd`` appends them) and the ``runtime_config`` (before the runner keeps only
    the capabilities the plugin declares)."""

    index: int
    delegate: CachedDelegate
    ifname: str
    env: DelegateEnv
    runtime_config: Mapping[str, Any]
    add_env: DelegateEnv

    @property
    def device_info_file(self) -> str | None:
        value = self.runtime_config.get("CNIDeviceInfoFile")
        return value if isinstance(value, str) and value else None


def plan(
    request: CniRequest,
    conf: MultusConfig,
    pa: PodArgs,
    delegates: Sequence[CachedDelegate],
    devinfo: DeviceInfoStore | None,
    *,
    validate: bool = False,
) -> tuple[PlannedDelegate, ...]:
    """The calls of every delegate; with ``validate`` (ADD) the names are checked first."""
    ifnames = (
        check_plan(delegates, request.ifname, pa)
        if validate
        else [ifname_of(d, idx, request.ifname) for idx, d in enumerate(delegates)]
    )
    out = []
    for idx, (d, ifname) in enumerate(zip(delegates, ifnames, strict=True)):
        env = DelegateEnv(request.container_id, request.netns, ifname, delegate_cni_args(request, pa), request.path)
        add_env = DelegateEnv(
            request.container_id, request.netns, ifname, delegate_cni_args(request, pa, d), request.path
        )
        rc = runtime_config(conf, d, request.container_id, ifname, devinfo)
        out.append(PlannedDelegate(idx, d, ifname, env, rc, add_env))
    return tuple(out)


def ifname_of(d: CachedDelegate, idx: int, runtime_ifname: str) -> str:
    """Multus's ``getIfname``: requested, else the runtime's for the main network, else ``net<idx>``."""
    if d.ifname_request:
        return d.ifname_request
    if d.master:
        return runtime_ifname
    return ordinal_pod_iface(idx)


def check_plan(delegates: Sequence[CachedDelegate], runtime_ifname: str, pa: PodArgs) -> list[str]:
    """Interface names and network names, checked before anything runs (a name that would
    escape a cache folder, or two attachments on one interface, fail here)."""
    names: dict[str, str] = {}
    out = []
    for idx, d in enumerate(delegates):
        ifname = ifname_of(d, idx, runtime_ifname)
        problem = ifname_problem(ifname)
        if problem:
            raise InvalidConfig(f"{cmd_prefix(pa)}network {d.name}: {problem}")
        if ifname in names:
            raise InvalidConfig(
                f"{cmd_prefix(pa)}interface name {ifname} is requested by both {names[ifname]} and {d.name}"
            )
        names[ifname] = d.name
        if not cni_name_ok(d.network_name):
            raise InvalidConfig(
                f"{cmd_prefix(pa)}network {d.name}: invalid network name {go_quote(d.network_name)} in its config"
            )
        if not d.conf.get("type") and not d.is_conflist:
            raise InvalidConfig(f"{cmd_prefix(pa)}network {d.name}: the config has neither 'type' nor 'plugins'")
        out.append(ifname)
    return out


def delegate_cni_args(request: CniRequest, pa: PodArgs, d: CachedDelegate | None = None) -> str:
    """CNI_ARGS for a delegate, as Multus's ``newCNIRuntimeConf`` builds them: the fixed
    five, then each of the runtime's own pairs in order. A runtime pair fills a fixed key
    whose value is still empty; any other pair is appended, even when the same pair is
    already there (Multus does not drop duplicates). Then the deprecated MAC/IP requests.

    The runtime's CNI_ARGS were checked when the request was parsed (``parse_cni_args``
    refuses a pair without ``=`` or key); empty segments are skipped, as there.
    """
    pairs: list[list[str]] = [
        ["IgnoreUnknown", "true"],
        ["K8S_POD_NAMESPACE", pa.namespace],
        ["K8S_POD_NAME", pa.name],
        ["K8S_POD_INFRA_CONTAINER_ID", pa.infra_container_id],
        ["K8S_POD_UID", pa.uid],
    ]
    raw = request.args_str or ";".join(f"{k}={v}" for k, v in request.args.items())
    for item in raw.split(";"):
        if not item:
            continue
        key, _, val = item.partition("=")
        for pair in pairs:
            if pair[0] == key and pair[1] == "" and val != "":
                pair[1] = val
                break
        else:
            pairs.append([key, val])
    if d is not None and d.mac_request:
        pairs.append(["MAC", d.mac_request])
    if d is not None and d.ip_request:
        pairs.append(["IP", ",".join(d.ip_request)])
    return ";".join(f"{k}={v}" for k, v in pairs)


def runtime_config(
    conf: MultusConfig, d: CachedDelegate, container_id: str, ifname: str, devinfo: DeviceInfoStore | None
) -> dict[str, Any]:
    """Multus's ``mergeCNIRuntimeConfig``: the config's runtimeConfig, plus the selection's
    requests for non-main networks (the runner passes on only declared capabilities)."""
    rc: dict[str, Any] = {k: v for k, v in conf.runtime_config.items() if v not in (None, "", [], {})}
    if not d.master:
        if d.port_mappings:
            rc["portMappings"] = [dict(p) for p in d.port_mappings]
        if d.bandwidth is not None:
            rc["bandwidth"] = dict(d.bandwidth)
        if d.ip_request:
            rc["ips"] = list(d.ip_request)
        if d.mac_request:
            rc["mac"] = d.mac_request
        if d.infiniband_guid_request:
            rc["infinibandGUID"] = d.infiniband_guid_request
        if d.device_id:
            rc["deviceID"] = d.device_id
    if rc.get("deviceID") and devinfo is not None:
        rc["CNIDeviceInfoFile"] = devinfo.cni_file(d.name, container_id, ifname)
    return rc


def cached_capability_args(conf: MultusConfig, d: CachedDelegate, container_id: str, ifname: str) -> dict[str, Any]:
    try:
        att = libcni_cache.read_result(conf.cni_dir, d.network_name, container_id, ifname)
    except KvnetError:
        return {}
    return dict(att.capability_args) if att is not None else {}


# --- which delegates of one ADD may run at once ---------------------------------------------

FREE = "free"  # touches only its own interface (and node objects made for it): runs beside others
AFTER = "after"  # acts on an earlier attachment's interface: runs alone, after every earlier delegate
ALONE = "alone"  # may touch what others share (unknown plugin, shared chains or tables): a barrier

# Plugins whose ADD makes and configures only CNI_IFNAME in the pod, and node objects that are
# either per interface (a veth, a macvlan on the master) or made idempotently when shared (a
# bridge that already exists is used as it is): the v1.x reference plugins and SR-IOV's.
PARALLEL_PLUGINS = frozenset(
    {
        "bridge",
        "macvlan",
        "ipvlan",
        "ptp",
        "vlan",
        "host-device",
        "dummy",
        "tap",
        "sriov",
        "ib-sriov",
        "tuning",
        "bandwidth",
    }
)
# IPAM plugins that keep their own state consistent across concurrent calls: host-local locks
# its data folder, whereabouts updates its pool with compare-and-swap, dhcp serves one daemon.
PARALLEL_IPAM = frozenset({"host-local", "static", "whereabouts", "dhcp"})
# IPAM plugins that take a cluster-wide lock for each call: whereabouts holds a Lease (leader
# election) while it allocates, and a call that finds it taken looks again only after its retry
# period (0.5 s by default), so two of one pod at once cost that wait where one after the other
# cost none. The attachments using one of these run one at a time, in plan order (beside the
# others); measured in docs/meta-plugin.md, "Parallel delegates".
ONE_AT_A_TIME_IPAM = frozenset({"whereabouts"})
# Plugins that name a node object after the network and the container, not the interface:
# bandwidth's ifb device. Two attachments of one such network in a pod collide one by one too;
# run one at a time in plan order, the same one of them fails.
PER_NETWORK_PLUGINS = frozenset({"bandwidth"})
# Delegates that plumb another attachment's pod link (KubeVirt's binding).
AFTER_PLUGINS = frozenset({"kvnet-binding"})
# Keys that make a plugin set up something shared by name (ipMasq: a chain per network name
# and container, which two attachments of one NAD would both create).
_SHARED_KEYS = ("ipMasq",)


def concurrency(d: CachedDelegate, trusted: Collection[str] = ()) -> str:
    """How a delegate may run beside the others of its pod: :data:`FREE`, :data:`AFTER` or
    :data:`ALONE`; a conflist is the strictest of its plugins (they run in order, as one).
    ``trusted``: more plugin and IPAM types that count as free (``parallelPlugins``)."""
    plugins, ipams = PARALLEL_PLUGINS | set(trusted), PARALLEL_IPAM | set(trusted)
    kinds = []
    for p in d.plugins:
        kind = p.get("type")
        ipam = p.get("ipam")
        ipam_type = ipam.get("type") if isinstance(ipam, Mapping) else None
        if kind in AFTER_PLUGINS:
            kinds.append(AFTER)
        elif kind not in plugins or (ipam_type and ipam_type not in ipams) or any(p.get(k) for k in _SHARED_KEYS):
            kinds.append(ALONE)
        else:
            kinds.append(FREE)
    if ALONE in kinds or not kinds:
        return ALONE
    return AFTER if AFTER in kinds else FREE


def one_at_a_time(d: CachedDelegate) -> frozenset[str]:
    """What a delegate (any plugin of a conflist) shares with others of its pod that must not
    run beside it: the IPAM of :data:`ONE_AT_A_TIME_IPAM` it uses, ``<plugin>:<network>`` for
    a plugin of :data:`PER_NETWORK_PLUGINS`. Two delegates that share any of it do not run at
    the same time (the later in plan order starts when the earlier ends)."""
    keys = set()
    for p in d.plugins:
        ipam = p.get("ipam")
        ipam_type = ipam.get("type") if isinstance(ipam, Mapping) else None
        if isinstance(ipam_type, str) and ipam_type in ONE_AT_A_TIME_IPAM:
            keys.add(ipam_type)
        if p.get("type") in PER_NETWORK_PLUGINS:
            keys.add(f"{p.get('type')}:{d.conf.get('name')}")
    return frozenset(keys)


def waves(kinds: Sequence[str], *, serial: bool = False) -> tuple[tuple[int, ...], ...]:
    """The ADD schedule of delegates whose :func:`concurrency` is ``kinds`` (plan order, the
    main network first): waves run one after the other, the delegates of one wave at once.

    - the main network (0) is a wave of its own, the first: it runs alone, before anything;
    - a :data:`FREE` attachment runs in the first wave after the last :data:`ALONE` delegate
      before it (or the main network) that holds no :data:`AFTER` delegate;
    - an :data:`AFTER` delegate gets a wave of its own after every delegate before it;
    - an :data:`ALONE` delegate gets a wave of its own after every delegate before it, and
      every delegate after it comes later;
    - ``serial`` (or a pod with ``default-route`` edits): every delegate its own wave, in plan order.

    Each wave lists its delegates in plan order. Pure: tested in tests/unit/test_parallel_plan.py.
    """
    if not kinds:
        return ()
    levels = [0]
    barrier = top = 0
    reserved: set[int] = set()  # the waves of AFTER delegates: nothing else joins them
    for kind in kinds[1:]:
        if serial or kind != FREE:
            level = top + 1
            if serial or kind == ALONE:
                barrier = level
            else:
                reserved.add(level)
        else:
            level = barrier + 1
            while level in reserved:
                level += 1
        levels.append(level)
        top = max(top, level)
    by_level: dict[int, list[int]] = {}
    for idx, level in enumerate(levels):
        by_level.setdefault(level, []).append(idx)
    return tuple(tuple(by_level[level]) for level in sorted(by_level))


def schedule(
    planned: Sequence[PlannedDelegate], parallelism: int, trusted: Collection[str] = ()
) -> tuple[tuple[int, ...], ...]:
    """:func:`waves` of the planned delegates (indices into ``planned``): one by one when
    ``parallelism`` is 1 or any delegate asks for ``default-route`` (its route edits follow
    each delegate's ADD in plan order, as in the sequential run, and two attachments that
    each bring a default route would otherwise race for it)."""
    serial = parallelism <= 1 or any(p.delegate.gateway_request is not None for p in planned)
    return waves([ALONE if p.delegate.master else concurrency(p.delegate, trusted) for p in planned], serial=serial)
