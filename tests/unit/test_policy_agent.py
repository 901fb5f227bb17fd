"""kvnet.policy.agent: the cached state and the reconcile (a fake source and a recording nft)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from kvnet.core.errors import IOFailure
from kvnet.policy.agent import NAMESPACES, PODS, POLICIES, Agent, Event, KubeSource, State
from kvnet.policy.model import AttachmentRules, PodRules
from kvnet.policy.nft import DELETE_SCRIPT, Nft, delete_script

NS = "team"


class RecordingNft(Nft):
    def __init__(self, fail: bool = False, links: dict[str, dict[str, str | None]] | None = None) -> None:
        super().__init__()
        self.calls: list[tuple[str, str]] = []
        self.fail = fail
        self.links = links or {}  # netns name -> its links and their masters
        self.sysctls: list[str] = []

    def apply(self, netns: str, text: str) -> None:
        if self.fail:
            raise IOFailure("nft failed")
        self.calls.append((netns, text))

    def delete(self, netns: str, tables: tuple[str, ...] = ("inet",)) -> None:
        self.calls.append((netns, delete_script(tables)))

    def tables(self, netns: str) -> list[str]:
        if netns.endswith("stale-vm"):
            return ["inet kvnet-policy", "bridge kvnet-policy", "bridge other"]
        return ["inet kvnet-policy", "inet other"] if netns.endswith("stale") else ["inet other"]

    def masters(self, netns: str) -> dict[str, str | None]:
        return self.links.get(netns.rsplit("/", 1)[-1], {"lo": None, "net1": None})

    def bridge_netfilter(self, netns: str) -> None:
        self.sysctls.append(netns)


def pod(name: str, app: str, ip: str, netns: str, node: str = "n1") -> dict[str, Any]:
    status = [{"name": f"{NS}/blue", "interface": "net1", "ips": [ip]}]
    return {
        "metadata": {
            "name": name,
            "namespace": NS,
            "labels": {"app": app},
            "annotations": {"k8s.v1.cni.cncf.io/network-status": json.dumps(status), "kvnet.io/netns": netns},
        },
        "spec": {"nodeName": node},
    }


POLICY = {
    "metadata": {"name": "p", "namespace": NS, "annotations": {"k8s.v1.cni.cncf.io/policy-for": "blue"}},
    "spec": {"podSelector": {"matchLabels": {"app": "b"}}, "ingress": [{"from": [{"podSelector": {}}]}]},
}


def agent(tmp_path: Path, nft: RecordingNft) -> Agent:
    for name in ("ns-a", "ns-b"):
        (tmp_path / name).touch()
    a = Agent(KubeSource.__new__(KubeSource), "n1", netns_dir=str(tmp_path), nft=nft)
    a.state.update(Event(NAMESPACES, "LIST", ({"metadata": {"name": NS}},)))
    a.state.update(Event(PODS, "LIST", (pod("a", "a", "10.1.0.2", "ns-a"), pod("b", "b", "10.1.0.3", "ns-b"))))
    a.state.update(Event(POLICIES, "LIST", (POLICY,)))
    return a


def test_apply_once_then_only_on_change_then_delete(tmp_path: Path) -> None:
    nft = RecordingNft()
    a = agent(tmp_path, nft)
    a.reconcile()
    assert [path for path, _ in nft.calls] == [str(tmp_path / "ns-b")]
    assert "ip saddr { 10.1.0.2/32, 10.1.0.3/32 } accept" in nft.calls[0][1]
    a.reconcile()
    assert len(nft.calls) == 1  # unchanged: not applied again
    a.state.update(Event(PODS, "MODIFIED", (pod("a", "a", "10.1.0.9", "ns-a"),)))
    a.reconcile()
    assert "10.1.0.9/32" in nft.calls[-1][1]
    a.state.update(Event(POLICIES, "DELETED", (POLICY,)))
    a.reconcile()
    assert nft.calls[-1] == (str(tmp_path / "ns-b"), DELETE_SCRIPT)
    assert a.applied == {}


def test_pod_deleted_and_remove_all(tmp_path: Path) -> None:
    nft = RecordingNft()
    a = agent(tmp_path, nft)
    a.reconcile()
    a.remove_all()
    assert nft.calls[-1] == (str(tmp_path / "ns-b"), DELETE_SCRIPT)
    a.reconcile()
    a.state.update(Event(PODS, "DELETED", (pod("b", "b", "10.1.0.3", "ns-b"),)))
    a.reconcile()
    assert nft.calls[-1] == (str(tmp_path / "ns-b"), DELETE_SCRIPT) and a.applied == {}


def test_no_netns_or_failing_nft_is_not_recorded_as_applied(tmp_path: Path) -> None:
    nft = RecordingNft(fail=True)
    a = agent(tmp_path, nft)
    a.reconcile()
    assert a.applied == {}
    a.state.update(Event(PODS, "MODIFIED", (pod("b", "b", "10.1.0.3", "../etc"),)))
    a.nft = RecordingNft()
    a.reconcile()
    assert a.applied == {}  # a path in the annotation is not trusted


def test_a_list_replaces_what_was_cached() -> None:
    state = State()
    state.update(Event(PODS, "ADDED", (pod("x", "a", "10.1.0.2", "ns-x"),)))
    state.update(Event(PODS, "LIST", (pod("y", "a", "10.1.0.3", "ns-y"),)))
    assert list(state.pods) == [(NS, "y")]


def test_sweep_removes_only_stale_tables_of_its_own(tmp_path: Path) -> None:
    nft = RecordingNft()
    a = agent(tmp_path, nft)
    (tmp_path / "ns-stale").touch()
    (tmp_path / "ns-clean").touch()
    a.reconcile()
    a.sweep()
    assert nft.calls[1:] == [(str(tmp_path / "ns-stale"), DELETE_SCRIPT)]  # not B's, not ns-clean


def vm_links() -> dict[str, dict[str, str | None]]:
    """B's netns as kvnet's binding leaves a virt-launcher pod: net1 (the pod link) and the
    guest's tap are ports of the in-pod bridge."""
    return {"ns-b": {"lo": None, "eth0": None, "k6t-1": None, "net1": "k6t-1", "tap1": "k6t-1"}}


def test_a_bridged_attachment_gets_the_bridge_table_and_br_netfilter(tmp_path: Path) -> None:
    nft = RecordingNft(links=vm_links())
    a = agent(tmp_path, nft)
    a.reconcile()
    [(path, text)] = nft.calls
    assert path == str(tmp_path / "ns-b") and nft.sysctls == [path]
    assert text.startswith(delete_script(("inet", "bridge")))
    assert 'iifname "net1" meta mark set 0x6b761000' in text  # the bridge table marks frames to the guest
    assert "meta mark 0x6b761000 jump ingress_0" in text  # the inet forward chain filters them
    assert 'iifname "net1" jump ingress_0' not in text  # not in the input hook: nothing of it arrives there
    a.remove_all()
    assert nft.calls[-1] == (path, delete_script(("inet", "bridge")))


def test_an_attachment_that_leaves_the_bridge_drops_the_bridge_table(tmp_path: Path) -> None:
    nft = RecordingNft(links=vm_links())
    a = agent(tmp_path, nft)
    a.reconcile()
    nft.links = {}
    a.reconcile()
    path = str(tmp_path / "ns-b")
    assert nft.calls[-2][1].startswith(DELETE_SCRIPT + "table inet kvnet-policy {")
    assert nft.calls[-1] == (path, delete_script(("bridge",)))


def test_redirect_mode_is_logged_as_not_policed(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    links: dict[str, dict[str, str | None]] = {"ns-b": {"pod1234": None, "tap1234": None}}
    nft = RecordingNft(links=links)
    a = agent(tmp_path, nft)
    pod_rules = PodRules(NS, "b", "ns-b", (AttachmentRules("pod1234", f"{NS}/blue", ingress=()),))
    with caplog.at_level("ERROR", logger="kvnet.policy"):
        assert a.bridged((NS, "b"), pod_rules, str(tmp_path / "ns-b")) == frozenset()
    assert "tc-redirected to tap1234" in caplog.text


def test_sweep_removes_a_stale_bridge_table_too(tmp_path: Path) -> None:
    nft = RecordingNft()
    a = agent(tmp_path, nft)
    (tmp_path / "ns-stale-vm").touch()
    a.reconcile()
    a.sweep()
    assert nft.calls[1:] == [(str(tmp_path / "ns-stale-vm"), delete_script(("inet", "bridge")))]
