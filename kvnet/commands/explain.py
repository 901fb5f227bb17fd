"""``kvnet explain``: why a pod has (or lacks) each network it asked for.

The facts are read up front by :func:`read_facts` (the pod, each named NAD with the
HTTP status of its GET, the pod's events); :func:`explain` is a pure function from those
facts to one :class:`Finding` per requested network, in the annotation's order, naming
the first cause it can prove when a network is missing. The annotation and the
network-status are read with the meta-plugin's own parsers (kvnet.meta.selections,
kvnet.meta.status). Exit code 0 when every requested network is present, 1 otherwise.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any
from urllib.parse import quote

from kvnet.core.errors import KvnetError
from kvnet.core.model import NetworkSelection, NetworkStatus
from kvnet.meta import k8s
from kvnet.meta.nad import RESOURCE_NAME
from kvnet.meta.selections import NETWORKS, parse_networks
from kvnet.meta.status import NETWORK_STATUS, parse_network_status


@dataclass(frozen=True)
class NadFact:
    """One NAD's GET: the HTTP status and, when 200, its annotations."""

    namespace: str
    name: str
    status: int
    resource_name: str | None = None


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


@dataclass(frozen=True)
class Finding:
    """One requested network: what was asked, what happened, and the first proven cause."""

    network: str
    asked: str
    happened: str
    present: bool
    cause: str | None = None


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
    if st is None:
        err = _delegate_error(facts, sel)
        return f"delegate error: {err}" if err else "no network-status entry and no event naming it"
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
        out.append(Finding(f"{sel.namespace}/{sel.name}", asked, happened, cause is None, cause))
    return tuple(out)


def _nad_fact(api: k8s.LightApi, namespace: str, name: str) -> NadFact:
    status, data = api.request("GET", k8s.nad_path(namespace, name))
    if status != 200:
        return NadFact(namespace, name, status)
    meta = json.loads(data).get("metadata", {})
    return NadFact(namespace, name, status, (meta.get("annotations") or {}).get(RESOURCE_NAME))


def read_facts(api: k8s.LightApi, namespace: str, name: str, *, namespace_isolation: bool) -> PodFacts:
    """The pod, its NADs and its events (the only I/O of ``kvnet explain``)."""
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
    return PodFacts(
        namespace, name, wanted, annotations.get(NETWORK_STATUS), tuple(nads), messages, namespace_isolation
    )


def register(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("pod", help="the pod as NAMESPACE/NAME")
    parser.add_argument("--kubeconfig", required=True, help="kubeconfig of the API server to read")
    parser.add_argument("--namespace-isolation", action="store_true", help="the meta-plugin runs with it on")
    parser.add_argument("--output", choices=("text", "json"), default="text")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    namespace, _, name = str(args.pod).rpartition("/")
    api = k8s.LightApi(k8s.load_kubeconfig(args.kubeconfig), kubeconfig=args.kubeconfig)
    facts = read_facts(api, namespace or "default", name, namespace_isolation=args.namespace_isolation)
    findings = explain(facts)
    if args.output == "json":
        print(json.dumps([asdict(f) for f in findings], indent=2))
    else:
        for f in findings:
            print(f"{f.network}: asked {f.asked}; {f.happened}; " + ("present" if f.present else f"MISSING: {f.cause}"))
    return 0 if all(f.present for f in findings) else 1
