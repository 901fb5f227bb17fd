"""``kvnet explain``: why a pod has (or lacks) each network it asked for.

The facts are read up front by :func:`read_facts` (the pod, each named NAD with the
HTTP status of its GET, the pod's events); :func:`explain` is a pure function from those
facts to one :class:`Finding` per requested network, in the annotation's order, naming
the first cause it can prove when a network is missing. The annotation and the
network-status are read with the meta-plugin's own parsers (kvnet.meta.selections,
kvnet.meta.status). On the node, ``--cache-dir`` (the meta-plugin's cniDir) is read, never
written: the sandbox container is the one whose libcni result files name the pod in their
CNI args (or ``--container-id``), and its delegate cache (kvnet.meta.cache) says under
which interface the ADD planned each network. ``--netns`` reads the pod's link MTUs through
kvnet.binding.netlink; a NAD whose config (or a conflist's first plugin) sets ``mtu`` is
compared with network-status and the link. Exit code 0 when every requested network is
present with the MTU its NAD asks for, 1 otherwise.

``kvnet explain vmi NAMESPACE/NAME`` does the same for each of a VMI's spec.networks: its
interface and binding plugin, the binding's registration in the KubeVirt CRs, the
virt-launcher pod (by KubeVirt's ``kubevirt.io/created-by`` label, the VMI's active pod
first) explained as a pod, with ``--netns`` (the launcher's) the binding record
(kvnet.core.bindrecord) kvnet-binding leaves on the pod link, and the VMI's
status.interfaces.
"""

from __future__ import annotations

import argparse
import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any
from urllib.parse import quote

from kvnet.cni import libcni_cache
from kvnet.core import bindrecord
from kvnet.core.errors import KvnetError
from kvnet.core.model import NetworkSelection, NetworkStatus
from kvnet.meta import cache, k8s
from kvnet.meta.config import DEFAULT_CNI_DIR, DEFAULT_GLOBAL_NAMESPACES, parse_multus_config
from kvnet.meta.nad import RESOURCE_NAME
from kvnet.meta.plan import ifname_of
from kvnet.meta.selections import NETWORKS, parse_networks
from kvnet.meta.status import NETWORK_STATUS, parse_network_status


@dataclass(frozen=True)
class NadFact:
    """One NAD's GET: the HTTP status and, when 200, its annotations."""

    namespace: str
    name: str
    status: int
    resource_name: str | None = None
    mtu: int | None = None


@dataclass(frozen=True)
class CacheFact:
    """The node's delegate cache of the pod's sandbox: which interface the ADD planned for
    each delegate (``namespace/name`` -> ifname); ``container_id`` None when none was found."""

    cni_dir: str
    container_id: str | None
    ifnames: tuple[tuple[str, str], ...] = ()
    error: str | None = None


@dataclass(frozen=True)
class PodFacts:
    """What was read about one pod, before any judgement."""

    namespace: str
    name: str
    networks_annotation: str | None
    status_annotation: str | None
    nads: tuple[NadFact, ...] = ()
    event_messages: tuple[str, ...] = ()
    namespace_isolation: bool = False
    cache: CacheFact | None = None
    link_mtus: tuple[tuple[str, int], ...] | None = None  # read in the pod netns (--netns)
    link_aliases: tuple[tuple[str, str], ...] | None = None  # each link's ifalias (--netns)
    global_namespaces: tuple[str, ...] = DEFAULT_GLOBAL_NAMESPACES  # usable from any namespace


@dataclass(frozen=True)
class Finding:
    """One requested network: what was asked, what happened, and the first proven cause.
    ``cache`` is what the node's delegate cache says of it, ``mtu`` an MTU mismatch."""

    network: str
    asked: str
    happened: str
    present: bool
    cause: str | None = None
    cache: str | None = None
    mtu: str | None = None

    @property
    def ok(self) -> bool:
        return self.present and self.mtu is None


def _nad_of(facts: PodFacts, sel: NetworkSelection) -> NadFact | None:
    return next((n for n in facts.nads if (n.namespace, n.name) == (sel.namespace, sel.name)), None)


def _status_of(statuses: Sequence[NetworkStatus], sel: NetworkSelection) -> NetworkStatus | None:
    full = f"{sel.namespace}/{sel.name}"
    for st in statuses:
        if st.name == full and (sel.interface is None or st.interface == sel.interface):
            return st
    return None


def _delegate_error(facts: PodFacts, sel: NetworkSelection) -> str | None:
    full = f"{sel.namespace}/{sel.name}"
    return next((m for m in facts.event_messages if full in m or sel.name in m), None)


def _cause(facts: PodFacts, sel: NetworkSelection, nad: NadFact | None, st: NetworkStatus | None) -> str | None:
    if facts.namespace_isolation and sel.namespace not in (facts.namespace, *facts.global_namespaces):
        return f"namespace isolation: the pod in {facts.namespace} may not use a NAD in {sel.namespace}"
    if nad is None or nad.status == 404:
        return f"NAD {sel.namespace}/{sel.name} not found"
    if nad.status != 200:
        return f"NAD {sel.namespace}/{sel.name} not readable (HTTP {nad.status})"
    if nad.resource_name and (st is None or st.device_info is None):
        return f"resourceName {nad.resource_name} without an allocated device (no device-info)"
    cached = _cached_ifname(facts, sel)
    if st is None and facts.cache and facts.cache.container_id and cached is None and not facts.cache.error:
        return f"the ADD of container {facts.cache.container_id} did not ask for it (not in the node's delegate cache)"
    if st is None:
        err = _delegate_error(facts, sel)
        return f"delegate error: {err}" if err else "no network-status entry and no event naming it"
    return None


def _cached_ifname(facts: PodFacts, sel: NetworkSelection) -> str | None:
    if facts.cache is None:
        return None
    return dict(facts.cache.ifnames).get(f"{sel.namespace}/{sel.name}")


def _cache_note(facts: PodFacts, sel: NetworkSelection) -> str | None:
    if facts.cache is None:
        return None
    if facts.cache.error:
        return f"the node's cache is not readable: {facts.cache.error}"
    if facts.cache.container_id is None:
        return f"the node's cache ({facts.cache.cni_dir}) has no container of this pod"
    ifname = _cached_ifname(facts, sel)
    if ifname is None:
        return f"the node's cache (container {facts.cache.container_id}) does not have it"
    return f"the node's cache has it as {ifname}"


def _mtu_note(facts: PodFacts, nad: NadFact | None, st: NetworkStatus | None, ifname: str | None) -> str | None:
    if nad is None or nad.mtu is None:
        return None
    if st is not None and st.mtu is not None and st.mtu != nad.mtu:
        return f"MTU mismatch: NAD says {nad.mtu}, network-status has {st.mtu} for {st.interface}"
    if ifname and facts.link_mtus is not None:
        have = dict(facts.link_mtus).get(ifname)
        if have is not None and have != nad.mtu:
            return f"MTU mismatch: NAD says {nad.mtu}, {ifname} has {have}"
    return None


def explain(facts: PodFacts) -> tuple[Finding, ...]:
    """The findings for every network the pod's annotation asks for, in order."""
    if not facts.networks_annotation:
        return ()
    try:
        selections = parse_networks(facts.networks_annotation, facts.namespace)
    except KvnetError as err:
        return (Finding(NETWORKS, facts.networks_annotation, "not parsed", False, f"annotation refused: {err.msg}"),)
    try:
        statuses = parse_network_status(facts.status_annotation) if facts.status_annotation else ()
    except KvnetError:
        statuses = ()
    out: list[Finding] = []
    for sel in selections:
        nad = _nad_of(facts, sel)
        st = _status_of(statuses, sel)
        asked = f"NAD {sel.namespace}/{sel.name}" + (f" as {sel.interface}" if sel.interface else "")
        happened = f"network-status: {st.interface} {', '.join(st.ips) or 'no address'}" if st else "no network-status"
        cause = _cause(facts, sel, nad, st)
        ifname = (st.interface if st else None) or _cached_ifname(facts, sel) or sel.interface
        out.append(
            Finding(
                f"{sel.namespace}/{sel.name}",
                asked,
                happened,
                cause is None,
                cause,
                _cache_note(facts, sel),
                _mtu_note(facts, nad, st, ifname),
            )
        )
    return tuple(out)


def _nad_fact(api: k8s.LightApi, namespace: str, name: str) -> NadFact:
    status, data = api.request("GET", k8s.nad_path(namespace, name))
    if status != 200:
        return NadFact(namespace, name, status)
    obj = json.loads(data)
    meta = obj.get("metadata", {})
    return NadFact(namespace, name, status, (meta.get("annotations") or {}).get(RESOURCE_NAME), nad_mtu(obj))


def nad_mtu(nad: Mapping[str, Any]) -> int | None:
    """The ``mtu`` of a NAD's config, or of a conflist's first plugin (None when unset or unreadable)."""
    try:
        conf = json.loads((nad.get("spec") or {}).get("config") or "{}")
    except ValueError:
        return None
    if not isinstance(conf, dict):
        return None
    plugins = cache.conflist_plugins(conf)
    if plugins and isinstance(plugins[0], dict):
        conf = plugins[0]
    mtu = conf.get("mtu")
    return mtu if isinstance(mtu, int) and not isinstance(mtu, bool) and mtu > 0 else None


def _pod_containers(cni_dir: str, pod: Mapping[str, Any]) -> list[str]:
    """Container IDs whose libcni result files name the pod (namespace, name and, when
    both are known, UID), newest delegate cache first."""
    meta = pod.get("metadata", {})
    want = (meta.get("namespace"), meta.get("name"))
    uid = meta.get("uid") or ""
    found: set[str] = set()
    for att in libcni_cache.list_attachments(cni_dir):
        args = dict(att.cni_args)
        if (args.get("K8S_POD_NAMESPACE"), args.get("K8S_POD_NAME")) != want:
            continue
        if uid and args.get("K8S_POD_UID") and args["K8S_POD_UID"] != uid:
            continue
        found.add(att.container_id)

    def mtime(cid: str) -> float:
        try:
            return os.stat(os.path.join(cni_dir, cid)).st_mtime
        except OSError:
            return 0.0

    return sorted(found, key=mtime, reverse=True)


def read_cache(cni_dir: str, pod: Mapping[str, Any], container_id: str | None) -> CacheFact:
    """The node's delegate cache of the pod's sandbox (read-only)."""
    try:
        ids = [container_id] if container_id else _pod_containers(cni_dir, pod)
        for cid in ids:
            delegates = cache.load(cni_dir, cid)
            if delegates is None:
                continue
            ifnames = tuple((d.name, ifname_of(d, idx, "eth0")) for idx, d in enumerate(delegates) if not d.master)
            return CacheFact(cni_dir, cid, ifnames)
    except KvnetError as err:
        return CacheFact(cni_dir, container_id, error=err.msg)
    return CacheFact(cni_dir, None)


def read_links(netns: str) -> tuple[tuple[tuple[str, int], ...], tuple[tuple[str, str], ...]]:
    """Every link's MTU and ifalias in the pod netns (kvnet.binding.netlink owns pyroute2)."""
    from kvnet.binding import netlink  # only with --netns: pyroute2 is slow to import

    with netlink.open_netns(netns) as ns:
        links = [link for link in (ns.link(name) for name in ns.link_names()) if link is not None]
    return tuple((link.name, link.mtu) for link in links), tuple((link.name, link.alias) for link in links)


def read_facts(
    api: k8s.LightApi,
    namespace: str,
    name: str,
    *,
    namespace_isolation: bool,
    global_namespaces: tuple[str, ...] = DEFAULT_GLOBAL_NAMESPACES,
    cni_dir: str | None = None,
    container_id: str | None = None,
    netns: str | None = None,
) -> PodFacts:
    """The pod, its NADs and its events; on the node the delegate cache and the pod's
    link MTUs (the only I/O of ``kvnet explain``)."""
    pod = api.get_pod(namespace, name)
    if pod is None:
        raise KvnetError(f"pod {namespace}/{name} not found")
    annotations: Mapping[str, Any] = pod.get("metadata", {}).get("annotations") or {}
    wanted = annotations.get(NETWORKS)
    nads: list[NadFact] = []
    try:
        selections = parse_networks(wanted, namespace) if wanted else ()
    except KvnetError:
        selections = ()
    for sel in selections:
        nads.append(_nad_fact(api, sel.namespace, sel.name))
    selector = quote(f"involvedObject.name={name}")
    status, data = api.request("GET", f"/api/v1/namespaces/{namespace}/events?fieldSelector={selector}")
    items = json.loads(data).get("items", []) if status == 200 else []
    messages = tuple(str(e.get("message", "")) for e in items if e.get("type") == "Warning")
    node_cache = read_cache(cni_dir, pod, container_id) if cni_dir and os.path.isdir(cni_dir) else None
    mtus, aliases = read_links(netns) if netns else (None, None)
    return PodFacts(
        namespace,
        name,
        wanted,
        annotations.get(NETWORK_STATUS),
        tuple(nads),
        messages,
        namespace_isolation,
        node_cache,
        mtus,
        aliases,
        global_namespaces,
    )


def register(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "target",
        nargs="+",
        metavar="[pod|vmi] NAMESPACE/NAME",
        help="a pod (the default) or a VMI (vmi NAMESPACE/NAME)",
    )
    parser.add_argument("--kubeconfig", required=True, help="kubeconfig of the API server to read")
    parser.add_argument(
        "--conf",
        metavar="FILE",
        help="the meta-plugin's config on this node (its conflist or conf, e.g. /etc/cni/net.d/00-kvnet.conflist): "
        "namespaceIsolation, globalNamespaces and cniDir are read from it",
    )
    parser.add_argument("--namespace-isolation", action="store_true", help="the meta-plugin runs with it on")
    parser.add_argument(
        "--cache-dir",
        help=f"the meta-plugin's cniDir on this node, read only when it exists (default: the --conf's cniDir, "
        f"else {DEFAULT_CNI_DIR})",
    )
    parser.add_argument("--container-id", help="the pod's sandbox container (default: found in the cache)")
    parser.add_argument(
        "--netns", help="the pod's network namespace path, to read its link MTUs (and, for a VMI, binding records)"
    )
    parser.add_argument(
        "--kvnet-binding",
        default=KVNET_BINDING,
        help=f"the binding name kvnet's sidecar is registered under in the KubeVirt CR (default {KVNET_BINDING})",
    )
    parser.add_argument("--output", choices=("text", "json"), default="text")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    target = list(args.target)
    kind = target.pop(0) if len(target) == 2 else "pod"
    if kind not in ("pod", "vmi") or len(target) != 1:
        raise KvnetError("usage: kvnet explain [pod|vmi] NAMESPACE/NAME")
    namespace, _, name = target[0].rpartition("/")
    api = k8s.LightApi(k8s.load_kubeconfig(args.kubeconfig), kubeconfig=args.kubeconfig)
    isolation, global_namespaces, cni_dir = (
        node_conf(args.conf) if args.conf else (False, DEFAULT_GLOBAL_NAMESPACES, None)
    )
    options: dict[str, Any] = {
        "namespace_isolation": args.namespace_isolation or isolation,
        "global_namespaces": global_namespaces,
        "cni_dir": args.cache_dir or cni_dir or DEFAULT_CNI_DIR,
        "container_id": args.container_id,
        "netns": args.netns,
    }
    if kind == "vmi":
        facts = read_vmi_facts(api, namespace or "default", name, kvnet_binding=args.kvnet_binding, **options)
        findings = explain_vmi(facts)
    else:
        findings = explain(read_facts(api, namespace or "default", name, **options))
    if args.output == "json":
        print(json.dumps([{**asdict(f), "ok": f.ok} for f in findings], indent=2))
    else:
        for f in findings:
            print(render(f))
    return 0 if all(f.ok for f in findings) else 1


META_TYPES = ("kvnet", "kvnet-shim", "multus", "multus-shim")


def node_conf(path: str) -> tuple[bool, tuple[str, ...], str]:
    """(namespaceIsolation, globalNamespaces, cniDir) of the meta-plugin config at ``path``:
    a conf, or a conflist whose plugin of a meta-plugin type carries them."""
    try:
        with open(path, encoding="utf-8") as fh:
            raw = json.load(fh)
    except (OSError, ValueError) as err:
        raise KvnetError(f"kvnet explain: cannot read --conf {path}: {err}") from err
    if not isinstance(raw, dict):
        raise KvnetError(f"kvnet explain: --conf {path} is not a JSON object")
    plugins = raw.get("plugins")
    if isinstance(plugins, list):
        found = next((p for p in plugins if isinstance(p, dict) and p.get("type") in META_TYPES), None)
        if found is None:
            raise KvnetError(f"kvnet explain: --conf {path} has no plugin of type {', '.join(META_TYPES)}")
        raw = {"cniVersion": raw.get("cniVersion"), "name": raw.get("name"), **found}
    # the keys read here do not depend on the main network, which a shim's config does not name
    conf = parse_multus_config({"clusterNetwork": "unused", **raw})
    return conf.namespace_isolation, conf.global_namespaces, conf.cni_dir


def render(f: Finding) -> str:
    """One finding as a text line."""
    line = f"{f.network}: asked {f.asked}; {f.happened}; " + ("present" if f.present else f"MISSING: {f.cause}")
    return line + "".join(f"; {note}" for note in (f.cache, f.mtu) if note)


# ------------------------------------------------------------------------------------
# VMIs: kvnet explain vmi NAMESPACE/NAME
# ------------------------------------------------------------------------------------

CREATED_BY = "kubevirt.io/created-by"
KVNET_BINDING = "kvnet"  # the name deploy/kubevirt-cr-patch.yaml registers kvnet's sidecar under


@dataclass(frozen=True)
class VmiNetwork:
    """One entry of a VMI's spec.networks with its interface's binding plugin name."""

    name: str
    multus: str | None  # the multus networkName as NAMESPACE/NAME; None for the pod network
    binding: str | None  # spec.domain.devices.interfaces[].binding.name
    has_interface: bool = True


@dataclass(frozen=True)
class VmiFacts:
    """What was read about one VMI: its networks, the interface names in its status, the
    binding plugins each KubeVirt CR registers, and its virt-launcher pod's facts."""

    namespace: str
    name: str
    networks: tuple[VmiNetwork, ...]
    status_interfaces: tuple[str, ...]
    registered: tuple[tuple[str, tuple[str, ...]], ...]  # (KubeVirt CR ns/name, binding names)
    launcher: PodFacts | None
    kvnet_binding: str = KVNET_BINDING  # networks bound by it carry a binding record (--netns)


def _launcher_iface(launcher: PodFacts, network: str) -> str | None:
    """The launcher pod's interface for a NAD, from its network-status."""
    try:
        statuses = parse_network_status(launcher.status_annotation) if launcher.status_annotation else ()
    except KvnetError:
        return None
    return next((st.interface for st in statuses if st.name == network and st.interface), None)


def _record_of(facts: VmiFacts, net: VmiNetwork) -> tuple[str, str] | None:
    """(pod interface, its ifalias) of a kvnet-bound network when the netns was read."""
    launcher = facts.launcher
    if launcher is None or launcher.link_aliases is None or net.multus is None or net.binding != facts.kvnet_binding:
        return None
    iface = _launcher_iface(launcher, net.multus)
    return None if iface is None else (iface, dict(launcher.link_aliases).get(iface, ""))


def _record_note(facts: VmiFacts, net: VmiNetwork) -> str:
    found = _record_of(facts, net)
    try:
        record = bindrecord.decode(found[1]) if found else None
    except KvnetError:
        record = None
    if found is None or record is None:
        return ""
    return f"; binding record on {found[0]}: guest MAC {record.original_mac}, MTU {record.mtu}"


def _record_cause(facts: VmiFacts, net: VmiNetwork) -> str | None:
    """With the launcher's netns read: the binding record kvnet-binding leaves on the pod link."""
    found = _record_of(facts, net)
    if found is None:
        return None
    iface, alias = found
    assert facts.launcher is not None and facts.launcher.link_aliases is not None
    if iface not in dict(facts.launcher.link_aliases):
        return f"pod interface {iface} absent from the launcher pod's netns"
    try:
        record = bindrecord.decode(alias)
    except KvnetError as err:
        return f"binding record on {iface} unreadable: {err.msg}"
    if record is None:
        return f"binding record absent on {iface}: kvnet-binding did not plumb it"
    return None


def _vmi_cause(facts: VmiFacts, net: VmiNetwork, pod_finding: Finding | None) -> str | None:
    if not net.has_interface:
        return f"no interface in spec.domain.devices.interfaces is named {net.name}"
    if net.binding is not None:
        if not facts.registered:
            return f"binding plugin {net.binding} not registered: no KubeVirt CR found"
        if not any(net.binding in names for _, names in facts.registered):
            crs = ", ".join(f"{cr} has [{', '.join(names)}]" for cr, names in facts.registered)
            return f"binding plugin {net.binding} not registered in the KubeVirt CR ({crs})"
    if facts.launcher is None:
        return "virt-launcher pod missing"
    if net.multus is not None:
        if pod_finding is None:
            return f"the virt-launcher pod {facts.launcher.name} does not ask for {net.multus}"
        if not pod_finding.present:
            return pod_finding.cause
    record = _record_cause(facts, net)
    if record is not None:
        return record
    if net.name not in facts.status_interfaces:
        return "interface absent from VMI status.interfaces"
    return None


def explain_vmi(facts: VmiFacts) -> tuple[Finding, ...]:
    """One finding per VMI network, in spec.networks order (the launcher pod's path reused)."""
    pod_findings = explain(facts.launcher) if facts.launcher else ()
    out = []
    for net in facts.networks:
        pod_finding = next((f for f in pod_findings if f.network == net.multus), None)
        asked = f"network {net.name} " + (f"multus {net.multus}" if net.multus else "pod network")
        asked += f", binding {net.binding}" if net.binding else ""
        if facts.launcher is None:
            happened = "no virt-launcher pod"
        elif pod_finding is not None:
            happened = f"launcher pod {facts.launcher.name} {pod_finding.happened}"
        else:
            happened = f"launcher pod {facts.launcher.name}"
        happened += _record_note(facts, net)
        happened += "; in VMI status" if net.name in facts.status_interfaces else "; not in VMI status"
        cause = _vmi_cause(facts, net, pod_finding)
        cache_note = pod_finding.cache if pod_finding else None
        mtu = pod_finding.mtu if pod_finding else None
        out.append(
            Finding(
                f"{facts.namespace}/{facts.name}/{net.name}", asked, happened, cause is None, cause, cache_note, mtu
            )
        )
    return tuple(out)


def vmi_networks(vmi: Mapping[str, Any]) -> tuple[VmiNetwork, ...]:
    """spec.networks joined with spec.domain.devices.interfaces by name."""
    namespace = vmi.get("metadata", {}).get("namespace") or "default"
    spec = vmi.get("spec") or {}
    ifaces = {i.get("name"): i for i in ((spec.get("domain") or {}).get("devices") or {}).get("interfaces") or []}
    out = []
    for net in spec.get("networks") or []:
        name = str(net.get("name", ""))
        multus = (net.get("multus") or {}).get("networkName")
        full = None
        if isinstance(multus, str) and multus:
            full = multus if "/" in multus else f"{namespace}/{multus}"
        iface = ifaces.get(name)
        binding = ((iface or {}).get("binding") or {}).get("name")
        out.append(VmiNetwork(name, full, binding if isinstance(binding, str) else None, iface is not None))
    return tuple(out)


def _get_json(api: k8s.LightApi, path: str) -> Mapping[str, Any] | None:
    status, data = api.request("GET", path)
    if status == 404:
        return None
    if status != 200:
        raise KvnetError(f"GET {path}: HTTP {status}")
    obj: Mapping[str, Any] = json.loads(data)
    return obj


def read_vmi_facts(
    api: k8s.LightApi, namespace: str, name: str, *, kvnet_binding: str = KVNET_BINDING, **pod_options: Any
) -> VmiFacts:
    """The VMI, the KubeVirt CRs, and the VMI's virt-launcher pod with its facts."""
    vmi = _get_json(api, f"/apis/kubevirt.io/v1/namespaces/{namespace}/virtualmachineinstances/{name}")
    if vmi is None:
        raise KvnetError(f"VMI {namespace}/{name} not found")
    crs = _get_json(api, "/apis/kubevirt.io/v1/kubevirts") or {}
    registered = tuple(
        (
            f"{cr['metadata'].get('namespace')}/{cr['metadata']['name']}",
            tuple(sorted(((cr.get("spec") or {}).get("configuration") or {}).get("network", {}).get("binding") or {})),
        )
        for cr in crs.get("items") or []
    )
    uid = vmi.get("metadata", {}).get("uid", "")
    selector = quote(f"{CREATED_BY}={uid}")
    pods = (_get_json(api, f"/api/v1/namespaces/{namespace}/pods?labelSelector={selector}") or {}).get("items") or []
    active = set((vmi.get("status") or {}).get("activePods") or {})
    pods = sorted(pods, key=lambda p: p.get("metadata", {}).get("uid") not in active)
    launcher = None
    if pods:
        launcher = read_facts(api, namespace, pods[0]["metadata"]["name"], **pod_options)
    names = tuple(str(i.get("name")) for i in (vmi.get("status") or {}).get("interfaces") or [] if i.get("name"))
    return VmiFacts(namespace, name, vmi_networks(vmi), names, registered, launcher, kvnet_binding)
