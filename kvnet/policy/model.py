"""MultiNetworkPolicy as values, and the pure function to the rules each pod attachment wants.

A :class:`Policy` is a MultiNetworkPolicy read by :func:`parse_policy` (NetworkPolicy's spec,
plus the ``k8s.v1.cni.cncf.io/policy-for`` annotation naming the NADs it applies to). A
:class:`Pod` is what the rules need of a pod (:func:`parse_pod`): its labels, node, netns and
the network-status entries the meta-plugin wrote. :func:`wanted_rules` turns (policies, pods,
namespace labels) into one :class:`PodRules` per pod that any policy selects on one of its
attachments: per attachment (interface), for each isolated direction, the allow list built
from the peers' addresses on that same NAD and from ipBlocks. NetworkPolicy's semantics:

* a pod is isolated in a direction on a network when a policy in its namespace selects it,
  names that network in ``policy-for`` and lists the direction in ``policyTypes`` (default:
  Ingress, plus Egress when the policy has egress rules);
* traffic is allowed when it matches at least one rule of any such policy: a rule's peers
  are ORed (none: any peer), its ports are ORed (none: any port), peers AND ports;
* a peer with ``podSelector`` and/or ``namespaceSelector`` stands for the addresses the
  selected pods have on the policed network (their network-status entry for the same NAD);
  ``ipBlock`` stands for its CIDR minus its ``except`` CIDRs.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from kvnet.core.errors import InvalidAnnotation, InvalidConfig
from kvnet.core.model import NetworkStatus
from kvnet.meta.status import NETWORK_STATUS, parse_network_status

POLICY_FOR = "k8s.v1.cni.cncf.io/policy-for"
NETNS_ANNOTATION = "kvnet.io/netns"  # the lab's way to name a pod's netns (docs/policy.md)
GROUP, VERSION, PLURAL, KIND = "k8s.cni.cncf.io", "v1beta1", "multi-networkpolicies", "MultiNetworkPolicy"
PROTOCOLS = ("TCP", "UDP", "SCTP")
INGRESS, EGRESS = "Ingress", "Egress"
_OPERATORS = ("In", "NotIn", "Exists", "DoesNotExist")


# ------------------------------------------------------------------------------------
# the policy
# ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Requirement:
    """One ``matchExpressions`` element."""

    key: str
    operator: str
    values: tuple[str, ...] = ()


@dataclass(frozen=True)
class LabelSelector:
    """A label selector; the empty one selects everything."""

    match_labels: tuple[tuple[str, str], ...] = ()
    match_expressions: tuple[Requirement, ...] = ()

    def matches(self, labels: Mapping[str, str]) -> bool:
        if any(labels.get(k) != v for k, v in self.match_labels):
            return False
        for req in self.match_expressions:
            present = req.key in labels
            if req.operator == "In" and not (present and labels[req.key] in req.values):
                return False
            if req.operator == "NotIn" and present and labels[req.key] in req.values:
                return False
            if req.operator == "Exists" and not present:
                return False
            if req.operator == "DoesNotExist" and present:
                return False
        return True


@dataclass(frozen=True)
class IPBlock:
    cidr: str
    excepts: tuple[str, ...] = ()


@dataclass(frozen=True)
class Peer:
    """One ``from``/``to`` element: pods (by pod and/or namespace selector) or an ipBlock."""

    pod_selector: LabelSelector | None = None
    namespace_selector: LabelSelector | None = None
    ip_block: IPBlock | None = None


@dataclass(frozen=True)
class PolicyPort:
    """One ``ports`` element; ``port`` None is every port of the protocol, a str a named port."""

    protocol: str = "TCP"
    port: int | str | None = None
    end_port: int | None = None


@dataclass(frozen=True)
class Rule:
    """One ingress or egress rule: no peers is every peer, no ports every port."""

    peers: tuple[Peer, ...] = ()
    ports: tuple[PolicyPort, ...] = ()


@dataclass(frozen=True)
class Policy:
    namespace: str
    name: str
    networks: tuple[str, ...]  # "namespace/name" of each NAD in policy-for
    pod_selector: LabelSelector
    policy_types: frozenset[str]
    ingress: tuple[Rule, ...] = ()
    egress: tuple[Rule, ...] = ()


def _where(obj: str, field: str) -> str:
    return f"{obj}: {field}"


def _mapping(raw: object, where: str) -> Mapping[str, Any]:
    if raw is None:
        return {}
    if not isinstance(raw, Mapping):
        raise InvalidConfig(f"{where} must be an object")
    return raw


def _list(raw: object, where: str) -> list[Any]:
    if raw is None:
        return []
    if not isinstance(raw, list):
        raise InvalidConfig(f"{where} must be a list")
    return raw


def parse_selector(raw: object, where: str) -> LabelSelector:
    data = _mapping(raw, where)
    labels = _mapping(data.get("matchLabels"), f"{where}.matchLabels")
    reqs = []
    for i, item in enumerate(_list(data.get("matchExpressions"), f"{where}.matchExpressions")):
        expr = _mapping(item, f"{where}.matchExpressions[{i}]")
        op = str(expr.get("operator", ""))
        values = tuple(str(v) for v in _list(expr.get("values"), f"{where}.matchExpressions[{i}].values"))
        if op not in _OPERATORS:
            raise InvalidConfig(f"{where}.matchExpressions[{i}]: operator {op!r} is not one of {', '.join(_OPERATORS)}")
        if op in ("In", "NotIn") and not values:
            raise InvalidConfig(f"{where}.matchExpressions[{i}]: operator {op} needs values")
        reqs.append(Requirement(str(expr.get("key", "")), op, values))
    return LabelSelector(tuple(sorted((str(k), str(v)) for k, v in labels.items())), tuple(reqs))


def _cidr(raw: object, where: str) -> str:
    try:
        return str(ipaddress.ip_network(str(raw), strict=False))
    except ValueError:
        raise InvalidConfig(f"{where}: {raw!r} is not a CIDR") from None


def _peer(raw: object, where: str) -> Peer:
    data = _mapping(raw, where)
    if data.get("ipBlock") is not None:
        if data.get("podSelector") is not None or data.get("namespaceSelector") is not None:
            raise InvalidConfig(f"{where}: ipBlock may not be combined with a pod or namespace selector")
        block = _mapping(data["ipBlock"], f"{where}.ipBlock")
        cidr = _cidr(block.get("cidr"), f"{where}.ipBlock.cidr")
        excepts = tuple(_cidr(e, f"{where}.ipBlock.except") for e in _list(block.get("except"), f"{where}.ipBlock"))
        net = ipaddress.ip_network(cidr)
        for e in excepts:
            inner = ipaddress.ip_network(e)
            if inner.version != net.version or not inner.subnet_of(net):  # type: ignore[arg-type]
                raise InvalidConfig(f"{where}.ipBlock.except: {e} is not inside {cidr}")
        return Peer(ip_block=IPBlock(cidr, excepts))
    pods = data.get("podSelector")
    namespaces = data.get("namespaceSelector")
    if pods is None and namespaces is None:
        raise InvalidConfig(f"{where}: a peer needs podSelector, namespaceSelector or ipBlock")
    return Peer(
        pod_selector=None if pods is None else parse_selector(pods, f"{where}.podSelector"),
        namespace_selector=None if namespaces is None else parse_selector(namespaces, f"{where}.namespaceSelector"),
    )


def _port_number(raw: object, where: str) -> int:
    if isinstance(raw, bool) or not isinstance(raw, int) or not 1 <= raw <= 65535:
        raise InvalidConfig(f"{where}: {raw!r} is not a port number (1-65535)")
    return raw


def _port(raw: object, where: str) -> PolicyPort:
    data = _mapping(raw, where)
    protocol = str(data.get("protocol") or "TCP")
    if protocol not in PROTOCOLS:
        raise InvalidConfig(f"{where}.protocol: {protocol!r} is not one of {', '.join(PROTOCOLS)}")
    port_raw = data.get("port")
    port: int | str | None
    if port_raw is None:
        port = None
    elif isinstance(port_raw, str) and not port_raw.isdigit():
        port = port_raw
    else:
        port = _port_number(int(port_raw) if isinstance(port_raw, str) else port_raw, f"{where}.port")
    end_port = None
    if data.get("endPort") is not None:
        end_port = _port_number(data["endPort"], f"{where}.endPort")
        if not isinstance(port, int):
            raise InvalidConfig(f"{where}.endPort needs a numeric port")
        if end_port < port:
            raise InvalidConfig(f"{where}.endPort {end_port} is below port {port}")
    return PolicyPort(protocol, port, end_port)


def _rule(raw: object, where: str, peers_key: str) -> Rule:
    data = _mapping(raw, where)
    peers = tuple(_peer(p, f"{where}.{peers_key}[{i}]") for i, p in enumerate(_list(data.get(peers_key), where)))
    ports = tuple(_port(p, f"{where}.ports[{i}]") for i, p in enumerate(_list(data.get("ports"), where)))
    return Rule(peers, ports)


def parse_policy_for(value: str | None, namespace: str) -> tuple[str, ...]:
    """The NADs of ``policy-for`` (``"ns/net-a, net-b"``) as ``namespace/name``, in order."""
    out: list[str] = []
    for item in (value or "").split(","):
        item = item.strip()
        if not item:
            continue
        ns, sep, name = item.partition("/")
        if not sep:
            ns, name = namespace, item
        if not ns or not name or "/" in name:
            raise InvalidAnnotation(f"{POLICY_FOR}: {item!r} is not a NAD name or namespace/name")
        if f"{ns}/{name}" not in out:
            out.append(f"{ns}/{name}")
    return tuple(out)


def parse_policy(obj: Mapping[str, Any]) -> Policy:
    """A MultiNetworkPolicy object (API JSON) as a :class:`Policy`; InvalidConfig when malformed."""
    meta = _mapping(obj.get("metadata"), "metadata")
    namespace, name = str(meta.get("namespace") or "default"), str(meta.get("name") or "")
    where = f"MultiNetworkPolicy {namespace}/{name}"
    annotations = _mapping(meta.get("annotations"), f"{where}: metadata.annotations")
    spec = _mapping(obj.get("spec"), _where(where, "spec"))
    ingress = tuple(
        _rule(r, _where(where, f"spec.ingress[{i}]"), "from")
        for i, r in enumerate(_list(spec.get("ingress"), _where(where, "spec.ingress")))
    )
    egress = tuple(
        _rule(r, _where(where, f"spec.egress[{i}]"), "to")
        for i, r in enumerate(_list(spec.get("egress"), _where(where, "spec.egress")))
    )
    types_raw = spec.get("policyTypes")
    if types_raw is None:
        types = frozenset({INGRESS, EGRESS} if spec.get("egress") else {INGRESS})
    else:
        types = frozenset(str(t) for t in _list(types_raw, _where(where, "spec.policyTypes")))
        bad = sorted(types - {INGRESS, EGRESS})
        if bad:
            raise InvalidConfig(f"{where}: spec.policyTypes has {', '.join(bad)} (only Ingress and Egress)")
    return Policy(
        namespace=namespace,
        name=name,
        networks=parse_policy_for(annotations.get(POLICY_FOR), namespace),
        pod_selector=parse_selector(spec.get("podSelector"), _where(where, "spec.podSelector")),
        policy_types=types,
        ingress=ingress,
        egress=egress,
    )


# ------------------------------------------------------------------------------------
# pods and namespaces
# ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ContainerPort:
    name: str
    port: int
    protocol: str = "TCP"


@dataclass(frozen=True)
class Pod:
    namespace: str
    name: str
    node: str = ""
    labels: tuple[tuple[str, str], ...] = ()
    netns: str | None = None  # the kvnet.io/netns annotation, as written
    statuses: tuple[NetworkStatus, ...] = ()
    ports: tuple[ContainerPort, ...] = ()
    running: bool = True  # False once Succeeded/Failed or being deleted: no longer a peer

    @property
    def key(self) -> tuple[str, str]:
        return (self.namespace, self.name)

    @property
    def label_map(self) -> dict[str, str]:
        return dict(self.labels)


def parse_pod(obj: Mapping[str, Any]) -> Pod:
    """What the rules need of a pod object (API JSON). An unreadable network-status counts as
    none: the pod then has no attachments to police and no addresses as a peer."""
    meta = _mapping(obj.get("metadata"), "metadata")
    spec = _mapping(obj.get("spec"), "spec")
    annotations = {str(k): str(v) for k, v in _mapping(meta.get("annotations"), "annotations").items()}
    try:
        statuses = parse_network_status(annotations[NETWORK_STATUS]) if NETWORK_STATUS in annotations else ()
    except InvalidAnnotation:
        statuses = ()
    ports = []
    for container in _list(spec.get("containers"), "spec.containers"):
        for port in _list(_mapping(container, "container").get("ports"), "ports"):
            p = _mapping(port, "port")
            if p.get("name") and isinstance(p.get("containerPort"), int):
                ports.append(ContainerPort(str(p["name"]), int(p["containerPort"]), str(p.get("protocol") or "TCP")))
    phase = str(_mapping(obj.get("status"), "status").get("phase") or "")
    return Pod(
        namespace=str(meta.get("namespace") or "default"),
        name=str(meta.get("name") or ""),
        node=str(spec.get("nodeName") or ""),
        labels=tuple(sorted((str(k), str(v)) for k, v in _mapping(meta.get("labels"), "labels").items())),
        netns=annotations.get(NETNS_ANNOTATION),
        statuses=statuses,
        ports=tuple(ports),
        running=phase not in ("Succeeded", "Failed") and not meta.get("deletionTimestamp"),
    )


def namespace_labels(obj: Mapping[str, Any]) -> tuple[str, dict[str, str]]:
    """(name, labels) of a Namespace object."""
    meta = _mapping(obj.get("metadata"), "metadata")
    return str(meta.get("name") or ""), {str(k): str(v) for k, v in _mapping(meta.get("labels"), "labels").items()}


# ------------------------------------------------------------------------------------
# the wanted rules
# ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PortMatch:
    """A protocol and optionally a port or an inclusive port range."""

    protocol: str
    port: int | None = None
    end_port: int | None = None


@dataclass(frozen=True)
class AllowRule:
    """Traffic allowed in one direction: from/to ``cidrs`` minus ``excluded`` (or any address
    when ``any_peer``), on any of ``ports`` (or every port when empty)."""

    ports: tuple[PortMatch, ...] = ()
    cidrs: tuple[str, ...] = ()
    excluded: tuple[str, ...] = ()
    any_peer: bool = False


@dataclass(frozen=True)
class AttachmentRules:
    """One policed interface; a direction that is None is not isolated (all allowed)."""

    interface: str
    network: str
    ingress: tuple[AllowRule, ...] | None = None
    egress: tuple[AllowRule, ...] | None = None


@dataclass(frozen=True)
class PodRules:
    namespace: str
    name: str
    netns: str | None
    attachments: tuple[AttachmentRules, ...]

    @property
    def key(self) -> tuple[str, str]:
        return (self.namespace, self.name)


def _addresses(pod: Pod, network: str) -> list[str]:
    out = []
    for status in pod.statuses:
        if status.name == network:
            for ip in status.ips:
                try:
                    out.append(str(ipaddress.ip_network(ip.split("/")[0])))
                except ValueError:
                    continue
    return out


def _peer_pods(
    peer: Peer, policy: Policy, pods: Sequence[Pod], namespaces: Mapping[str, Mapping[str, str]]
) -> list[Pod]:
    if peer.namespace_selector is None:
        allowed_ns = {policy.namespace}
    else:
        sel = peer.namespace_selector
        allowed_ns = {ns for ns, labels in namespaces.items() if sel.matches(labels)}
    return [
        p
        for p in pods
        if p.running
        and p.namespace in allowed_ns
        and (peer.pod_selector is None or peer.pod_selector.matches(p.label_map))
    ]


def _ports(rule: Rule, direction: str, target: Pod) -> tuple[PortMatch, ...] | None:
    """The rule's ports as matches; None when the rule has ports but none can match (named
    ports are resolved on the policed pod's containers for ingress, not yet for egress)."""
    out: list[PortMatch] = []
    for p in rule.ports:
        if isinstance(p.port, str):
            found = [c for c in target.ports if c.name == p.port and c.protocol == p.protocol]
            if direction == INGRESS and found:
                out.append(PortMatch(p.protocol, found[0].port))
            continue
        out.append(PortMatch(p.protocol, p.port, p.end_port if p.end_port != p.port else None))
    if rule.ports and not out:
        return None
    return tuple(sorted(set(out), key=lambda m: (m.protocol, m.port or 0, m.end_port or 0)))


def _allow(
    rule: Rule,
    direction: str,
    policy: Policy,
    network: str,
    target: Pod,
    pods: Sequence[Pod],
    namespaces: Mapping[str, Mapping[str, str]],
) -> list[AllowRule]:
    ports = _ports(rule, direction, target)
    if ports is None:
        return []
    if not rule.peers:
        return [AllowRule(ports=ports, any_peer=True)]
    out: list[AllowRule] = []
    addresses: set[str] = set()
    for peer in rule.peers:
        if peer.ip_block is not None:
            out.append(AllowRule(ports=ports, cidrs=(peer.ip_block.cidr,), excluded=peer.ip_block.excepts))
        else:
            for pod in _peer_pods(peer, policy, pods, namespaces):
                addresses.update(_addresses(pod, network))
    if addresses:
        out.insert(0, AllowRule(ports=ports, cidrs=tuple(sorted(addresses, key=_address_key))))
    return out


def _address_key(cidr: str) -> tuple[int, int, int]:
    net = ipaddress.ip_network(cidr)
    return (net.version, int(net.network_address), net.prefixlen)


def _dedupe(rules: Iterable[AllowRule]) -> tuple[AllowRule, ...]:
    seen: list[AllowRule] = []
    for r in rules:
        if r not in seen:
            seen.append(r)
    return tuple(seen)


def wanted_rules(
    policies: Iterable[Policy],
    pods: Iterable[Pod],
    namespaces: Mapping[str, Mapping[str, str]],
    *,
    node: str | None = None,
) -> dict[tuple[str, str], PodRules]:
    """The rules of every pod (on ``node``, when given) that a policy selects on one of its
    attachments, keyed by (namespace, name). Pods no policy selects are absent."""
    policies = sorted(policies, key=lambda p: (p.namespace, p.name))
    all_pods = sorted(pods, key=lambda p: p.key)
    out: dict[tuple[str, str], PodRules] = {}
    for target in all_pods:
        if (node is not None and target.node != node) or not target.running:
            continue
        attachments: list[AttachmentRules] = []
        for status in target.statuses:
            if not status.interface:
                continue
            network = status.name
            ingress: list[AllowRule] | None = None
            egress: list[AllowRule] | None = None
            for policy in policies:
                if (
                    policy.namespace != target.namespace
                    or network not in policy.networks
                    or not policy.pod_selector.matches(target.label_map)
                ):
                    continue
                if INGRESS in policy.policy_types:
                    ingress = ingress or []
                    for rule in policy.ingress:
                        ingress += _allow(rule, INGRESS, policy, network, target, all_pods, namespaces)
                if EGRESS in policy.policy_types:
                    egress = egress or []
                    for rule in policy.egress:
                        egress += _allow(rule, EGRESS, policy, network, target, all_pods, namespaces)
            if ingress is not None or egress is not None:
                attachments.append(
                    AttachmentRules(
                        interface=status.interface,
                        network=network,
                        ingress=None if ingress is None else _dedupe(ingress),
                        egress=None if egress is None else _dedupe(egress),
                    )
                )
        if attachments:
            out[target.key] = PodRules(
                target.namespace, target.name, target.netns, tuple(sorted(attachments, key=lambda a: a.interface))
            )
    return out
