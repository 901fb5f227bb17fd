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
from kvnet.core.errors import KvnetError
from kvnet.core.model import NetworkSelection, NetworkStatus
from kvnet.meta import cache, k8s
from kvnet.meta.config import DEFAULT_CNI_DIR
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
    if facts.namespace_isolation and sel.namespace != facts.namespace:
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
    plugins = conf.get("plugins")
    if not conf.get("type") and isinstance(plugins, list) and plugins and isinstance(plugins[0], dict):
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


def read_link_mtus(netns: str) -> tuple[tuple[str, int], ...]:
    """Every link's MTU in the pod netns (kvnet.binding.netlink owns pyroute2)."""
    from kvnet.binding import netlink  # only with --netns: pyroute2 is slow to import

    with netlink.open_netns(netns) as ns:
        links = (ns.link(name) for name in ns.link_names())
        return tuple((link.name, link.mtu) for link in links if link is not None)


def read_facts(
    api: k8s.LightApi,
    namespace: str,
    name: str,
    *,
    namespace_isolation: bool,
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
    return PodFacts(
        namespace,
        name,
        wanted,
        annotations.get(NETWORK_STATUS),
        tuple(nads),
        messages,
        namespace_isolation,
        node_cache,
        read_link_mtus(netns) if netns else None,
    )


def register(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("pod", help="the pod as NAMESPACE/NAME")
    parser.add_argument("--kubeconfig", required=True, help="kubeconfig of the API server to read")
    parser.add_argument("--namespace-isolation", action="store_true", help="the meta-plugin runs with it on")
    parser.add_argument(
        "--cache-dir",
        default=DEFAULT_CNI_DIR,
        help=f"the meta-plugin's cniDir on this node, read only when it exists (default {DEFAULT_CNI_DIR})",
    )
    parser.add_argument("--container-id", help="the pod's sandbox container (default: found in the cache)")
    parser.add_argument("--netns", help="the pod's network namespace path, to read its link MTUs")
    parser.add_argument("--output", choices=("text", "json"), default="text")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    namespace, _, name = str(args.pod).rpartition("/")
    api = k8s.LightApi(k8s.load_kubeconfig(args.kubeconfig), kubeconfig=args.kubeconfig)
    facts = read_facts(
        api,
        namespace or "default",
        name,
        namespace_isolation=args.namespace_isolation,
        cni_dir=args.cache_dir,
        container_id=args.container_id,
        netns=args.netns,
    )
    findings = explain(facts)
    if args.output == "json":
        print(json.dumps([{**asdict(f), "ok": f.ok} for f in findings], indent=2))
    else:
        for f in findings:
            print(render(f))
    return 0 if all(f.ok for f in findings) else 1


def render(f: Finding) -> str:
    """One finding as a text line."""
    line = f"{f.network}: asked {f.asked}; {f.happened}; " + ("present" if f.present else f"MISSING: {f.cause}")
    return line + "".join(f"; {note}" for note in (f.cache, f.mtu) if note)
