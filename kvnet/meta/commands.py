"""The meta-plugin: Multus's ADD, DEL, CHECK, STATUS and GC over delegate plugins.

One pod attachment list is computed from the config (``clusterNetwork`` or
``delegates``, then ``defaultNetworks``) and the pod's annotations (the default-network
override, then the ``networks`` selections resolved through their NADs). It is saved
to the delegate cache before the first delegate runs; each delegate then runs as a
libcni network with Multus's interface names, CNI_ARGS and per-selection runtime
config. A failing delegate undoes every delegate before it (and itself), in reverse.
DEL works from the cache alone, so it succeeds when the pod or the API is gone.

Everything outside is passed in: the Kubernetes API (``KubeApi``), the delegate runner
(``Runner``), SR-IOV device IDs (``DeviceAllocator``), device-info files
(``DeviceInfoStore``) and default-route edits in the pod netns (``RouteEditor``).
The entry points (``kvnet.meta.main`` and the thick-mode daemon) build the production
ones; tests pass small fakes.
"""

from __future__ import annotations

import copy
import ipaddress
import logging
import os
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any, Protocol

from kvnet.cni import libcni_cache
from kvnet.cni.delegate import DelegateEnv
from kvnet.cni.protocol import CniRequest
from kvnet.cni.results import empty_result
from kvnet.core.errors import (
    DelegateFailed,
    InvalidAnnotation,
    InvalidConfig,
    KvnetError,
    NetlinkFailure,
    NetworkNotFound,
    StatusNotAvailable,
    TryAgainLater,
    UnknownContainer,
)
from kvnet.core.model import DeviceInfo, NetworkSelection, NetworkStatus
from kvnet.core.naming import cni_name_ok, ifname_problem, ordinal_pod_iface
from kvnet.meta import cache, gojson, selections
from kvnet.meta import status as network_status
from kvnet.meta.cache import CachedDelegate
from kvnet.meta.config import MultusConfig

log = logging.getLogger("kvnet.meta")

READINESS_POLL = 1.0  # seconds, Multus's pollDuration
READINESS_TIMEOUT = 45.0  # seconds, Multus's pollTimeout
EMPTY_STATUS = "[]"


# ------------------------------------------------------------------------------------
# What comes in from outside
# ------------------------------------------------------------------------------------


class KubeApi(Protocol):
    """The few API calls the meta-plugin makes (``kvnet.meta.k8s`` implements them)."""

    def get_pod(self, namespace: str, name: str) -> Mapping[str, Any] | None: ...

    def get_nad(self, namespace: str, name: str) -> Mapping[str, Any] | None: ...

    def set_network_status(self, namespace: str, name: str, value: str) -> None: ...


class Runner(Protocol):
    """Runs one delegate network with libcni semantics (``kvnet.cni.delegate.DelegateRunner``)."""

    def run_network(
        self,
        command: str,
        network: Mapping[str, Any],
        env: DelegateEnv,
        *,
        runtime_config: Mapping[str, Any] | None = None,
        prev_result: Mapping[str, Any] | None = None,
        valid_attachments: Sequence[Mapping[str, str]] | None = None,
    ) -> Mapping[str, Any] | None: ...


class DeviceAllocator(Protocol):
    """Device IDs the kubelet allocated to a pod for one resource (PodResources API).

    Sorted; the meta-plugin hands them out to the pod's NADs with that resource in
    order, one each, as Multus does.
    """

    def device_ids(self, namespace: str, pod: str, resource_name: str) -> list[str]: ...


class DeviceInfoStore(Protocol):
    """Device-info files: the device plugin's copy and the per-attachment CNI file."""

    def cni_file(self, network: str, container_id: str, ifname: str) -> str: ...

    def copy_from_dp(
        self, resource_name: str, device_id: str, network: str, container_id: str, ifname: str
    ) -> None: ...

    def load(self, network: str, container_id: str, ifname: str) -> DeviceInfo | None: ...

    def remove(self, network: str, container_id: str, ifname: str) -> None: ...


class RouteEditor(Protocol):
    """Default-route edits inside the pod netns (``default-route`` selections)."""

    def delete_default(self, netns: str, ifname: str, family: int) -> None: ...

    def set_default(self, netns: str, ifname: str, gateway: str) -> None: ...


class IpRouteEditor:
    """``RouteEditor`` with iproute2 run in the pod netns through ``nsenter``.

    Kept out of netlink so the CNI binary's hot path stays free of pyroute2; it only
    runs for pods that ask for ``default-route``.
    """

    def _ip(self, netns: str, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        cmd = ["nsenter", f"--net={netns}", "ip", *args]
        proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if check and proc.returncode != 0:
            raise NetlinkFailure(f"{' '.join(args)} in {netns}: {proc.stderr.strip() or proc.returncode}")
        return proc

    def delete_default(self, netns: str, ifname: str, family: int) -> None:
        fam = "-4" if family == 4 else "-6"
        for _ in range(16):  # one default route per metric at most; stop when none is left
            if self._ip(netns, fam, "route", "del", "default", "dev", ifname, check=False).returncode != 0:
                return

    def set_default(self, netns: str, ifname: str, gateway: str) -> None:
        fam = "-4" if ipaddress.ip_address(gateway).version == 4 else "-6"
        self._ip(netns, fam, "route", "replace", "default", "via", gateway, "dev", ifname)


class DeviceInfoFiles:
    """``DeviceInfoStore`` on the real device-info folders (``kvnet.meta.deviceinfo``)."""

    def __init__(self, root: str | None = None) -> None:
        from kvnet.meta import deviceinfo

        self._di = deviceinfo
        self.root = root or deviceinfo.DEVINFO_ROOT

    def cni_file(self, network: str, container_id: str, ifname: str) -> str:
        return str(self._di.cni_path(network, container_id, ifname, self.root))

    def copy_from_dp(self, resource_name: str, device_id: str, network: str, container_id: str, ifname: str) -> None:
        self._di.copy_dp_to_cni(resource_name, device_id, network, container_id, ifname, self.root)

    def load(self, network: str, container_id: str, ifname: str) -> DeviceInfo | None:
        return self._di.load_cni(network, container_id, ifname, self.root)

    def remove(self, network: str, container_id: str, ifname: str) -> None:
        self._di.remove_cni(network, container_id, ifname, self.root)


@dataclass(frozen=True)
class Seams:
    """The optional side effects, bundled so entry points build them once."""

    allocator: DeviceAllocator | None = None
    devinfo: DeviceInfoStore | None = None
    routes: RouteEditor | None = None
    sleep: Callable[[float], None] = time.sleep
    clock: Callable[[], float] = time.monotonic
    readiness_timeout: float = READINESS_TIMEOUT


# ------------------------------------------------------------------------------------
# The pod the runtime is asking about
# ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PodArgs:
    """Multus's ``K8sArgs``: the pod named in CNI_ARGS."""

    namespace: str
    name: str
    uid: str
    infra_container_id: str

    @property
    def label(self) -> str:
        return f"{self.namespace}/{self.name}"


def pod_args(request: CniRequest) -> PodArgs:
    a = request.args
    return PodArgs(
        a.get("K8S_POD_NAMESPACE", ""),
        a.get("K8S_POD_NAME", ""),
        a.get("K8S_POD_UID", ""),
        a.get("K8S_POD_INFRA_CONTAINER_ID", ""),
    )


def _prefix(pa: PodArgs | None) -> str:
    """Multus's ``cmdErr`` prefix."""
    return f"kvnet: [{pa.namespace}/{pa.name}/{pa.uid}]: " if pa is not None else "kvnet: "


def _reword(err: KvnetError, msg: str) -> KvnetError:
    """The same error (class, code, details) with a message that says where it happened."""
    new = copy.copy(err)
    new.msg = msg
    new.args = (msg,)
    return new


def _pod_meta(pod: Mapping[str, Any]) -> Mapping[str, Any]:
    meta = pod.get("metadata")
    return meta if isinstance(meta, Mapping) else {}


def _pod_annotations(pod: Mapping[str, Any]) -> Mapping[str, str]:
    found = _pod_meta(pod).get("annotations")
    return found if isinstance(found, Mapping) else {}


def wait_readiness(conf: MultusConfig, pa: PodArgs | None, seams: Seams, *, on_del: bool = False) -> None:
    """Wait (1 s poll, bounded) for ``readinessindicatorfile`` as Multus does."""
    path = conf.readiness_indicator_file
    if not path:
        return
    deadline = seams.clock() + seams.readiness_timeout
    while not os.path.exists(path):
        if seams.clock() >= deadline:
            what = " (on del)" if on_del else ""
            raise TryAgainLater(
                f"{_prefix(pa)}have you checked that your default network is ready? still waiting for "
                f"readinessindicatorfile @ {path}{what}. pollimmediate error: timed out waiting for the condition"
            )
        seams.sleep(READINESS_POLL)


def get_pod(api: KubeApi | None, pa: PodArgs, *, on_del: bool) -> Mapping[str, Any] | None:
    """The pod, or None (no API, no pod name, pod gone; on DEL also API errors and a
    pod re-created under the same name)."""
    if api is None or not pa.name:
        return None
    try:
        pod = api.get_pod(pa.namespace, pa.name)
    except KvnetError as err:
        if on_del:
            log.warning("pod %s: cannot read the pod on DEL, deleting from the cache: %s", pa.label, err.msg)
            return None
        raise _reword(err, f"{_prefix(pa)}error waiting for pod: {err.msg}") from err
    if pod is None:
        return None
    uid = str(_pod_meta(pod).get("uid") or "")
    if pa.uid and uid and uid != pa.uid:
        if on_del:
            log.warning("pod %s: API has UID %s, the runtime %s; not touching the new pod", pa.label, uid, pa.uid)
            return None
        raise UnknownContainer(
            f"{_prefix(pa)}expected pod UID {gojson.go_quote(pa.uid)} but got {gojson.go_quote(uid)} from Kube API"
        )
    return pod


# ------------------------------------------------------------------------------------
# From config + pod to the delegate list (Multus's GetDefaultNetworks / TryLoadPodDelegates)
# ------------------------------------------------------------------------------------


def _inject_args(conf: Mapping[str, Any], cni_args: Mapping[str, Any] | None, device_id: str) -> dict[str, Any]:
    """``args.cni`` merged and ``deviceID``/``pciBusID`` set, in the conf or every conflist plugin."""
    out = copy.deepcopy(dict(conf))
    targets: list[dict[str, Any]] = (
        out["plugins"] if not out.get("type") and isinstance(out.get("plugins"), list) else [out]
    )
    for t in targets:
        if not isinstance(t, dict):
            continue
        if device_id:
            t["deviceID"] = device_id
            t["pciBusID"] = device_id
        if cni_args is not None:
            args = t.get("args")
            if not isinstance(args, dict):
                args = t["args"] = {}
            cni = args.get("cni")
            if isinstance(cni, dict):
                cni.update(cni_args)
            else:
                args["cni"] = dict(cni_args)
    return out


class _DeviceIds:
    """Multus's resourceMap: per resource, the allocated IDs and the next one to hand out."""

    def __init__(self, allocator: DeviceAllocator | None, pa: PodArgs) -> None:
        self.allocator = allocator
        self.pa = pa
        self.ids: dict[str, list[str]] = {}

    def next(self, resource: str, nad: str) -> str:
        if self.allocator is None:
            raise InvalidConfig(
                f"network {nad} asks for devices of resource {gojson.go_quote(resource)} but no device allocator "
                "(kubelet PodResources) is configured"
            )
        if resource not in self.ids:
            self.ids[resource] = list(self.allocator.device_ids(self.pa.namespace, self.pa.name, resource))
        if not self.ids[resource]:
            log.warning("pod %s: network %s: no device of resource %s left for it", self.pa.label, nad, resource)
            return ""
        return self.ids[resource].pop(0)


def _nad_delegate(
    api: KubeApi | None, conf: MultusConfig, namespace: str, name: str, devices: _DeviceIds | None
) -> CachedDelegate:
    """``getKubernetesDelegate``: the NAD's config, its deviceID injected."""
    from kvnet.meta.nad import delegate_from_nad

    if not cni_name_ok(name) or not cni_name_ok(namespace):
        raise InvalidAnnotation(f"network {namespace}/{name}: invalid network name")
    nad = api.get_nad(namespace, name) if api is not None else None
    if nad is None:
        raise NetworkNotFound(
            f"getKubernetesDelegate: cannot find a network-attachment-definition ({name}) in namespace "
            f'({namespace}): network-attachment-definitions.k8s.cni.cncf.io "{name}" not found'
        )
    d = delegate_from_nad(nad, conf.conf_dir)
    device_id = ""
    if d.resource_name and devices is not None:
        device_id = devices.next(d.resource_name, d.name)
    return CachedDelegate(
        name=d.name,
        conf=_inject_args(d.config, None, device_id) if device_id else dict(d.config),
        device_id=device_id,
        resource_name=d.resource_name or "" if device_id else "",
    )


def _net_delegate(api: KubeApi | None, conf: MultusConfig, netname: str, devices: _DeviceIds | None) -> CachedDelegate:
    """``getNetDelegate``: a NAD in multusNamespace, else a conf in confDir, a folder or a file."""
    from kvnet.meta.nad import delegate_from_conf_dir

    if api is not None and "/" not in netname and cni_name_ok(netname):
        try:
            return _nad_delegate(api, conf, conf.multus_namespace, netname, devices)
        except NetworkNotFound:
            pass
    d = delegate_from_conf_dir(netname, conf.conf_dir)
    return CachedDelegate(name=d.name, conf=dict(d.config))


def _selection_delegate(
    sel: NetworkSelection, api: KubeApi | None, conf: MultusConfig, devices: _DeviceIds | None
) -> CachedDelegate:
    d = _nad_delegate(api, conf, sel.namespace, sel.name, devices)
    device_id = d.device_id or (sel.device_id or "")
    if sel.cni_args is not None:
        d = replace(d, conf=_inject_args(d.conf, sel.cni_args, ""))
    return replace(
        d,
        ifname_request=sel.interface or "",
        mac_request=sel.mac or "",
        infiniband_guid_request=sel.infiniband_guid or "",
        ip_request=tuple(sel.ips),
        gateway_request=tuple(sel.default_route) if sel.default_route else None,
        port_mappings=tuple(sel.port_mappings),
        bandwidth=sel.bandwidth,
        device_id=device_id,
    )


def _check_gateways(delegates: list[CachedDelegate]) -> list[CachedDelegate]:
    """``CheckGatewayConfig``: one v4 and one v6 default route at most; mark the rest filtered."""
    v4 = v6 = 0
    for d in delegates:
        for gw in d.gateway_request or ():
            if ipaddress.ip_address(gw).version == 4:
                v4 += 1
            else:
                v6 += 1
    if v4 > 1 or v6 > 1:
        raise InvalidAnnotation("multus does not support ECMP for default-route")
    out = []
    for d in delegates:
        fams = {ipaddress.ip_address(gw).version for gw in d.gateway_request or ()}
        out.append(replace(d, is_filter_v4_gateway=4 not in fams, is_filter_v6_gateway=6 not in fams))
    return out


# How Multus's TryLoadPodDelegates wraps what goes wrong with each annotation.
_DEFAULT_NET_ERR = "TryLoadPodDelegates: error in loading K8s cluster default network from pod annotation: "
_NETWORKS_ERR = "TryLoadPodDelegates: error in getting k8s network for pod: "


class _NadsOnce:
    """One ADD reads each NAD once (KubeVirt repeats the binding NAD once per VM network)."""

    def __init__(self, api: KubeApi) -> None:
        self.api = api
        self.seen: dict[tuple[str, str], Mapping[str, Any] | None] = {}

    def get_pod(self, namespace: str, name: str) -> Mapping[str, Any] | None:
        return self.api.get_pod(namespace, name)

    def get_nad(self, namespace: str, name: str) -> Mapping[str, Any] | None:
        key = (namespace, name)
        if key not in self.seen:
            self.seen[key] = self.api.get_nad(namespace, name)
        return self.seen[key]

    def set_network_status(self, namespace: str, name: str, value: str) -> None:
        self.api.set_network_status(namespace, name, value)


def load_delegates(
    conf: MultusConfig,
    api: KubeApi | None,
    pod: Mapping[str, Any] | None,
    pa: PodArgs,
    allocator: DeviceAllocator | None,
    *,
    use_devices: bool = True,
) -> list[CachedDelegate]:
    """The full delegate list, the main network first."""
    devices = _DeviceIds(allocator, pa) if use_devices else None
    api = _NadsOnce(api) if api is not None else None
    pod_ns = str(_pod_meta(pod).get("namespace") or pa.namespace) if pod is not None else pa.namespace
    delegates: list[CachedDelegate] = []
    if conf.cluster_network:
        try:
            delegates.append(replace(_net_delegate(api, conf, conf.cluster_network, devices), master=True))
            if pod is None or not conf.is_system_namespace(pod_ns):
                delegates.extend(_net_delegate(api, conf, n, devices) for n in conf.default_networks)
        except KvnetError as err:
            raise _reword(err, f"{_prefix(pa)}failed to get clusterNetwork/defaultNetworks: {err.msg}") from err
    else:
        for idx, raw in enumerate(conf.delegates):
            name = raw.get("name")
            delegates.append(
                CachedDelegate(name=name if isinstance(name, str) else "", conf=dict(raw), master=idx == 0)
            )
    if pod is None:
        return delegates
    notes = _pod_annotations(pod)
    try:
        default_value = notes.get(selections.DEFAULT_NETWORK)
        if default_value:
            try:
                sel = selections.parse_default_network(default_value, conf.multus_namespace)
                try:
                    main = _nad_delegate(api, conf, sel.namespace, sel.name, devices)
                except KvnetError as err:
                    raise _reword(err, f"tryLoadK8sPodDefaultNetwork: failed getting the delegate: {err.msg}") from err
            except KvnetError as err:
                raise _reword(err, f"{_DEFAULT_NET_ERR}{err.msg}") from err
            delegates[0] = replace(main, master=True)
        value = notes.get(selections.NETWORKS)
        if value:
            requested = selections.parse_networks(value, pod_ns)
            added = []
            for sel in requested:
                if not conf.namespace_allowed(pod_ns, sel.namespace):
                    raise InvalidAnnotation(
                        f"{_NETWORKS_ERR}GetNetworkDelegates: namespace isolation enabled, annotation violates "
                        f"permission, pod is in namespace {pod_ns} but refers to target namespace {sel.namespace}"
                    )
                try:
                    added.append(_selection_delegate(sel, api, conf, devices))
                except KvnetError as err:
                    raise _reword(
                        err, f"{_NETWORKS_ERR}GetNetworkDelegates: failed getting the delegate: {err.msg}"
                    ) from err
            delegates.extend(added)
            if any(d.gateway_request is not None for d in delegates):
                delegates = _check_gateways(delegates)
    except KvnetError as err:
        raise _reword(err, f"{_prefix(pa)}error loading k8s delegates k8s args: {err.msg}") from err
    return delegates


# ------------------------------------------------------------------------------------
# Running delegates
# ------------------------------------------------------------------------------------


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
            raise InvalidConfig(f"{_prefix(pa)}network {d.name}: {problem}")
        if ifname in names:
            raise InvalidConfig(
                f"{_prefix(pa)}interface name {ifname} is requested by both {names[ifname]} and {d.name}"
            )
        names[ifname] = d.name
        if not cni_name_ok(d.network_name):
            raise InvalidConfig(
                f"{_prefix(pa)}network {d.name}: invalid network name {gojson.go_quote(d.network_name)} in its config"
            )
        if not d.conf.get("type") and not isinstance(d.conf.get("plugins"), list):
            raise InvalidConfig(f"{_prefix(pa)}network {d.name}: the config has neither 'type' nor 'plugins'")
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


def _delete_all(
    request: CniRequest,
    conf: MultusConfig,
    pa: PodArgs,
    delegates: Sequence[CachedDelegate],
    last: int,
    runner: Runner,
    seams: Seams,
    *,
    cached_caps: bool = False,
) -> list[str]:
    """``delPlugins``: DEL delegates ``last`` .. 0 in reverse; every one is tried.

    With ``cached_caps`` (DEL from the delegate cache, which does not keep port
    mappings or bandwidth) the capability args libcni cached at ADD fill the gaps, so
    portmap and bandwidth can tear down what they set up.
    """
    errors: list[str] = []
    for idx in range(last, -1, -1):
        d = delegates[idx]
        ifname = ifname_of(d, idx, request.ifname)
        env = DelegateEnv(request.container_id, request.netns, ifname, delegate_cni_args(request, pa, d), request.path)
        rc = runtime_config(conf, d, request.container_id, ifname, seams.devinfo)
        if cached_caps:
            rc = {**_cached_capability_args(conf, d, request.container_id, ifname), **rc}
        try:
            runner.run_network("DEL", d.conf, env, runtime_config=rc)
            log.info("pod %s: deleted %s (%s) from %s", pa.label, ifname, d.plugin_type, d.name)
        except Exception as err:  # every delegate is tried, whatever one of them raised
            msg = err.msg if isinstance(err, KvnetError) else f"{type(err).__name__}: {err}"
            if d.is_conflist:
                errors.append(
                    f"delegateDel: error invoking ConflistDel - {gojson.go_quote(d.network_name)}: "
                    f"conflistDel: error in getting result from DelNetworkList: {msg}"
                )
            else:
                errors.append(
                    f"delegateDel: error invoking DelegateDel - {gojson.go_quote(d.plugin_type)}: "
                    f"error in getting result from DelNetwork: {msg}"
                )
            log.error("pod %s: DEL of %s on %s failed: %s", pa.label, d.name, ifname, msg)
        if rc.get("CNIDeviceInfoFile") and seams.devinfo is not None:
            try:
                seams.devinfo.remove(d.name, request.container_id, ifname)
            except KvnetError as err:
                log.debug("pod %s: device-info of %s: %s", pa.label, d.name, err.msg)
    return errors


def _cached_capability_args(conf: MultusConfig, d: CachedDelegate, container_id: str, ifname: str) -> dict[str, Any]:
    try:
        att = libcni_cache.read_result(conf.cni_dir, d.network_name, container_id, ifname)
    except KvnetError:
        return {}
    return dict(att.capability_args) if att is not None else {}


def _move_default_route(
    request: CniRequest, d: CachedDelegate, ifname: str, result: Mapping[str, Any], routes: RouteEditor | None
) -> dict[str, Any]:
    """``default-route``: drop the default route of filtered interfaces, set the requested one.

    The delegate's result is edited the same way, so network-status shows the gateway
    the pod really uses.
    """
    out = copy.deepcopy(dict(result))
    wanted = d.gateway_request or ()
    families = {
        4: d.is_filter_v4_gateway or any(ipaddress.ip_address(g).version == 4 for g in wanted),
        6: d.is_filter_v6_gateway or any(ipaddress.ip_address(g).version == 6 for g in wanted),
    }
    if not any(families.values()):
        return out
    if routes is None:
        raise NetlinkFailure(f"network {d.name}: default-route is requested but no route editor is configured")
    for fam, drop in families.items():
        if drop:
            routes.delete_default(request.netns, ifname, fam)
    kept = []
    for r in out.get("routes") or []:
        dst = str(r.get("dst", "")) if isinstance(r, Mapping) else ""
        fam = 6 if ":" in dst else 4
        if dst in ("0.0.0.0/0", "::/0") and families[fam]:
            continue
        kept.append(r)
    for gw in wanted:
        routes.set_default(request.netns, ifname, gw)
        kept.append({"dst": "0.0.0.0/0" if ipaddress.ip_address(gw).version == 4 else "::/0", "gw": gw})
    if kept or "routes" in out:
        out["routes"] = kept
    return out


# ------------------------------------------------------------------------------------
# The commands
# ------------------------------------------------------------------------------------


def add(
    request: CniRequest,
    *,
    conf: MultusConfig,
    api: KubeApi | None,
    runner: Runner,
    seams: Seams = Seams(),
) -> Mapping[str, Any]:
    """CNI ADD: every attachment of the pod, the main network's result returned."""
    pa = pod_args(request)
    wait_readiness(conf, pa, seams)
    pod = get_pod(api, pa, on_del=False)
    if pod is None and api is not None and pa.name:
        log.warning("pod %s not found, exiting with an empty CNI result", pa.label)
        return empty_result(request.cni_version, ifname=request.ifname, netns=request.netns)
    delegates = load_delegates(conf, api, pod, pa, seams.allocator)
    if not delegates:
        raise InvalidConfig(f"{_prefix(pa)}no delegate to run")
    ifnames = check_plan(delegates, request.ifname, pa)
    try:
        cache.save(conf.cni_dir, request.container_id, delegates)
    except KvnetError as err:
        raise _reword(err, f"{_prefix(pa)}error saving the delegates: {err.msg}") from err
    log.info(
        "pod %s: container %s gets %s",
        pa.label,
        request.container_id,
        ", ".join(f"{i}={d.name}" for i, d in zip(ifnames, delegates, strict=False)),
    )

    # From here on every way out but success undoes what ran: the delegates up to the
    # one that failed (itself included), in reverse, and the cache.
    last = -1
    try:
        main_result: Mapping[str, Any] | None = None
        statuses: list[NetworkStatus] = []
        for idx, d in enumerate(delegates):
            last = idx
            ifname = ifnames[idx]
            result, info = _add_one(request, conf, pa, d, ifname, runner, seams)
            if d.master or main_result is None:
                main_result = result
            try:
                statuses.extend(
                    network_status.status_from_result(d.name, result, ifname=ifname, default=d.master, device_info=info)
                )
            except KvnetError as err:
                raise _reword(err, f"{_prefix(pa)}error setting network statuses: {err.msg}") from err

        if api is not None and pod is not None and conf.kubeconfig and not conf.is_system_namespace(pa.namespace):
            try:
                api.set_network_status(pa.namespace, pa.name, network_status.format_network_status(statuses))
            except KvnetError as err:
                raise _reword(err, f"{_prefix(pa)}error setting the networks status: {err.msg}") from err
    except BaseException:
        _rollback(request, conf, pa, delegates, last, runner, seams)
        raise
    return main_result or empty_result(request.cni_version, ifname=request.ifname, netns=request.netns)


def _add_one(
    request: CniRequest, conf: MultusConfig, pa: PodArgs, d: CachedDelegate, ifname: str, runner: Runner, seams: Seams
) -> tuple[dict[str, Any], DeviceInfo | None]:
    """One delegate's ADD (Multus's ``DelegateAdd``), its ``default-route`` edits and its
    device-info (a missing or unreadable file is only logged, as Multus does)."""
    rc = runtime_config(conf, d, request.container_id, ifname, seams.devinfo)
    env = DelegateEnv(request.container_id, request.netns, ifname, delegate_cni_args(request, pa, d), request.path)
    if rc.get("CNIDeviceInfoFile") and d.resource_name and d.device_id and seams.devinfo is not None:
        try:
            seams.devinfo.copy_from_dp(d.resource_name, d.device_id, d.name, request.container_id, ifname)
        except KvnetError as err:
            log.debug("pod %s: %s: no device-plugin device-info: %s", pa.label, d.name, err.msg)
    try:
        result = runner.run_network("ADD", d.conf, env, runtime_config=rc) or {}
    except KvnetError as err:
        net = d.network_name
        raise _reword(
            err,
            f"[{pa.namespace}/{pa.name}/{pa.uid}:{net}]: error adding container to network "
            f"{gojson.go_quote(net)}: {err.msg}",
        ) from err
    log.info("pod %s: added %s from %s", pa.label, ifname, d.name)
    try:
        result = _move_default_route(request, d, ifname, result, seams.routes)
    except KvnetError as err:
        raise _reword(err, f"{_prefix(pa)}error setting default gateway: {err.msg}") from err
    info = None
    if rc.get("CNIDeviceInfoFile") and seams.devinfo is not None:
        try:
            info = seams.devinfo.load(d.name, request.container_id, ifname)
        except KvnetError as err:
            log.debug("pod %s: %s: device-info not read: %s", pa.label, d.name, err.msg)
    return result, info


def _rollback(
    request: CniRequest,
    conf: MultusConfig,
    pa: PodArgs,
    delegates: Sequence[CachedDelegate],
    last: int,
    runner: Runner,
    seams: Seams,
) -> None:
    errors = _delete_all(request, conf, pa, delegates, last, runner, seams)
    for e in errors:
        log.error("pod %s: rollback: %s", pa.label, e)
    try:
        cache.remove(conf.cni_dir, request.container_id)
    except KvnetError as err:
        log.error("pod %s: rollback: %s", pa.label, err.msg)


def delete(
    request: CniRequest,
    *,
    conf: MultusConfig,
    api: KubeApi | None,
    runner: Runner,
    seams: Seams = Seams(),
) -> None:
    """CNI DEL: from the cache (or, without one, from the pod); every delegate is tried."""
    pa = pod_args(request)
    wait_readiness(conf, pa, seams, on_del=True)
    pod = get_pod(api, pa, on_del=True)
    delegates = cache.load(conf.cni_dir, request.container_id)
    from_cache = delegates is not None
    if delegates is None:
        if pod is None:
            log.error(
                "pod %s: no cached delegates for container %s and no pod: nothing to delete",
                pa.label,
                request.container_id,
            )
            return
        try:
            delegates = tuple(load_delegates(conf, api, pod, pa, None, use_devices=False))
        except KvnetError as err:
            if not conf.delegates and not conf.cluster_network:
                raise _reword(err, f"{_prefix(pa)}failed to get delegates: {err.msg}") from err
            log.error("pod %s: failed to get delegates: %s, but continue to delete clusterNetwork", pa.label, err.msg)
            delegates = tuple(load_delegates(conf, api, None, pa, None, use_devices=False))
    delegates = tuple(
        replace(d, conf={**d.conf, "cniVersion": conf.cni_version})
        if d.is_conflist and not d.conf.get("cniVersion") and conf.cni_version
        else d
        for d in delegates
    )
    netns_found = bool(request.netns) and os.path.exists(request.netns)
    if (
        api is not None
        and pod is not None
        and conf.kubeconfig
        and netns_found
        and not conf.is_system_namespace(pa.namespace)
    ):
        try:
            api.set_network_status(pa.namespace, pa.name, EMPTY_STATUS)
        except KvnetError as err:
            log.error("pod %s: error unsetting the networks status: %s", pa.label, err.msg)
    errors = (
        _delete_all(request, conf, pa, delegates, len(delegates) - 1, runner, seams, cached_caps=True)
        if delegates
        else []
    )
    retry = conf.raw.get("retryDeleteOnError") is True
    if from_cache and not (errors and retry):
        cache.remove(conf.cni_dir, request.container_id)
    if errors:
        raise DelegateFailed(" / ".join(errors))


def check(
    request: CniRequest,
    *,
    conf: MultusConfig,
    api: KubeApi | None,
    runner: Runner,
    seams: Seams = Seams(),
) -> None:
    """CNI CHECK: every cached delegate checked, in order."""
    pa = pod_args(request)
    delegates = cache.load(conf.cni_dir, request.container_id)
    if delegates is None:
        raise UnknownContainer(f"{_prefix(pa)}no cached delegates for container {request.container_id}")
    for idx, d in enumerate(delegates):
        ifname = ifname_of(d, idx, request.ifname)
        env = DelegateEnv(request.container_id, request.netns, ifname, delegate_cni_args(request, pa, d), request.path)
        try:
            runner.run_network(
                "CHECK", d.conf, env, runtime_config=runtime_config(conf, d, request.container_id, ifname, None)
            )
        except KvnetError as err:
            if d.is_conflist:
                msg = (
                    f"delegateCheck: error invoking ConflistCheck - {gojson.go_quote(d.network_name)}: "
                    f"conflistCheck: error in getting result from CheckNetworkList: {err.msg}"
                )
            else:
                # "DelNetwork" is Multus's own wording for a failed CHECK of a single plugin.
                msg = (
                    f"delegateCheck: error invoking DelegateCheck - {gojson.go_quote(d.plugin_type)}: "
                    f"error in getting result from DelNetwork: {err.msg}"
                )
            raise _reword(err, msg) from err


def main_delegate(conf: MultusConfig, api: KubeApi | None) -> CachedDelegate:
    """The cluster (main) network without a pod: STATUS and GC act on it alone."""
    pa = PodArgs("", "", "", "")
    delegates = load_delegates(conf, api, None, pa, None, use_devices=False)
    if not delegates:
        raise InvalidConfig("kvnet: no main network configured")
    return delegates[0]


def status(
    request: CniRequest,
    *,
    conf: MultusConfig,
    api: KubeApi | None,
    runner: Runner,
    seams: Seams = Seams(),
) -> None:
    """CNI STATUS (1.1.0): not ready until the readiness file exists; then the main network's STATUS."""
    if conf.readiness_indicator_file and not os.path.exists(conf.readiness_indicator_file):
        raise StatusNotAvailable(
            f"kvnet: the default network is not ready: readinessindicatorfile {conf.readiness_indicator_file} does not exist"
        )
    d = main_delegate(conf, api)
    env = DelegateEnv("", "", "", "", request.path)
    try:
        runner.run_network("STATUS", d.conf, env)
    except KvnetError as err:
        raise _reword(err, f"kvnet: failed to get the status of the main network {d.name}: {err.msg}") from err


def gc(
    request: CniRequest,
    *,
    conf: MultusConfig,
    api: KubeApi | None,
    runner: Runner,
    seams: Seams = Seams(),
) -> None:
    """CNI GC (1.1.0): the main network's GC with the runtime's valid attachments."""
    valid_raw = request.config.get("cni.dev/valid-attachments") or []
    valid = [
        {"containerID": str(a.get("containerID", "")), "ifname": str(a.get("ifname", ""))}
        for a in valid_raw
        if isinstance(a, Mapping)
    ]
    d = main_delegate(conf, api)
    env = DelegateEnv("", "", "", "", request.path)
    try:
        runner.run_network("GC", d.conf, env, valid_attachments=valid)
    except KvnetError as err:
        raise _reword(err, f"kvnet: GC of the main network {d.name}: {err.msg}") from err
