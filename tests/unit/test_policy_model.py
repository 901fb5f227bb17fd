"""kvnet.policy.model: MultiNetworkPolicy parsing and the wanted rules per pod attachment."""

from __future__ import annotations

import json
from typing import Any

import pytest

from kvnet.core.errors import InvalidAnnotation, InvalidConfig
from kvnet.policy.model import (
    AllowRule,
    AttachmentRules,
    LabelSelector,
    PortMatch,
    Requirement,
    namespace_labels,
    parse_pod,
    parse_policy,
    parse_policy_for,
    wanted_rules,
)

NS = "team"


def pod(
    name: str,
    labels: dict[str, str],
    net1: str | None,
    *,
    namespace: str = NS,
    node: str = "n1",
    network: str = f"{NS}/blue",
    eth0: str = "10.0.0.9",
    ports: list[dict[str, Any]] | None = None,
    phase: str = "Running",
) -> dict[str, Any]:
    status = [{"name": "cluster", "interface": "eth0", "ips": [eth0], "default": True}]
    if net1:
        status.append({"name": network, "interface": "net1", "ips": [net1]})
    return {
        "metadata": {
            "name": name,
            "namespace": namespace,
            "labels": labels,
            "annotations": {"k8s.v1.cni.cncf.io/network-status": json.dumps(status), "kvnet.io/netns": f"ns-{name}"},
        },
        "spec": {"nodeName": node, "containers": [{"name": "c", "ports": ports or []}]},
        "status": {"phase": phase},
    }


def mnp(spec: dict[str, Any], policy_for: str = "blue", name: str = "p", namespace: str = NS) -> dict[str, Any]:
    return {
        "metadata": {
            "name": name,
            "namespace": namespace,
            "annotations": {"k8s.v1.cni.cncf.io/policy-for": policy_for},
        },
        "spec": spec,
    }


FROM_A_ON_80 = {
    "podSelector": {"matchLabels": {"app": "b"}},
    "ingress": [{"from": [{"podSelector": {"matchLabels": {"app": "a"}}}], "ports": [{"port": 80}]}],
}


def compute(
    policies: list[dict[str, Any]],
    pods: list[dict[str, Any]],
    namespaces: dict[str, dict[str, str]] | None = None,
    node: str | None = "n1",
):  # type: ignore[no-untyped-def]
    return wanted_rules(
        [parse_policy(p) for p in policies], [parse_pod(p) for p in pods], namespaces or {NS: {}}, node=node
    )


def test_ingress_from_a_on_one_port() -> None:
    pods = [pod("a", {"app": "a"}, "10.1.0.2"), pod("b", {"app": "b"}, "10.1.0.3"), pod("c", {"app": "c"}, "10.1.0.4")]
    wanted = compute([mnp(FROM_A_ON_80)], pods)
    assert list(wanted) == [(NS, "b")]
    rules = wanted[(NS, "b")]
    assert rules.netns == "ns-b"
    assert rules.attachments == (
        AttachmentRules(
            "net1",
            f"{NS}/blue",
            ingress=(AllowRule(ports=(PortMatch("TCP", 80),), cidrs=("10.1.0.2/32",)),),
            egress=None,
        ),
    )


def test_peer_addresses_come_from_the_same_nad_only() -> None:
    pods = [
        pod("a", {"app": "a"}, "10.2.0.2", network=f"{NS}/red"),  # A is on another NAD
        pod("a2", {"app": "a"}, "10.1.0.7"),
        pod("b", {"app": "b"}, "10.1.0.3"),
    ]
    (rules,) = compute([mnp(FROM_A_ON_80)], pods).values()
    assert rules.attachments[0].ingress == (AllowRule(ports=(PortMatch("TCP", 80),), cidrs=("10.1.0.7/32",)),)


def test_policy_for_other_network_or_namespace_selects_nothing() -> None:
    pods = [pod("b", {"app": "b"}, "10.1.0.3")]
    assert compute([mnp(FROM_A_ON_80, policy_for="red")], pods) == {}
    assert compute([mnp(FROM_A_ON_80, policy_for="other/blue")], pods) == {}
    assert compute([mnp(FROM_A_ON_80, namespace="other", policy_for=f"{NS}/blue")], pods) == {}
    assert compute([mnp(FROM_A_ON_80, policy_for="")], pods) == {}


def test_no_peer_left_means_deny_all_and_other_nodes_are_not_policed() -> None:
    pods = [pod("b", {"app": "b"}, "10.1.0.3"), pod("b2", {"app": "b"}, "10.1.0.5", node="n2")]
    wanted = compute([mnp(FROM_A_ON_80)], pods)
    assert list(wanted) == [(NS, "b")]
    assert wanted[(NS, "b")].attachments[0].ingress == ()
    assert set(compute([mnp(FROM_A_ON_80)], pods, node=None)) == {(NS, "b"), (NS, "b2")}


def test_finished_pods_are_neither_peers_nor_policed() -> None:
    pods = [pod("a", {"app": "a"}, "10.1.0.2", phase="Succeeded"), pod("b", {"app": "b"}, "10.1.0.3")]
    assert compute([mnp(FROM_A_ON_80)], pods)[(NS, "b")].attachments[0].ingress == ()


def test_policy_types_default_and_explicit() -> None:
    pods = [pod("b", {"app": "b"}, "10.1.0.3")]
    deny_in = compute([mnp({"podSelector": {}})], pods)[(NS, "b")].attachments[0]
    assert (deny_in.ingress, deny_in.egress) == ((), None)
    with_egress = compute([mnp({"podSelector": {}, "egress": [{}]})], pods)[(NS, "b")].attachments[0]
    assert (with_egress.ingress, with_egress.egress) == ((), (AllowRule(any_peer=True),))
    egress_only = compute([mnp({"podSelector": {}, "policyTypes": ["Egress"]})], pods)[(NS, "b")].attachments[0]
    assert (egress_only.ingress, egress_only.egress) == (None, ())


def test_rules_of_several_policies_add_up() -> None:
    pods = [pod("a", {"app": "a"}, "10.1.0.2"), pod("b", {"app": "b"}, "10.1.0.3")]
    other = mnp({"podSelector": {}, "ingress": [{"ports": [{"protocol": "UDP", "port": 53}]}]}, name="q")
    wanted = compute([mnp(FROM_A_ON_80), other], pods)
    assert set(wanted) == {(NS, "a"), (NS, "b")}  # the second policy selects every pod
    rules = wanted[(NS, "b")]
    assert rules.attachments[0].ingress == (
        AllowRule(ports=(PortMatch("TCP", 80),), cidrs=("10.1.0.2/32",)),
        AllowRule(ports=(PortMatch("UDP", 53),), any_peer=True),
    )


def test_ip_block_with_except_and_port_range() -> None:
    spec = {
        "podSelector": {},
        "ingress": [
            {
                "from": [{"ipBlock": {"cidr": "192.168.0.0/16", "except": ["192.168.3.0/24"]}}],
                "ports": [{"protocol": "SCTP", "port": 1000, "endPort": 2000}, {"protocol": "UDP"}],
            }
        ],
    }
    (rules,) = compute([mnp(spec)], [pod("b", {}, "10.1.0.3")]).values()
    assert rules.attachments[0].ingress == (
        AllowRule(
            ports=(PortMatch("SCTP", 1000, 2000), PortMatch("UDP")),
            cidrs=("192.168.0.0/16",),
            excluded=("192.168.3.0/24",),
        ),
    )


def test_namespace_selector_with_and_without_pod_selector() -> None:
    pods = [
        pod("b", {"app": "b"}, "10.1.0.3"),
        pod("x", {"app": "a"}, "10.1.0.10", namespace="prod"),
        pod("y", {"app": "z"}, "10.1.0.11", namespace="prod"),
        pod("w", {"app": "a"}, "10.1.0.12", namespace="dev"),
    ]
    namespaces = {NS: {}, "prod": {"env": "prod"}, "dev": {"env": "dev"}}
    both = {"namespaceSelector": {"matchLabels": {"env": "prod"}}, "podSelector": {"matchLabels": {"app": "a"}}}
    spec = {"podSelector": {"matchLabels": {"app": "b"}}, "ingress": [{"from": [both]}]}
    (rules,) = compute([mnp(spec)], pods, namespaces).values()
    assert rules.attachments[0].ingress == (AllowRule(cidrs=("10.1.0.10/32",)),)
    whole = {"namespaceSelector": {"matchExpressions": [{"key": "env", "operator": "In", "values": ["prod", "dev"]}]}}
    spec = {"podSelector": {"matchLabels": {"app": "b"}}, "ingress": [{"from": [whole]}]}
    (rules,) = compute([mnp(spec)], pods, namespaces).values()
    assert rules.attachments[0].ingress == (AllowRule(cidrs=("10.1.0.10/32", "10.1.0.11/32", "10.1.0.12/32")),)


def test_named_port_resolved_on_the_policed_pod() -> None:
    spec = {"podSelector": {}, "ingress": [{"ports": [{"port": "web"}, {"port": "nope"}]}]}
    b = pod("b", {}, "10.1.0.3", ports=[{"name": "web", "containerPort": 8080}])
    (rules,) = compute([mnp(spec)], [b]).values()
    assert rules.attachments[0].ingress == (AllowRule(ports=(PortMatch("TCP", 8080),), any_peer=True),)
    spec = {"podSelector": {}, "ingress": [{"ports": [{"port": "nope"}]}]}
    (rules,) = compute([mnp(spec)], [b]).values()
    assert rules.attachments[0].ingress == ()  # a rule whose only port cannot match allows nothing


def test_ipv6_peer_addresses() -> None:
    pods = [pod("a", {"app": "a"}, "fd00::2"), pod("b", {"app": "b"}, "fd00::3")]
    (rules,) = compute([mnp(FROM_A_ON_80)], pods).values()
    assert rules.attachments[0].ingress == (AllowRule(ports=(PortMatch("TCP", 80),), cidrs=("fd00::2/128",)),)


def test_selector_operators() -> None:
    sel = LabelSelector(
        (("tier", "web"),),
        (
            Requirement("env", "In", ("a", "b")),
            Requirement("legacy", "DoesNotExist"),
            Requirement("team", "Exists"),
            Requirement("zone", "NotIn", ("x",)),
        ),
    )
    assert sel.matches({"tier": "web", "env": "a", "team": "t"})
    assert not sel.matches({"tier": "web", "env": "c", "team": "t"})
    assert not sel.matches({"tier": "web", "env": "a", "team": "t", "legacy": "1"})
    assert not sel.matches({"tier": "web", "env": "a"})
    assert not sel.matches({"tier": "web", "env": "a", "team": "t", "zone": "x"})
    assert LabelSelector().matches({})


def test_policy_for_forms() -> None:
    assert parse_policy_for("ns/net-a, net-b,, net-b", "mine") == ("ns/net-a", "mine/net-b")
    assert parse_policy_for(None, "mine") == ()
    with pytest.raises(InvalidAnnotation):
        parse_policy_for("a/b/c", "mine")


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"podSelector": {}, "policyTypes": ["Sideways"]}, "Sideways"),
        ({"podSelector": {}, "ingress": [{"ports": [{"protocol": "ICMP"}]}]}, "ICMP"),
        ({"podSelector": {}, "ingress": [{"ports": [{"port": 70000}]}]}, "70000"),
        ({"podSelector": {}, "ingress": [{"ports": [{"port": 90, "endPort": 80}]}]}, "below"),
        (
            {"podSelector": {}, "ingress": [{"from": [{"ipBlock": {"cidr": "10.0.0.0/8", "except": ["11.0.0.0/8"]}}]}]},
            "inside",
        ),
        ({"podSelector": {}, "ingress": [{"from": [{"ipBlock": {"cidr": "nope"}}]}]}, "not a CIDR"),
        ({"podSelector": {}, "ingress": [{"from": [{}]}]}, "needs podSelector"),
        ({"podSelector": {"matchExpressions": [{"key": "k", "operator": "Near"}]}}, "Near"),
    ],
)
def test_malformed_policies(spec: dict[str, Any], message: str) -> None:
    with pytest.raises(InvalidConfig, match=message):
        parse_policy(mnp(spec))


def test_unreadable_network_status_is_no_attachment() -> None:
    raw = pod("b", {"app": "b"}, "10.1.0.3")
    raw["metadata"]["annotations"]["k8s.v1.cni.cncf.io/network-status"] = "{not json"
    assert parse_pod(raw).statuses == ()


def test_namespace_labels() -> None:
    assert namespace_labels({"metadata": {"name": "x", "labels": {"a": "b"}}}) == ("x", {"a": "b"})
