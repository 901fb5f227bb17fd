"""From config + pod to the delegate list (Multus's ``GetDefaultNetworks`` / ``TryLoadPodDelegates``).

The main network (``clusterNetwork`` or the first of ``delegates``, or the pod's
default-network annotation), then ``defaultNetworks``, then each selection of the
``networks`` annotation resolved through its NAD, with its device ID, ``cni-args`` and
requests. Each NAD is read once per call.
"""

from __future__ import annotations

import copy
import ipaddress
import logging
import threading
from collections.abc import Mapping
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import replace
from typing import Any

from kvnet.core.errors import InvalidAnnotation, InvalidConfig, KvnetError, NetworkNotFound
from kvnet.core.gojson import go_quote
from kvnet.core.model import NetworkSelection
from kvnet.core.naming import cni_name_ok
from kvnet.meta import selections
from kvnet.meta.cache import CachedDelegate, conflist_plugins
from kvnet.meta.config import MultusConfig
from kvnet.meta.nad import delegate_from_conf_dir, delegate_from_nad
from kvnet.meta.pod import PodArgs, pod_annotations, pod_meta
from kvnet.meta.ports import DeviceAllocator, KubeApi, client_go_text
from kvnet.meta.wording import cmd_err, reword

log = logging.getLogger("kvnet.meta")


def _inject_args(conf: Mapping[str, Any], cni_args: Mapping[str, Any] | None, device_id: str) -> dict[str, Any]:
    """``args.cni`` merged and ``deviceID``/``pciBusID`` set, in the conf or every conflist plugin."""
    out = copy.deepcopy(dict(conf))
    plugins = conflist_plugins(out)
    targets: list[dict[str, Any]] = [out] if plugins is None else plugins
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
                f"network {nad} asks for devices of resource {go_quote(resource)} but no device allocator "
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
    if not cni_name_ok(name) or not cni_name_ok(namespace):
        raise InvalidAnnotation(f"network {namespace}/{name}: invalid network name")
    missing = f"getKubernetesDelegate: cannot find a network-attachment-definition ({name}) in namespace ({namespace})"
    try:
        # read once, never retried (Multus's GetNetAttachDef)
        nad = api.get_nad(namespace, name) if api is not None else None
    except KvnetError as err:
        raise reword(err, f"{missing}: {client_go_text(err)}") from err
    if nad is None:
        raise NetworkNotFound(f'{missing}: network-attachment-definitions.k8s.cni.cncf.io "{name}" not found')
    d = delegate_from_nad(nad, conf.conf_dir, name_the_nad=False)  # Multus's words, as it returns them
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
    if api is not None and "/" not in netname and cni_name_ok(netname):
        try:
            return _nad_delegate(api, conf, conf.multus_namespace, netname, devices)
        except NetworkNotFound:
            pass
    d = delegate_from_conf_dir(netname, conf.conf_dir)
    return CachedDelegate(name=d.name, conf=dict(d.config))


def _selection_delegate(
    sel: NetworkSelection, api: KubeApi | None, conf: MultusConfig, devices: _DeviceIds | None, *, gateway_given: bool
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
        gateway_request=tuple(sel.default_route) if gateway_given or sel.default_route else None,
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


NAD_READS_AT_ONCE = 8  # concurrent NAD reads of one pod's selections (docs/meta-plugin.md, "NAD reads")
_readers: ThreadPoolExecutor | None = None
_readers_lock = threading.Lock()


def _reader_pool() -> ThreadPoolExecutor:
    global _readers
    with _readers_lock:
        if _readers is None:
            _readers = ThreadPoolExecutor(NAD_READS_AT_ONCE, thread_name_prefix="nad-read")
        return _readers


class _NadsOnce:
    """One ADD reads each NAD once (KubeVirt repeats the binding NAD once per VM network).

    :meth:`prefetch` starts the reads of the pod's selections at once; :meth:`get_nad` still
    hands each answer (or raises each error) in the order the selections are resolved, so
    what a failure looks like is the one-by-one reading's; :meth:`settle` waits for reads
    still running, before any delegate runs."""

    def __init__(self, api: KubeApi) -> None:
        self.api = api
        self.seen: dict[tuple[str, str], Mapping[str, Any] | None] = {}
        self.pending: dict[tuple[str, str], Future[Mapping[str, Any] | None]] = {}

    def get_pod(self, namespace: str, name: str) -> Mapping[str, Any] | None:
        return self.api.get_pod(namespace, name)

    def prefetch(self, keys: list[tuple[str, str]]) -> None:
        todo = [
            k
            for k in dict.fromkeys(keys)
            if k not in self.seen and k not in self.pending and cni_name_ok(k[0]) and cni_name_ok(k[1])
        ]
        if len(todo) < 2:
            return
        pool = _reader_pool()
        for namespace, name in todo:
            self.pending[(namespace, name)] = pool.submit(self.api.get_nad, namespace, name)

    def settle(self) -> None:
        wait(self.pending.values())
        self.pending.clear()

    def get_nad(self, namespace: str, name: str) -> Mapping[str, Any] | None:
        key = (namespace, name)
        if key not in self.seen:
            fut = self.pending.pop(key, None)
            self.seen[key] = fut.result() if fut is not None else self.api.get_nad(namespace, name)
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
    partial: list[CachedDelegate] | None = None,
) -> list[CachedDelegate]:
    """The full delegate list, the main network first.

    ``partial``, when given, holds the list as far as it got, as Multus's ``conf.Delegates``
    does: when the pod's annotations fail after the main networks (or after the selections
    were appended, at ``CheckGatewayConfig``), what was there stays in it (DEL deletes it).
    """
    nads = _NadsOnce(api) if api is not None else None
    try:
        return _load_delegates(conf, nads, pod, pa, allocator, use_devices, partial)
    finally:
        if nads is not None:
            nads.settle()


def _load_delegates(
    conf: MultusConfig,
    api: _NadsOnce | None,
    pod: Mapping[str, Any] | None,
    pa: PodArgs,
    allocator: DeviceAllocator | None,
    use_devices: bool,
    partial: list[CachedDelegate] | None,
) -> list[CachedDelegate]:
    partial = partial if partial is not None else []
    devices = _DeviceIds(allocator, pa) if use_devices else None
    pod_ns = str(pod_meta(pod).get("namespace") or pa.namespace) if pod is not None else pa.namespace
    delegates: list[CachedDelegate] = []
    if conf.cluster_network:
        try:
            delegates.extend(_default_networks(conf, api, pod is None or not conf.is_system_namespace(pod_ns), devices))
        except KvnetError as err:
            raise cmd_err(pa, err, "failed to get clusterNetwork/defaultNetworks") from err
    else:
        for idx, raw in enumerate(conf.delegates):
            name = raw.get("name")
            delegates.append(
                CachedDelegate(name=name if isinstance(name, str) else "", conf=dict(raw), master=idx == 0)
            )
    partial[:] = delegates
    if pod is None:
        return delegates
    notes = pod_annotations(pod)
    try:
        default_value = notes.get(selections.DEFAULT_NETWORK)
        if default_value:
            try:
                sel = selections.parse_default_network(default_value, conf.multus_namespace)
                try:
                    main = _nad_delegate(api, conf, sel.namespace, sel.name, devices)
                except KvnetError as err:
                    raise reword(err, f"tryLoadK8sPodDefaultNetwork: failed getting the delegate: {err.msg}") from err
            except KvnetError as err:
                raise reword(err, f"{_DEFAULT_NET_ERR}{err.msg}") from err
            delegates[0] = partial[0] = replace(main, master=True)
        value = notes.get(selections.NETWORKS)
        if value:
            requested = selections.parse_networks(value, pod_ns)
            given = selections.default_route_given(value)
            if api is not None:
                api.prefetch(
                    [(sel.namespace, sel.name) for sel in requested if conf.namespace_allowed(pod_ns, sel.namespace)]
                )
            added = []
            for i, sel in enumerate(requested):
                if not conf.namespace_allowed(pod_ns, sel.namespace):
                    raise InvalidAnnotation(
                        f"{_NETWORKS_ERR}GetNetworkDelegates: namespace isolation enabled, annotation violates "
                        f"permission, pod is in namespace {pod_ns} but refers to target namespace {sel.namespace}"
                    )
                try:
                    added.append(
                        _selection_delegate(sel, api, conf, devices, gateway_given=i < len(given) and given[i])
                    )
                except KvnetError as err:
                    raise reword(
                        err, f"{_NETWORKS_ERR}GetNetworkDelegates: failed getting the delegate: {err.msg}"
                    ) from err
            delegates.extend(added)
            partial.extend(added)
            if any(d.gateway_request is not None for d in delegates):
                delegates = _check_gateways(delegates)
    except KvnetError as err:
        raise cmd_err(pa, err, "error loading k8s delegates k8s args") from err
    return delegates


def _default_networks(
    conf: MultusConfig, api: KubeApi | None, with_default_networks: bool, devices: _DeviceIds | None
) -> list[CachedDelegate]:
    """Multus's ``GetDefaultNetworks``: ``clusterNetwork`` (the master), then
    ``defaultNetworks``; without an API client there is nothing to resolve them with."""
    if api is None:
        raise InvalidConfig("GetDefaultNetworks: must have either Kubernetes config or delegates")
    out = [replace(_net_delegate(api, conf, conf.cluster_network or "", devices), master=True)]
    if with_default_networks:
        out.extend(_net_delegate(api, conf, n, devices) for n in conf.default_networks)
    return out


def main_delegate(conf: MultusConfig, api: KubeApi | None) -> CachedDelegate:
    """The cluster (main) network without a pod: STATUS and GC act on it alone (Multus's
    ``CmdStatus`` / ``CmdGC``: ``failed to get clusterNetwork: ...`` without a pod prefix)."""
    if conf.cluster_network:
        try:
            return _default_networks(conf, _NadsOnce(api) if api is not None else None, False, None)[0]
        except KvnetError as err:
            raise cmd_err(None, err, "failed to get clusterNetwork") from err
    if not conf.delegates:
        raise InvalidConfig("kvnet: no main network configured")
    raw = conf.delegates[0]
    name = raw.get("name")
    return CachedDelegate(name=name if isinstance(name, str) else "", conf=dict(raw), master=True)
