"""The meta-plugin's Multus semantics, driven with a fake API and a recording fake runner."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest

from kvnet.cni import libcni_cache
from kvnet.cni.delegate import DelegateEnv
from kvnet.cni.protocol import parse_cni_args, parse_request
from kvnet.core.errors import (
    ApiFailure,
    DelegateFailed,
    InvalidAnnotation,
    InvalidConfig,
    InvalidEnvironment,
    KvnetError,
    NetlinkFailure,
    NetworkNotFound,
    StatusNotAvailable,
    TryAgainLater,
    UnknownContainer,
)
from kvnet.core.model import DeviceInfo
from kvnet.meta import cache, delegates
from kvnet.meta import commands as meta
from kvnet.meta.config import parse_multus_config
from kvnet.meta.plan import delegate_cni_args
from kvnet.meta.pod import PodArgs
from kvnet.meta.ports import RetriableApiFailure, Seams

NETWORKS = "k8s.v1.cni.cncf.io/networks"
DEFAULT_NET = "v1.multus-cni.io/default-network"


# ------------------------------------------------------------------------------------
# fakes
# ------------------------------------------------------------------------------------


class FakeApi:
    def __init__(self, pods: Sequence[Mapping[str, Any]] = (), nads: Sequence[Mapping[str, Any]] = ()) -> None:
        self.pods = {(p["metadata"]["namespace"], p["metadata"]["name"]): p for p in pods}
        self.nads = {(n["metadata"]["namespace"], n["metadata"]["name"]): n for n in nads}
        self.status: dict[tuple[str, str], str] = {}
        self.down = False
        self.status_fails = False
        self.calls: list[tuple[str, ...]] = []
        # raised by the next get_pod / get_nad calls, one each, before they answer
        self.pod_failures: list[KvnetError] = []
        self.nad_failures: list[KvnetError] = []
        self.writes: list[tuple[str, str, str]] = []  # every set_network_status call

    def get_pod(self, namespace: str, name: str) -> Mapping[str, Any] | None:
        self.calls.append(("get_pod", namespace, name))
        if self.down:
            raise ApiFailure("connection refused")
        if self.pod_failures:
            raise self.pod_failures.pop(0)
        return self.pods.get((namespace, name))

    def get_nad(self, namespace: str, name: str) -> Mapping[str, Any] | None:
        self.calls.append(("get_nad", namespace, name))
        if self.down:
            raise ApiFailure("connection refused")
        if self.nad_failures:
            raise self.nad_failures.pop(0)
        return self.nads.get((namespace, name))

    def set_network_status(self, namespace: str, name: str, value: str) -> None:
        self.writes.append((namespace, name, value))
        if self.down or self.status_fails:
            raise ApiFailure("pods/status: 500")
        self.status[(namespace, name)] = value


class FakeRunner:
    """Records every call; an ADD result echoes the interface; can fail on a network."""

    def __init__(
        self,
        fail_add: str = "",
        fail_del: Sequence[str] = (),
        cni_dir: Path | None = None,
        *,
        write_results: bool = False,
    ) -> None:
        self.write_results = write_results  # keep libcni's results cache in cni_dir, as the real runner
        self.calls: list[tuple[str, str, DelegateEnv, dict[str, Any], dict[str, Any]]] = []
        self.fail_add = fail_add
        self.fail_del = set(fail_del)
        self.cni_dir = cni_dir
        self.cache_seen_at_first_call: bool | None = None
        self.valid: Any = None

    def run_network(
        self,
        command: str,
        network: Mapping[str, Any],
        env: DelegateEnv,
        *,
        runtime_config: Mapping[str, Any] | None = None,
        prev_result: Mapping[str, Any] | None = None,
        valid_attachments: Sequence[Mapping[str, str]] | None = None,
    ) -> dict[str, Any] | None:
        if self.cache_seen_at_first_call is None and self.cni_dir is not None:
            self.cache_seen_at_first_call = (self.cni_dir / env.container_id).exists()
        name = str(network.get("name"))
        self.calls.append((command, name, env, dict(runtime_config or {}), dict(network)))
        self.valid = valid_attachments
        if command == "ADD":
            if name == self.fail_add:
                raise DelegateFailed(f'plugin type="bridge" failed (add): boom on {name}', code=11)
            n = len([c for c in self.calls if c[0] == "ADD"])
            result = {
                "cniVersion": "1.0.0",
                "interfaces": [{"name": env.ifname, "mac": f"0a:00:00:00:00:{n:02x}", "sandbox": env.netns}],
                "ips": [{"address": f"10.{n}.0.5/24", "gateway": f"10.{n}.0.1", "interface": 0}],
                "routes": [{"dst": "0.0.0.0/0", "gw": f"10.{n}.0.1"}],
                "dns": {},
            }
            if self.write_results and self.cni_dir is not None:
                att = libcni_cache.CachedAttachment(name, env.container_id, env.ifname, b"{}", result=result)
                libcni_cache.write_result(self.cni_dir, att)
            return result
        if command == "DEL" and name in self.fail_del:
            raise DelegateFailed(f"del failed on {name}")
        return None

    def adds(self) -> list[tuple[str, str]]:
        return [(c[1], c[2].ifname) for c in self.calls if c[0] == "ADD"]

    def dels(self) -> list[tuple[str, str]]:
        return [(c[1], c[2].ifname) for c in self.calls if c[0] == "DEL"]


class FakeRoutes:
    def __init__(self) -> None:
        self.ops: list[tuple[str, ...]] = []

    def delete_default(self, netns: str, ifname: str, family: int) -> None:
        self.ops.append(("del", ifname, str(family)))

    def set_default(self, netns: str, ifname: str, gateway: str) -> None:
        self.ops.append(("set", ifname, gateway))


class FakeAllocator:
    def __init__(self, ids: dict[str, list[str]]) -> None:
        self.ids = ids

    def device_ids(self, namespace: str, pod: str, resource_name: str) -> list[str]:
        return list(self.ids.get(resource_name, []))


class FakeDevinfo:
    def __init__(self) -> None:
        self.copied: list[tuple[str, ...]] = []
        self.removed: list[tuple[str, ...]] = []

    def cni_file(self, network: str, container_id: str, ifname: str) -> str:
        return f"/devinfo/cni/{network.replace('/', '-')}-{container_id}_{ifname}"

    def copy_from_dp(self, resource_name: str, device_id: str, network: str, container_id: str, ifname: str) -> None:
        self.copied.append((resource_name, device_id, network, ifname))

    def load(self, network: str, container_id: str, ifname: str) -> DeviceInfo | None:
        return DeviceInfo("pci", "1.1.0", {"type": "pci", "version": "1.1.0", "pci": {"pci-address": "0000:3b:02.4"}})

    def remove(self, network: str, container_id: str, ifname: str) -> None:
        self.removed.append((network, ifname))


# ------------------------------------------------------------------------------------
# helpers
# ------------------------------------------------------------------------------------


def pod(name: str = "web", ns: str = "default", uid: str = "uid-1", **annotations: str) -> dict[str, Any]:
    return {"metadata": {"name": name, "namespace": ns, "uid": uid, "annotations": dict(annotations)}}


def nad(name: str, ns: str = "default", config: Mapping[str, Any] | None = None, resource: str = "") -> dict[str, Any]:
    meta_: dict[str, Any] = {"name": name, "namespace": ns}
    if resource:
        meta_["annotations"] = {"k8s.v1.cni.cncf.io/resourceName": resource}
    cfg = config if config is not None else {"cniVersion": "1.0.0", "type": "bridge", "bridge": f"br-{name}"[:15]}
    return {"metadata": meta_, "spec": {"config": json.dumps(cfg)}}


MAIN = {
    "cniVersion": "1.0.0",
    "name": "main-net",
    "type": "ptp",
    "ipam": {"type": "host-local", "subnet": "10.0.0.0/24"},
}


def config(tmp_path: Path, **extra: Any) -> dict[str, Any]:
    out = {
        "cniVersion": "1.0.0",
        "name": "kvnet",
        "type": "kvnet",
        "kubeconfig": "/k",
        "delegates": [MAIN],
        "cniDir": str(tmp_path / "cache"),
        "confDir": str(tmp_path / "conf"),
    }
    out.update(extra)
    return out


def request(
    cfg: Mapping[str, Any],
    command: str = "ADD",
    *,
    container: str = "c0ffee",
    netns: str = "/var/run/netns/p",
    args: str = "IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=web;K8S_POD_INFRA_CONTAINER_ID=c0ffee;K8S_POD_UID=uid-1",
):
    env = {
        "CNI_COMMAND": command,
        "CNI_CONTAINERID": container,
        "CNI_NETNS": netns,
        "CNI_IFNAME": "eth0",
        "CNI_ARGS": args,
        "CNI_PATH": "/opt/cni/bin",
    }
    return parse_request(env, json.dumps(cfg).encode())


def run(cmd: str, cfg: Mapping[str, Any], api: FakeApi | None, runner: FakeRunner, seams: Seams = Seams(), **kw: Any):
    fn = {"ADD": meta.add, "DEL": meta.delete, "CHECK": meta.check, "STATUS": meta.status, "GC": meta.gc}[cmd]
    return fn(request(cfg, cmd, **kw), conf=parse_multus_config(cfg), api=api, runner=runner, seams=seams)


# ------------------------------------------------------------------------------------
# ADD
# ------------------------------------------------------------------------------------


def test_add_names_order_and_cni_args(tmp_path: Path) -> None:
    api = FakeApi([pod(**{NETWORKS: "a@foo,b,other/c"})], [nad("a"), nad("b"), nad("c", "other")])
    runner = FakeRunner(cni_dir=tmp_path / "cache")
    result = run("ADD", config(tmp_path), api, runner)
    # interface names: requested, else net<position in the full list>
    assert runner.adds() == [("main-net", "eth0"), ("a", "foo"), ("b", "net2"), ("c", "net3")]
    envs = [c[2] for c in runner.calls]
    # Multus's fixed five, then every runtime pair again (newCNIRuntimeConf appends equal pairs too)
    assert envs[1].args == (
        "IgnoreUnknown=true;K8S_POD_NAMESPACE=default;K8S_POD_NAME=web;K8S_POD_INFRA_CONTAINER_ID=c0ffee;"
        "K8S_POD_UID=uid-1;IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=web;"
        "K8S_POD_INFRA_CONTAINER_ID=c0ffee;K8S_POD_UID=uid-1"
    )
    assert all(
        e.container_id == "c0ffee" and e.netns == "/var/run/netns/p" and e.path == ("/opt/cni/bin",) for e in envs
    )
    # the main network's result is returned
    assert result["interfaces"][0]["name"] == "eth0" and result["ips"][0]["address"] == "10.1.0.5/24"
    # the cache was there before the first delegate ran, and stays for DEL
    assert runner.cache_seen_at_first_call is True
    cached = cache.load(tmp_path / "cache", "c0ffee")
    assert [d.name for d in cached] == ["main-net", "default/a", "default/b", "other/c"]
    assert cached[1].ifname_request == "foo"
    # network-status written, Multus's format, main network default
    status = json.loads(api.status[("default", "web")])
    assert [(s["name"], s["interface"], s.get("default", False)) for s in status] == [
        ("main-net", "eth0", True),
        ("default/a", "foo", False),
        ("default/b", "net2", False),
        ("other/c", "net3", False),
    ]
    assert status[1]["ips"] == ["10.2.0.5"] and status[1]["dns"] == {}


def test_each_nad_read_once_per_add(tmp_path: Path) -> None:
    api = FakeApi([pod(**{NETWORKS: "a,a@x1,a"})], [nad("a")])
    runner = FakeRunner()
    run("ADD", config(tmp_path), api, runner)
    assert runner.adds() == [("main-net", "eth0"), ("a", "net1"), ("a", "x1"), ("a", "net3")]
    assert [c for c in api.calls if c[0] == "get_nad"] == [("get_nad", "default", "a")]


def test_empty_cni_args_values_filled_and_extra_args_kept(tmp_path: Path) -> None:
    api = FakeApi([pod()])
    runner = FakeRunner()
    run("ADD", config(tmp_path), api, runner, args="K8S_POD_NAMESPACE=default;K8S_POD_NAME=web;FOO=bar=baz")
    assert runner.calls[0][2].args == (
        "IgnoreUnknown=true;K8S_POD_NAMESPACE=default;K8S_POD_NAME=web;K8S_POD_INFRA_CONTAINER_ID=;K8S_POD_UID=;"
        "K8S_POD_NAMESPACE=default;K8S_POD_NAME=web;FOO=bar=baz"
    )


def test_pod_not_found_gives_empty_result_and_runs_nothing(tmp_path: Path) -> None:
    runner = FakeRunner()
    result = run("ADD", config(tmp_path), FakeApi(), runner)
    # Multus's emptyCNIResult: the runtime's interface, 0.0.0.0/0 with gateway 0.0.0.0, no dns
    assert result == {
        "cniVersion": "1.0.0",
        "interfaces": [{"name": "eth0", "sandbox": "/var/run/netns/p"}],
        "ips": [{"address": "0.0.0.0/0", "gateway": "0.0.0.0"}],
    }
    assert runner.calls == [] and not (tmp_path / "cache").exists()
    # in any config version, as Multus prints it (not converted)
    result = run("ADD", config(tmp_path, cniVersion="0.3.1"), FakeApi(), runner)
    assert result["cniVersion"] == "0.3.1" and result["ips"] == [{"address": "0.0.0.0/0", "gateway": "0.0.0.0"}]


def test_no_api_runs_config_delegates_only(tmp_path: Path) -> None:
    cfg = config(tmp_path, delegates=[MAIN, {"cniVersion": "1.0.0", "name": "second", "type": "bridge"}])
    cfg.pop("kubeconfig")
    runner = FakeRunner()
    run("ADD", cfg, None, runner)
    assert runner.adds() == [("main-net", "eth0"), ("second", "net1")]


def test_pod_uid_mismatch_is_refused(tmp_path: Path) -> None:
    with pytest.raises(UnknownContainer) as err:
        run("ADD", config(tmp_path), FakeApi([pod(uid="other")]), FakeRunner())
    assert err.value.msg == 'kvnet: [default/web/uid-1]: expected pod UID "uid-1" but got "other" from Kube API'


@pytest.mark.parametrize("source", ["file", "http", ""])
def test_static_pod_uid_mismatch_is_tolerated(tmp_path: Path, source: str) -> None:
    """Multus's IsStaticPod: a pod whose kubernetes.io/config.source is not api is a static
    pod; the API shows its mirror pod, with another UID than the runtime's."""
    static = pod(uid="mirror-uid", **{NETWORKS: "a", "kubernetes.io/config.source": source})
    api = FakeApi([static], [nad("a")])
    runner = FakeRunner()
    run("ADD", config(tmp_path), api, runner)
    assert runner.adds() == [("main-net", "eth0"), ("a", "net1")]
    assert ("default", "web") in api.status
    # DEL without a cache rebuilds the list from the mirror pod
    cache.remove(tmp_path / "cache", "c0ffee")
    runner = FakeRunner()
    run("DEL", config(tmp_path), api, runner)
    assert runner.dels() == [("a", "net1"), ("main-net", "eth0")]


def test_pod_from_the_api_source_is_not_a_static_pod(tmp_path: Path) -> None:
    api = FakeApi([pod(uid="other", **{"kubernetes.io/config.source": "api"})])
    with pytest.raises(UnknownContainer):
        run("ADD", config(tmp_path), api, FakeRunner())


def test_runtime_config_only_for_selections_not_main(tmp_path: Path) -> None:
    sel = [
        {
            "name": "a",
            "ips": ["10.9.0.7/24"],
            "mac": "02:00:00:00:00:07",
            "portMappings": [{"hostPort": 8080, "containerPort": 80, "protocol": "tcp"}],
            "bandwidth": {"ingressRate": 1000, "ingressBurst": 10, "egressRate": 1000, "egressBurst": 10},
            "infiniband-guid": "c2:11:22:33:44:55:66:77",
            "deviceID": "0000:01:00.1",
            "cni-args": {"logicNetworkName": "blue", "n": 1},
        }
    ]
    cfg = config(tmp_path, runtimeConfig={"portMappings": [{"hostPort": 1, "containerPort": 2}]})
    api = FakeApi(
        [pod(**{NETWORKS: json.dumps(sel)})],
        [nad("a", config={"cniVersion": "1.0.0", "type": "bridge", "args": {"cni": {"n": 0, "keep": True}}})],
    )
    runner = FakeRunner()
    devinfo = FakeDevinfo()
    run("ADD", cfg, api, runner, Seams(devinfo=devinfo))
    main_rc, sel_rc = runner.calls[0][3], runner.calls[1][3]
    assert main_rc == {"portMappings": [{"hostPort": 1, "containerPort": 2}]}
    assert sel_rc == {
        "portMappings": [{"hostPort": 8080, "containerPort": 80, "protocol": "tcp"}],
        "bandwidth": {"ingressRate": 1000, "ingressBurst": 10, "egressRate": 1000, "egressBurst": 10},
        "ips": ["10.9.0.7/24"],
        "mac": "02:00:00:00:00:07",
        "infinibandGUID": "c2:11:22:33:44:55:66:77",
        "deviceID": "0000:01:00.1",
        "CNIDeviceInfoFile": "/devinfo/cni/default-a-c0ffee_net1",
    }
    # cni-args merged into args.cni; the deprecated MAC/IP CNI_ARGS are appended
    assert runner.calls[1][4]["args"] == {"cni": {"n": 1, "keep": True, "logicNetworkName": "blue"}}
    assert runner.calls[1][2].args.endswith(";MAC=02:00:00:00:00:07;IP=10.9.0.7/24")
    # device-info ends up in network-status
    status = json.loads(api.status[("default", "web")])
    assert status[1]["device-info"]["pci"]["pci-address"] == "0000:3b:02.4"


def test_mac_and_ip_cni_args_only_on_add(tmp_path: Path) -> None:
    """Multus's DelegateAdd appends MAC=/IP= to the ADD's CNI_ARGS; DEL (and the rollback
    of a failed ADD) and CHECK get the runtime conf without them."""
    sel = json.dumps([{"name": "a", "mac": "02:00:00:00:00:42", "ips": ["10.9.9.9/24"]}, {"name": "b"}])
    api = FakeApi([pod(**{NETWORKS: sel})], [nad("a"), nad("b")])
    runner = FakeRunner(fail_add="b")
    with pytest.raises(DelegateFailed):
        run("ADD", config(tmp_path), api, runner)
    args = {(c[0], c[1]): c[2].args for c in runner.calls}
    assert args[("ADD", "a")].endswith(";MAC=02:00:00:00:00:42;IP=10.9.9.9/24")
    assert "MAC=" not in args[("DEL", "a")] and "IP=" not in args[("DEL", "a")]
    runner = FakeRunner()
    run("DEL", config(tmp_path), api, runner)
    assert all("MAC=" not in c[2].args and "IP=" not in c[2].args for c in runner.calls)


def test_cni_args_in_every_conflist_plugin(tmp_path: Path) -> None:
    chain = {"cniVersion": "1.0.0", "plugins": [{"type": "bridge"}, {"type": "tuning", "args": {"x": 1}}]}
    api = FakeApi([pod(**{NETWORKS: '[{"name":"chain","cni-args":{"k":"v"}}]'})], [nad("chain", config=chain)])
    runner = FakeRunner()
    run("ADD", config(tmp_path), api, runner)
    sent = runner.calls[1][4]
    assert sent["name"] == "chain"  # NAD name injected
    assert [p["args"] for p in sent["plugins"]] == [{"cni": {"k": "v"}}, {"x": 1, "cni": {"k": "v"}}]


def test_cluster_network_default_networks_and_system_namespaces(tmp_path: Path) -> None:
    conf_dir = tmp_path / "conf"
    conf_dir.mkdir()
    (conf_dir / "10-file.conf").write_text(json.dumps({"cniVersion": "1.0.0", "name": "filenet", "type": "ptp"}))
    cfg = config(tmp_path, clusterNetwork="cluster", defaultNetworks=["filenet"])
    cfg.pop("delegates")
    nads = [nad("cluster", "kube-system"), nad("x")]
    runner = FakeRunner()
    run("ADD", cfg, FakeApi([pod(**{NETWORKS: "x"})], nads), runner)
    assert runner.adds() == [("cluster", "eth0"), ("filenet", "net1"), ("x", "net2")]
    # a pod in a system namespace gets no defaultNetworks, and no network-status
    runner = FakeRunner()
    api = FakeApi([pod(ns="kube-system")], nads)
    run(
        "ADD", cfg, api, runner, args="K8S_POD_NAMESPACE=kube-system;K8S_POD_NAME=web;K8S_POD_UID=uid-1", container="c2"
    )
    assert runner.adds() == [("cluster", "eth0")] and api.status == {}


def test_cluster_network_wins_over_delegates(tmp_path: Path) -> None:
    """Multus accepts clusterNetwork beside delegates and runs clusterNetwork (LoadNetConf
    ignores the delegates); DEL and the cache know only clusterNetwork."""
    cfg = config(tmp_path, clusterNetwork="cluster")  # config() has delegates: [MAIN]
    api = FakeApi([pod(**{NETWORKS: "x"})], [nad("cluster", "kube-system"), nad("x")])
    runner = FakeRunner()
    run("ADD", cfg, api, runner)
    assert runner.adds() == [("cluster", "eth0"), ("x", "net1")]
    assert [d.name for d in cache.load(tmp_path / "cache", "c0ffee") or ()] == ["kube-system/cluster", "default/x"]
    runner = FakeRunner()
    run("DEL", cfg, api, runner)
    assert runner.dels() == [("x", "net1"), ("cluster", "eth0")]


def test_cluster_network_without_kubeconfig(tmp_path: Path) -> None:
    """Multus: ADD fails in GetDefaultNetworks (with the pod prefix), STATUS and GC without
    it; DEL finds no pod and no cache and succeeds."""
    cfg = config(tmp_path, clusterNetwork="cluster", cniVersion="1.1.0")
    del cfg["kubeconfig"]
    cause = "GetDefaultNetworks: must have either Kubernetes config or delegates"
    with pytest.raises(InvalidConfig) as err:
        run("ADD", cfg, None, FakeRunner())
    assert err.value.msg == f"kvnet: [default/web/uid-1]: failed to get clusterNetwork/defaultNetworks: {cause}"
    runner = FakeRunner()
    assert run("DEL", cfg, None, runner) is None and runner.calls == []
    for command in ("STATUS", "GC"):
        with pytest.raises(InvalidConfig) as err:
            run(command, cfg, None, FakeRunner())
        assert err.value.msg == f"kvnet: failed to get clusterNetwork: {cause}", command


def test_default_network_annotation_replaces_main(tmp_path: Path) -> None:
    api = FakeApi([pod(**{DEFAULT_NET: "alt", NETWORKS: "a"})], [nad("alt", "kube-system"), nad("a")])
    runner = FakeRunner()
    run("ADD", config(tmp_path), api, runner)
    assert runner.adds() == [("alt", "eth0"), ("a", "net1")]
    assert json.loads(api.status[("default", "web")])[0]["name"] == "kube-system/alt"


def test_namespace_isolation(tmp_path: Path) -> None:
    cfg = config(tmp_path, namespaceIsolation=True, globalNamespaces="shared, other2")
    nads = [nad("a", "other"), nad("b", "shared"), nad("c")]
    with pytest.raises(InvalidAnnotation) as err:
        run("ADD", cfg, FakeApi([pod(**{NETWORKS: "c,other/a"})], nads), FakeRunner())
    assert err.value.msg == (
        "kvnet: [default/web/uid-1]: error loading k8s delegates k8s args: TryLoadPodDelegates: error in getting k8s "
        "network for pod: GetNetworkDelegates: namespace isolation enabled, annotation violates permission, pod is in "
        "namespace default but refers to target namespace other"
    )
    assert err.value.cni_code == 7
    assert not (tmp_path / "cache").exists()
    runner = FakeRunner()
    run("ADD", cfg, FakeApi([pod(**{NETWORKS: "c,shared/b"})], nads), runner)
    assert runner.adds()[1:] == [("c", "net1"), ("b", "net2")]


def test_missing_nad_error_and_code(tmp_path: Path) -> None:
    runner = FakeRunner()
    with pytest.raises(NetworkNotFound) as err:
        run("ADD", config(tmp_path), FakeApi([pod(**{NETWORKS: "nope"})]), runner)
    assert err.value.cni_code == 101
    assert err.value.msg == (
        "kvnet: [default/web/uid-1]: error loading k8s delegates k8s args: TryLoadPodDelegates: error in getting k8s "
        "network for pod: GetNetworkDelegates: failed getting the delegate: getKubernetesDelegate: cannot find a "
        "network-attachment-definition (nope) in namespace (default): "
        'network-attachment-definitions.k8s.cni.cncf.io "nope" not found'
    )
    assert runner.calls == [] and not (tmp_path / "cache").exists()


def test_nad_config_errors_read_as_multus_returns_them(tmp_path: Path) -> None:
    """getKubernetesDelegate returns GetCNIConfig's and LoadDelegateNetConf's errors as they
    are: no NAD name before them."""
    broken = {"metadata": {"name": "a", "namespace": "default"}, "spec": {"config": "{"}}
    typeless = nad("a", config={"cniVersion": "1.0.0", "name": "a"})
    prefix = (
        "kvnet: [default/web/uid-1]: error loading k8s delegates k8s args: TryLoadPodDelegates: error in getting k8s "
        "network for pod: GetNetworkDelegates: failed getting the delegate: "
    )
    for obj, cause in (
        (
            broken,
            "GetCNIConfig: err in getCNIConfigFromSpec: failed to unmarshal Spec.Config: unexpected end of JSON input",
        ),
        (
            typeless,
            "LoadDelegateNetConf: failed with: LoadDelegateNetConfList: delegate must have the 'type' or 'plugin' field",
        ),
    ):
        with pytest.raises(KvnetError) as err:
            run("ADD", config(tmp_path), FakeApi([pod(**{NETWORKS: "a"})], [obj]), FakeRunner())
        assert err.value.msg == prefix + cause


def test_malformed_annotation_error(tmp_path: Path) -> None:
    with pytest.raises(InvalidAnnotation) as err:
        run("ADD", config(tmp_path), FakeApi([pod(**{NETWORKS: "[{"})]), FakeRunner())
    assert err.value.msg.startswith(
        "kvnet: [default/web/uid-1]: error loading k8s delegates k8s args: "
        "parsePodNetworkAnnotation: failed to parse pod Network Attachment Selection"
    )
    assert err.value.cni_code == 7


def test_rollback_in_reverse_up_to_failed_one(tmp_path: Path) -> None:
    api = FakeApi([pod(**{NETWORKS: "a,b,c"})], [nad("a"), nad("b"), nad("c")])
    runner = FakeRunner(fail_add="b", fail_del=["a"])
    with pytest.raises(DelegateFailed) as err:
        run("ADD", config(tmp_path), api, runner)
    assert err.value.cni_code == 11  # the delegate's own code
    # Multus's cmdPluginErr: the pod's UID and the network, and no product prefix
    assert err.value.msg == (
        '[default/web/uid-1:b]: error adding container to network "b": plugin type="bridge" failed (add): boom on b'
    )
    assert runner.adds() == [("main-net", "eth0"), ("a", "net1"), ("b", "net2")]
    # every delegate up to and including the failed one, reverse order, not stopping at a failed DEL
    assert runner.dels() == [("b", "net2"), ("a", "net1"), ("main-net", "eth0")]
    assert api.status == {}
    # the cache stays (Multus's CmdAdd never removes it): the runtime's DEL undoes every delegate
    assert [d.name for d in cache.load(tmp_path / "cache", "c0ffee") or ()] == [
        "main-net",
        "default/a",
        "default/b",
        "default/c",
    ]
    runner = FakeRunner()
    api.down = True  # from the cache alone
    run("DEL", config(tmp_path), api, runner)
    assert runner.dels() == [("c", "net3"), ("b", "net2"), ("a", "net1"), ("main-net", "eth0")]
    assert cache.load(tmp_path / "cache", "c0ffee") is None


def test_del_after_a_failed_add_without_api_undoes_every_delegate(tmp_path: Path) -> None:
    """Without the pod to rebuild the list from, the kept cache is what lets DEL reach the
    delegates that ran before the failure (Multus's CmdDel reads the cache)."""
    second = {**MAIN, "name": "second", "type": "macvlan"}
    third = {**MAIN, "name": "third", "type": "macvlan"}
    cfg = config(tmp_path, delegates=[MAIN, second, third])
    del cfg["kubeconfig"]
    runner = FakeRunner(fail_add="third", fail_del=["second"])
    with pytest.raises(DelegateFailed):
        run("ADD", cfg, None, runner)
    assert runner.dels() == [("third", "net2"), ("second", "net1"), ("main-net", "eth0")]
    runner = FakeRunner()
    run("DEL", cfg, None, runner)
    assert runner.dels() == [("third", "net2"), ("second", "net1"), ("main-net", "eth0")]
    assert cache.load(tmp_path / "cache", "c0ffee") is None


class _Crash(RuntimeError):
    """Not a kvnet error: a bug or an interrupted call in a runner."""


@pytest.mark.parametrize("crash_on", ["main-net", "b"])
def test_any_exception_in_add_rolls_back_everything_and_reraises(tmp_path: Path, crash_on: str) -> None:
    api = FakeApi([pod(**{NETWORKS: "a,b,c"})], [nad("a"), nad("b"), nad("c")])
    runner = FakeRunner(cni_dir=tmp_path / "cache")
    record = runner.run_network

    def crashing(command: str, network: Mapping[str, Any], env: DelegateEnv, **kw: Any) -> dict[str, Any] | None:
        out = record(command, network, env, **kw)
        if command == "ADD" and network.get("name") == crash_on:
            raise _Crash(f"runner crashed on {crash_on}")
        return out

    runner.run_network = crashing  # type: ignore[method-assign]
    with pytest.raises(_Crash) as err:
        run("ADD", config(tmp_path), api, runner)
    assert str(err.value) == f"runner crashed on {crash_on}"  # the same exception, not wrapped
    ran = runner.adds()
    # every delegate that ran (the crashing one too) is deleted, in reverse; the cache stays for DEL
    assert runner.dels() == list(reversed(ran))
    assert ran[-1][0] == crash_on
    assert cache.load(tmp_path / "cache", "c0ffee") is not None and api.status == {}


def test_rollback_tries_every_delegate_when_a_del_raises_a_non_kvnet_error(tmp_path: Path) -> None:
    api = FakeApi([pod(**{NETWORKS: "a,b"})], [nad("a"), nad("b")])
    runner = FakeRunner(fail_add="b")
    record = runner.run_network

    def del_crashes_on_a(
        command: str, network: Mapping[str, Any], env: DelegateEnv, **kw: Any
    ) -> dict[str, Any] | None:
        out = record(command, network, env, **kw)
        if command == "DEL" and network.get("name") == "a":
            raise _Crash("DEL crashed on a")
        return out

    runner.run_network = del_crashes_on_a  # type: ignore[method-assign]
    with pytest.raises(DelegateFailed) as err:
        run("ADD", config(tmp_path), api, runner)
    assert err.value.msg.startswith('[default/web/uid-1:b]: error adding container to network "b": ')
    assert runner.dels() == [("b", "net2"), ("a", "net1"), ("main-net", "eth0")]
    assert cache.load(tmp_path / "cache", "c0ffee") is not None


def test_default_route_failure_is_left_to_del(tmp_path: Path) -> None:
    """Multus's CmdAdd undoes nothing when a step after a delegate fails: the cache stays
    and the runtime's DEL undoes every delegate."""
    api = FakeApi([pod(**{NETWORKS: json.dumps([{"name": "a", "default-route": ["10.2.0.1"]}])})], [nad("a")])
    runner = FakeRunner()
    with pytest.raises(NetlinkFailure) as err:
        run("ADD", config(tmp_path), api, runner)  # no route editor
    # the main network loses its default route first: that is where it fails
    assert err.value.msg == (
        "kvnet: [default/web/uid-1]: error setting default gateway: network main-net: "
        "default-route is requested but no route editor is configured"
    )
    assert runner.adds() == [("main-net", "eth0")] and runner.dels() == []
    assert cache.load(tmp_path / "cache", "c0ffee") is not None
    runner = FakeRunner()
    run("DEL", config(tmp_path), api, runner)
    assert runner.dels() == [("a", "net1"), ("main-net", "eth0")]


def test_cni_args_empty_segments_skipped(tmp_path: Path) -> None:
    api = FakeApi([pod()])
    runner = FakeRunner()
    run("ADD", config(tmp_path), api, runner, args="K8S_POD_NAMESPACE=default;;K8S_POD_NAME=web;FOO=;FOO=1;")
    assert runner.calls[0][2].args == (
        "IgnoreUnknown=true;K8S_POD_NAMESPACE=default;K8S_POD_NAME=web;K8S_POD_INFRA_CONTAINER_ID=;K8S_POD_UID=;"
        "K8S_POD_NAMESPACE=default;K8S_POD_NAME=web;FOO=1"
    )


def test_status_write_failure_fails_add_and_leaves_it_to_del(tmp_path: Path) -> None:
    api = FakeApi([pod(**{NETWORKS: "a"})], [nad("a")])
    api.status_fails = True
    runner = FakeRunner()
    with pytest.raises(ApiFailure) as err:
        run("ADD", config(tmp_path), api, runner)
    assert err.value.msg == "kvnet: [default/web/uid-1]: error setting the networks status: pods/status: 500"
    assert runner.dels() == []  # Multus's CmdAdd: no rollback after the delegates succeeded
    runner = FakeRunner()
    run("DEL", config(tmp_path), api, runner)
    assert runner.dels() == [("a", "net1"), ("main-net", "eth0")]
    assert cache.load(tmp_path / "cache", "c0ffee") is None


class _NoInterfaces(FakeRunner):
    """Every ADD result has IPs but no interfaces."""

    def run_network(
        self, command: str, network: Mapping[str, Any], env: DelegateEnv, **kw: Any
    ) -> dict[str, Any] | None:
        out = super().run_network(command, network, env, **kw)
        if out is not None:
            out.pop("interfaces")
            out["ips"][0].pop("interface")
        return out


def test_results_without_interfaces_get_no_status_entry(tmp_path: Path) -> None:
    """Multus's CreateNetworkStatuses makes no entry for a result without interfaces; with
    no entry at all, network-status is not written (SetPodNetworkStatusAnnotation skips a
    nil list)."""
    api = FakeApi([pod(**{NETWORKS: "a"})], [nad("a")])
    run("ADD", config(tmp_path), api, _NoInterfaces())
    assert api.writes == []


def test_duplicate_interface_rejected_before_anything_runs(tmp_path: Path) -> None:
    api = FakeApi([pod(**{NETWORKS: "a@net2,b"})], [nad("a"), nad("b")])
    runner = FakeRunner()
    with pytest.raises(InvalidConfig) as err:
        run("ADD", config(tmp_path), api, runner)
    assert "interface name net2 is requested by both default/a and default/b" in err.value.msg
    assert runner.calls == []


def test_default_route_moves(tmp_path: Path) -> None:
    api = FakeApi([pod(**{NETWORKS: '[{"name":"a","default-route":["10.2.0.1"]},{"name":"b"}]'})], [nad("a"), nad("b")])
    runner = FakeRunner(cni_dir=tmp_path / "cache", write_results=True)
    routes = FakeRoutes()
    result = run("ADD", config(tmp_path), api, runner, Seams(routes=routes))
    assert routes.ops == [
        ("del", "eth0", "4"),
        ("del", "eth0", "6"),
        ("del", "net1", "4"),
        ("del", "net1", "6"),
        ("set", "net1", "10.2.0.1"),
        ("del", "net2", "4"),
        ("del", "net2", "6"),
    ]
    assert result["routes"] == []  # the main network lost its default route
    # network-status comes from each delegate's own result (Multus's CreateNetworkStatuses(tmpResult))
    status = json.loads(api.status[("default", "web")])
    assert [s["gateway"] for s in status] == [["10.1.0.1"], ["10.2.0.1"], ["10.3.0.1"]]
    # libcni's cached results as Multus's DeleteDefaultGWCache / AddDefaultGWCache leave them
    cached_routes = [
        (att.network_name, (att.result or {}).get("routes"))
        for att in libcni_cache.list_attachments(tmp_path / "cache", "c0ffee")
    ]
    assert sorted(cached_routes) == [
        ("a", [{"dst": "0.0.0.0/0", "gw": "10.2.0.1"}]),
        ("b", None),
        ("main-net", None),
    ]
    cached = cache.load(tmp_path / "cache", "c0ffee")
    assert [(d.is_filter_v4_gateway, d.is_filter_v6_gateway) for d in cached] == [
        (True, True),
        (False, True),
        (True, True),
    ]
    with pytest.raises(InvalidAnnotation) as err:
        run(
            "ADD",
            config(tmp_path),
            FakeApi(
                [
                    pod(
                        **{
                            NETWORKS: '[{"name":"a","default-route":["10.2.0.1"]},'
                            '{"name":"b","default-route":["10.3.0.1"]}]'
                        }
                    )
                ],
                [nad("a"), nad("b")],
            ),
            FakeRunner(),
            Seams(routes=routes),
            container="c2",
        )
    assert err.value.msg.endswith("multus does not support ECMP for default-route")


def test_empty_default_route_still_filters_as_multus(tmp_path: Path) -> None:
    """`default-route: []` is a gateway request without a gateway: Multus's
    TryLoadPodDelegates runs CheckGatewayConfig for it, so every delegate is marked filtered
    (a null or missing key is no request)."""
    for value, filtered in (
        ('[{"name":"a","default-route":[]}]', True),
        ('[{"name":"a","default-route":null}]', False),
        ('[{"name":"a"}]', False),
    ):
        api = FakeApi([pod(**{NETWORKS: value})], [nad("a")])
        run(
            "ADD",
            config(tmp_path),
            api,
            FakeRunner(cni_dir=tmp_path / "cache", write_results=True),
            Seams(routes=FakeRoutes()),
        )
        cached = cache.load(tmp_path / "cache", "c0ffee") or ()
        assert [(d.is_filter_v4_gateway, d.is_filter_v6_gateway) for d in cached] == [(filtered, filtered)] * 2, value
        assert cached[1].gateway_request == (() if filtered else None), value
        run("DEL", config(tmp_path), api, FakeRunner())


def test_resource_name_needs_an_allocator(tmp_path: Path) -> None:
    api = FakeApi([pod(**{NETWORKS: "sriov"})], [nad("sriov", resource="intel.com/sriov")])
    with pytest.raises(InvalidConfig) as err:
        run("ADD", config(tmp_path), api, FakeRunner())
    assert (
        'network default/sriov asks for devices of resource "intel.com/sriov" but no device allocator' in err.value.msg
    )


def test_device_ids_consumed_in_order(tmp_path: Path) -> None:
    nads = [
        nad("s1", resource="r/x", config={"cniVersion": "1.0.0", "type": "sriov"}),
        nad("s2", resource="r/x", config={"cniVersion": "1.0.0", "plugins": [{"type": "sriov"}, {"type": "tuning"}]}),
    ]
    api = FakeApi([pod(**{NETWORKS: "s1,s2"})], nads)
    runner = FakeRunner()
    devinfo = FakeDevinfo()
    run(
        "ADD",
        config(tmp_path),
        api,
        runner,
        Seams(allocator=FakeAllocator({"r/x": ["0000:00:01.1", "0000:00:01.2"]}), devinfo=devinfo),
    )
    assert runner.calls[1][4]["deviceID"] == "0000:00:01.1" and runner.calls[1][4]["pciBusID"] == "0000:00:01.1"
    assert [p["deviceID"] for p in runner.calls[2][4]["plugins"]] == ["0000:00:01.2"] * 2
    assert runner.calls[2][3]["deviceID"] == "0000:00:01.2"
    assert devinfo.copied == [
        ("r/x", "0000:00:01.1", "default/s1", "net1"),
        ("r/x", "0000:00:01.2", "default/s2", "net2"),
    ]
    cached = cache.load(tmp_path / "cache", "c0ffee")
    assert [(d.device_id, d.resource_name) for d in cached[1:]] == [("0000:00:01.1", "r/x"), ("0000:00:01.2", "r/x")]


def test_readiness_indicator_waits_bounded(tmp_path: Path) -> None:
    ready = tmp_path / "ready"
    now = [0.0]
    slept: list[float] = []

    def sleep(s: float) -> None:
        slept.append(s)
        now[0] += s
        if now[0] >= 3:
            ready.write_text("")

    seams = Seams(sleep=sleep, clock=lambda: now[0], readiness_timeout=10)
    runner = FakeRunner()
    run("ADD", config(tmp_path, readinessindicatorfile=str(ready)), FakeApi([pod()]), runner, seams)
    assert slept == [1.0, 1.0, 1.0] and runner.adds() == [("main-net", "eth0")]
    ready.unlink()
    now[0] = 0.0
    seams = Seams(sleep=lambda s: now.__setitem__(0, now[0] + s), clock=lambda: now[0], readiness_timeout=5)
    with pytest.raises(TryAgainLater) as err:
        run("ADD", config(tmp_path, readinessindicatorfile=str(ready)), FakeApi([pod()]), FakeRunner(), seams)
    assert f"still waiting for readinessindicatorfile @ {ready}" in err.value.msg and err.value.cni_code == 11


def test_del_does_not_wait_for_the_readiness_file(tmp_path: Path) -> None:
    """Multus's CmdDel only checks the file now (ReadinessIndicatorExistsNow): a pod can be
    torn down while the default network is down."""
    ready = tmp_path / "ready"
    cfg = config(tmp_path, readinessindicatorfile=str(ready))
    api = FakeApi([pod(**{NETWORKS: "a"})], [nad("a")])
    ready.write_text("")
    run("ADD", cfg, api, FakeRunner())
    ready.unlink()
    t = FakeTime()
    runner = FakeRunner()
    assert run("DEL", cfg, api, runner, t.seams()) is None
    assert t.slept == [] and runner.dels() == [("a", "net1"), ("main-net", "eth0")]
    assert cache.load(tmp_path / "cache", "c0ffee") is None
    # a file that cannot even be checked (a path through a regular file) fails the DEL
    cfg = config(tmp_path, readinessindicatorfile=str(tmp_path / "cache-is-a-file" / "ready"))
    (tmp_path / "cache-is-a-file").write_text("")
    with pytest.raises(KvnetError) as err:
        run("DEL", cfg, api, FakeRunner(), t.seams())
    where = tmp_path / "cache-is-a-file" / "ready"
    assert err.value.msg == (
        f"kvnet: [default/web/uid-1]: error checking readinessindicatorfile on CNI DEL @ {where}: "
        f"stat {where}: not a directory"
    )


def test_api_down_on_add_is_an_error(tmp_path: Path) -> None:
    api = FakeApi([pod()])
    api.down = True
    with pytest.raises(ApiFailure) as err:
        run("ADD", config(tmp_path), api, FakeRunner())
    assert err.value.msg == "kvnet: [default/web/uid-1]: error waiting for pod: connection refused"


class FakeTime:
    """A clock that only moves when slept on."""

    def __init__(self) -> None:
        self.now = 0.0
        self.slept: list[float] = []

    def sleep(self, s: float) -> None:
        self.slept.append(round(s, 6))
        self.now += s

    def seams(self) -> Seams:
        return Seams(sleep=self.sleep, clock=lambda: self.now)


def test_get_pod_retries_a_retriable_failure_as_multus(tmp_path: Path) -> None:
    """Multus's GetPod: a 500/503 or a refused connection is retried every 0.25 s."""
    api = FakeApi([pod()])
    api.pod_failures = [RetriableApiFailure("Kubernetes API GET ...: 503 unavailable") for _ in range(3)]
    t = FakeTime()
    runner = FakeRunner()
    run("ADD", config(tmp_path), api, runner, t.seams())
    assert [c for c in api.calls if c[0] == "get_pod"] == [("get_pod", "default", "web")] * 4
    assert t.slept == [0.25, 0.25, 0.25] and runner.adds() == [("main-net", "eth0")]


def test_get_pod_gives_up_after_its_bound_with_the_live_query_error(tmp_path: Path) -> None:
    """2.5 s of retries (one call now, one per 0.25 s tick, one when the time is up), then
    Multus's one live query; its failure is the one reported."""
    api = FakeApi([pod()])
    api.pod_failures = [RetriableApiFailure("503 unavailable") for _ in range(11)] + [ApiFailure("503 still")]
    t = FakeTime()
    with pytest.raises(ApiFailure) as err:
        run("ADD", config(tmp_path), api, FakeRunner(), t.seams())
    assert err.value.msg == "kvnet: [default/web/uid-1]: error waiting for pod: 503 still"
    assert len(api.calls) == 12 and api.pod_failures == []
    assert t.now == pytest.approx(2.5) and t.slept == [0.25] * 10


def test_get_pod_other_failures_are_not_retried_but_read_once_more(tmp_path: Path) -> None:
    """A 403, a 429 or a timeout ends the poll at once; the live query that follows may still succeed."""
    api = FakeApi([pod()])
    api.pod_failures = [ApiFailure("Kubernetes API GET ...: 429 too many requests")]
    t = FakeTime()
    runner = FakeRunner()
    run("ADD", config(tmp_path), api, runner, t.seams())
    assert api.calls == [("get_pod", "default", "web")] * 2 and t.slept == []
    assert runner.adds() == [("main-net", "eth0")]
    api.pod_failures = [ApiFailure("403 forbidden"), ApiFailure("403 forbidden")]
    with pytest.raises(ApiFailure) as err:
        run("ADD", config(tmp_path), api, FakeRunner(), t.seams())
    assert err.value.msg == "kvnet: [default/web/uid-1]: error waiting for pod: 403 forbidden"
    assert t.slept == []


def test_del_with_the_cache_does_not_wait_for_the_api(tmp_path: Path) -> None:
    """With the delegate cache DEL needs nothing from the API: an API that only refuses
    connections costs it no request and no wait (it cost the 2.5 s pod poll before)."""
    api = FakeApi([pod(**{NETWORKS: "a"})], [nad("a")])
    run("ADD", config(tmp_path), api, FakeRunner())
    api.calls.clear()
    api.pod_failures = [RetriableApiFailure("connection refused") for _ in range(20)]
    t = FakeTime()
    runner = FakeRunner()
    run("DEL", config(tmp_path), api, runner, t.seams())
    assert runner.dels() == [("a", "net1"), ("main-net", "eth0")]
    assert t.now == 0.0 and api.calls == [] and len(api.pod_failures) == 20


def test_get_pod_retries_on_del_without_the_cache(tmp_path: Path) -> None:
    api = FakeApi([pod(**{NETWORKS: "a"})], [nad("a")])
    api.pod_failures = [RetriableApiFailure("connection refused") for _ in range(20)]
    t = FakeTime()
    runner = FakeRunner()
    run("DEL", config(tmp_path), api, runner, t.seams())
    assert runner.dels() == []  # the pod could not be read: nothing known to delete
    assert t.now == pytest.approx(2.5) and len(api.pod_failures) == 8


def test_api_failures_read_with_client_gos_text(tmp_path: Path) -> None:
    """Multus's messages carry client-go's error text (the server's message), not kvnet's
    request line: the pod read, a NAD read and the status write."""
    from kvnet.meta.ports import KubeApiFailure

    def fail(text: str) -> KubeApiFailure:
        return KubeApiFailure(f"Kubernetes API GET /x: 403 {text}", client_go_msg=text)

    api = FakeApi([pod(**{NETWORKS: "a"})], [nad("a")])
    api.pod_failures = [fail("pods is forbidden"), fail("pods is forbidden")]
    with pytest.raises(ApiFailure) as err:
        run("ADD", config(tmp_path), api, FakeRunner())
    assert err.value.msg == "kvnet: [default/web/uid-1]: error waiting for pod: pods is forbidden"
    api.nad_failures = [fail("nads are forbidden")]
    with pytest.raises(ApiFailure) as err:
        run("ADD", config(tmp_path), api, FakeRunner())
    assert err.value.msg.endswith("in namespace (default): nads are forbidden")

    class StatusFails(FakeApi):
        def set_network_status(self, namespace: str, name: str, value: str) -> None:
            raise KubeApiFailure("Kubernetes API PUT ...", client_go_msg="SetPodNetworkStatusAnnotation: failed ...")

    with pytest.raises(ApiFailure) as err:
        run("ADD", config(tmp_path), StatusFails([pod(**{NETWORKS: "a"})], [nad("a")]), FakeRunner())
    assert err.value.msg == (
        "kvnet: [default/web/uid-1]: error setting the networks status: SetPodNetworkStatusAnnotation: failed ..."
    )


def test_nads_are_not_retried(tmp_path: Path) -> None:
    """Multus's getKubernetesDelegate reads a NAD once; any failure names the NAD."""
    api = FakeApi([pod(**{NETWORKS: "a"})], [nad("a")])
    api.nad_failures = [RetriableApiFailure("Kubernetes API GET /apis/...: 503 unavailable")]
    t = FakeTime()
    with pytest.raises(ApiFailure) as err:
        run("ADD", config(tmp_path), api, FakeRunner(), t.seams())
    assert [c for c in api.calls if c[0] == "get_nad"] == [("get_nad", "default", "a")] and t.slept == []
    assert err.value.msg == (
        "kvnet: [default/web/uid-1]: error loading k8s delegates k8s args: TryLoadPodDelegates: error in getting "
        "k8s network for pod: GetNetworkDelegates: failed getting the delegate: getKubernetesDelegate: cannot find a "
        "network-attachment-definition (a) in namespace (default): Kubernetes API GET /apis/...: 503 unavailable"
    )


def _raw_request(cfg: Mapping[str, Any], command: str, container: str):  # type: ignore[no-untyped-def]
    """A request that skipped env validation (as a buggy runtime or a forged daemon call could send)."""
    from dataclasses import replace

    return replace(request(cfg, command), container_id=container)


@pytest.mark.parametrize("container", ["../x", "a/b", "..", "ok\n"])
@pytest.mark.parametrize("command", ["ADD", "DEL", "CHECK"])
def test_container_id_escaping_cache_rejected(tmp_path: Path, container: str, command: str) -> None:
    cfg = config(tmp_path)
    fn = {"ADD": meta.add, "DEL": meta.delete, "CHECK": meta.check}[command]
    runner = FakeRunner()
    with pytest.raises(InvalidEnvironment) as err:
        fn(_raw_request(cfg, command, container), conf=parse_multus_config(cfg), api=FakeApi([pod()]), runner=runner)
    # libcni's ValidateContainerID wording, the ID in the details
    prefix = "kvnet: [default/web/uid-1]: error saving the delegates: " if command == "ADD" else ""
    assert (err.value.msg, err.value.details, err.value.cni_code) == (
        prefix + "invalid characters in containerID",
        container,
        4,
    )
    assert runner.calls == [] and not (tmp_path / "cache").exists()


def test_bad_network_name_in_nad_config_rejected(tmp_path: Path) -> None:
    api = FakeApi(
        [pod(**{NETWORKS: "a"})], [nad("a", config={"cniVersion": "1.0.0", "name": "../../etc", "type": "bridge"})]
    )
    runner = FakeRunner()
    with pytest.raises(InvalidConfig) as err:
        run("ADD", config(tmp_path), api, runner)
    assert "net-attach-def default/a: invalid characters found in network name '../../etc'" in err.value.msg
    assert runner.calls == [] and not (tmp_path / "cache").exists()


# ------------------------------------------------------------------------------------
# DEL, CHECK, STATUS, GC
# ------------------------------------------------------------------------------------


def test_del_from_cache_with_pod_gone_and_api_down(tmp_path: Path) -> None:
    api = FakeApi([pod(**{NETWORKS: "a@foo,b"})], [nad("a"), nad("b")])
    run("ADD", config(tmp_path), api, FakeRunner())
    api.down = True
    runner = FakeRunner()
    assert run("DEL", config(tmp_path), api, runner) is None
    assert runner.dels() == [("b", "net2"), ("a", "foo"), ("main-net", "eth0")]
    assert cache.load(tmp_path / "cache", "c0ffee") is None
    # DEL twice: no cache and no pod is a success
    runner = FakeRunner()
    run("DEL", config(tmp_path), api, runner)
    assert runner.calls == []


def test_del_never_stops_at_one_failure(tmp_path: Path) -> None:
    api = FakeApi([pod(**{NETWORKS: "a,b"})], [nad("a"), nad("b")])
    run("ADD", config(tmp_path), api, FakeRunner())
    runner = FakeRunner(fail_del=["b", "a"])
    with pytest.raises(DelegateFailed) as err:
        run("DEL", config(tmp_path), api, runner)
    assert runner.dels() == [("b", "net2"), ("a", "net1"), ("main-net", "eth0")]
    # Multus's CmdDel returns delPlugins' joined errors as they are (no cmdErr prefix)
    assert err.value.msg == (
        'DelegateDel: error invoking DelegateDel - "bridge": error in getting result from DelNetwork: del failed on b'
        ' / DelegateDel: error invoking DelegateDel - "bridge": error in getting result from DelNetwork: del failed on a'
    )
    assert cache.load(tmp_path / "cache", "c0ffee") is None


def test_del_keeps_cache_with_retry_delete_on_error(tmp_path: Path) -> None:
    cfg = config(tmp_path, retryDeleteOnError=True)
    api = FakeApi([pod()])
    run("ADD", cfg, api, FakeRunner())
    with pytest.raises(DelegateFailed):
        run("DEL", cfg, api, FakeRunner(fail_del=["main-net"]))
    assert cache.load(tmp_path / "cache", "c0ffee") is not None


def test_del_leaves_network_status_alone(tmp_path: Path) -> None:
    """Multus's CmdDel never writes network-status (not even [] while the netns exists)."""
    api = FakeApi([pod(**{NETWORKS: "a"})], [nad("a")])
    netns = tmp_path / "netns"
    netns.write_text("")
    run("ADD", config(tmp_path), api, FakeRunner(), netns=str(netns))
    assert api.status[("default", "web")] != "[]" and len(api.writes) == 1
    run("DEL", config(tmp_path), api, FakeRunner(), netns=str(netns))
    assert len(api.writes) == 1


def test_del_without_cache_recomputes_from_pod(tmp_path: Path) -> None:
    api = FakeApi([pod(**{NETWORKS: "a"})], [nad("a")])
    runner = FakeRunner()
    run("DEL", config(tmp_path), api, runner)
    assert runner.dels() == [("a", "net1"), ("main-net", "eth0")]


def test_del_without_cache_keeps_what_multus_had_when_the_annotation_failed(tmp_path: Path) -> None:
    """Multus's CmdDel deletes the delegates TryLoadPodDelegates had when it failed: after
    CheckGatewayConfig (ECMP) the selections are in; after a missing NAD only the main one."""
    ecmp = '[{"name":"a","default-route":["10.2.0.1"]},{"name":"b","default-route":["10.3.0.1"]}]'
    api = FakeApi([pod(**{NETWORKS: ecmp})], [nad("a"), nad("b")])
    runner = FakeRunner()
    run("DEL", config(tmp_path), api, runner)
    assert runner.dels() == [("b", "net2"), ("a", "net1"), ("main-net", "eth0")]
    api = FakeApi([pod(**{NETWORKS: "a,missing"})], [nad("a")])
    runner = FakeRunner()
    run("DEL", config(tmp_path), api, runner)
    assert runner.dels() == [("main-net", "eth0")]


def test_del_of_a_multus_written_cache(tmp_path: Path) -> None:
    import importlib.util

    spec = importlib.util.spec_from_file_location("cache_golden", Path(__file__).with_name("test_cache.py"))
    assert spec is not None and spec.loader is not None
    golden = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(golden)
    MULTUS_CACHE = golden.MULTUS_CACHE
    (tmp_path / "cache").mkdir()
    (tmp_path / "cache" / "c0ffee").write_text(MULTUS_CACHE)
    runner = FakeRunner()
    devinfo = FakeDevinfo()
    run("DEL", config(tmp_path), None, runner, Seams(devinfo=devinfo))
    assert runner.dels() == [("sriov-net", "net2"), ("macvlan-conf", "mv0"), ("cbr0", "eth0")]
    # the conflist got the full config back, and the SR-IOV delegate its device info file cleaned
    assert runner.calls[2][4]["plugins"][0]["bridge"] == "cni0"
    assert runner.calls[0][3]["deviceID"] == "0000:3b:02.4"
    assert devinfo.removed == [("kube-system/sriov-net", "net2")]
    assert not (tmp_path / "cache" / "c0ffee").exists()


def test_check_from_cache_in_order(tmp_path: Path) -> None:
    api = FakeApi([pod(**{NETWORKS: "a"})], [nad("a")])
    run("ADD", config(tmp_path), api, FakeRunner())
    runner = FakeRunner()
    run("CHECK", config(tmp_path), api, runner)
    assert [(c[0], c[1], c[2].ifname) for c in runner.calls] == [("CHECK", "main-net", "eth0"), ("CHECK", "a", "net1")]
    with pytest.raises(UnknownContainer) as err:
        run("CHECK", config(tmp_path), api, FakeRunner(), container="other")
    assert err.value.cni_code == 3 and "no cached delegates for container other" in err.value.msg


class _FailingCheck(FakeRunner):
    def run_network(
        self, command: str, network: Mapping[str, Any], env: DelegateEnv, **kw: Any
    ) -> dict[str, Any] | None:
        out = super().run_network(command, network, env, **kw)
        if command == "CHECK" and network.get("name") == "a":
            raise DelegateFailed("link net1 is gone", code=11)
        return out


def test_check_failure_wording(tmp_path: Path) -> None:
    api = FakeApi([pod(**{NETWORKS: "a"})], [nad("a")])
    run("ADD", config(tmp_path), api, FakeRunner())
    with pytest.raises(DelegateFailed) as err:
        run("CHECK", config(tmp_path), api, _FailingCheck())
    # Multus's DelegateCheck around confCheck, returned by CmdCheck as it is
    assert err.value.msg == (
        'DelegateCheck: error invoking DelegateCheck - "bridge": '
        "error in getting result from CheckNetwork: link net1 is gone"
    )
    assert err.value.cni_code == 11


@pytest.mark.parametrize(
    ("value", "nads", "expected"),
    [
        (
            "missing",
            [],
            "TryLoadPodDelegates: error in loading K8s cluster default network from pod annotation: "
            "tryLoadK8sPodDefaultNetwork: failed getting the delegate: getKubernetesDelegate: cannot find a "
            "network-attachment-definition (missing) in namespace (kube-system): "
            'network-attachment-definitions.k8s.cni.cncf.io "missing" not found',
        ),
        (
            "a,b",
            [],
            "TryLoadPodDelegates: error in loading K8s cluster default network from pod annotation: "
            "tryLoadK8sPodDefaultNetwork: more than one default network is specified: a,b",
        ),
    ],
)
def test_default_network_errors_wrapped_as_multus(tmp_path: Path, value: str, nads: list[Any], expected: str) -> None:
    runner = FakeRunner()
    with pytest.raises(KvnetError) as err:
        run("ADD", config(tmp_path), FakeApi([pod(**{DEFAULT_NET: value})], nads), runner)
    assert err.value.msg == "kvnet: [default/web/uid-1]: error loading k8s delegates k8s args: " + expected
    assert runner.calls == [] and not (tmp_path / "cache").exists()


def test_status_and_gc_act_on_main_network(tmp_path: Path) -> None:
    cfg = config(tmp_path, cniVersion="1.1.0", readinessindicatorfile=str(tmp_path / "ready"))
    with pytest.raises(StatusNotAvailable) as err:
        run("STATUS", cfg, None, FakeRunner())
    assert err.value.cni_code == 50 and "does not exist" in err.value.msg
    (tmp_path / "ready").write_text("")
    runner = FakeRunner()
    run("STATUS", cfg, None, runner)
    assert [(c[0], c[1]) for c in runner.calls] == [("STATUS", "main-net")]


def _results_file(cni_dir: Path, name: str, doc: Any) -> None:
    (cni_dir / "results").mkdir(parents=True, exist_ok=True)
    (cni_dir / "results" / name).write_text(doc if isinstance(doc, str) else json.dumps(doc))


def test_gc_keeps_every_cached_attachment_as_multus(tmp_path: Path) -> None:
    """Multus's CmdGC: the valid attachments are every file of <cniDir>/results
    (gatherValidAttachmentsFromCache, name order), not the runtime's list."""
    cfg = config(tmp_path, cniVersion="1.1.0")
    cfg["cni.dev/valid-attachments"] = [{"containerID": "runtime-says", "ifname": "eth0"}]
    cni_dir = tmp_path / "cache"
    _results_file(cni_dir, "main-net-c2-eth0", {"kind": "cniCacheV1", "containerId": "c2", "ifName": "eth0"})
    _results_file(cni_dir, "blue-c1-net1", {"kind": "cniCacheV1", "containerId": "c1", "ifName": "net1"})
    _results_file(cni_dir, "broken", "{not json")
    _results_file(cni_dir, "no-ifname", {"containerId": "c3"})
    runner = FakeRunner()
    run("GC", cfg, None, runner)
    assert [(c[0], c[1]) for c in runner.calls] == [("GC", "main-net")]
    assert runner.valid == [{"containerID": "c1", "ifname": "net1"}, {"containerID": "c2", "ifname": "eth0"}]
    # no results folder at all: Multus's GC fails
    cfg["cniDir"] = str(tmp_path / "empty")
    with pytest.raises(KvnetError) as err:
        run("GC", cfg, None, FakeRunner())
    assert err.value.msg == (
        f"error in gather valid attachments: open {tmp_path / 'empty' / 'results'}: no such file or directory"
    )


def test_gc_waits_for_the_readiness_file(tmp_path: Path) -> None:
    cfg = config(tmp_path, cniVersion="1.1.0", readinessindicatorfile=str(tmp_path / "ready"))
    t = FakeTime()
    with pytest.raises(TryAgainLater) as err:
        run("GC", cfg, None, FakeRunner(), Seams(sleep=t.sleep, clock=lambda: t.now, readiness_timeout=3))
    assert t.slept == [1.0, 1.0, 1.0] and "still waiting for readinessindicatorfile" in err.value.msg


class RecordingExec:
    """A delegate program for the real DelegateRunner: speaks CNI up to 1.1.0, records its calls."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, dict[str, str], dict[str, Any]]] = []

    def __call__(self, plugin: str, stdin: bytes, env: Mapping[str, str], timeout: float) -> tuple[int, bytes, bytes]:
        command = env["CNI_COMMAND"]
        if command == "VERSION":
            return 0, json.dumps({"cniVersion": "1.1.0", "supportedVersions": ["1.0.0", "1.1.0"]}).encode(), b""
        self.calls.append((command, dict(env), json.loads(stdin)))
        if command == "ADD":
            out = {"cniVersion": "1.1.0", "interfaces": [{"name": env["CNI_IFNAME"], "sandbox": env["CNI_NETNS"]}]}
            return 0, json.dumps(out).encode(), b""
        return 0, b"", b""


class FailingExec(RecordingExec):
    """The RecordingExec, failing one command with the given exit status, stdout and stderr."""

    def __init__(self, command: str, status: int, stdout: bytes, stderr: bytes = b"") -> None:
        super().__init__()
        self.fail = (command, status, stdout, stderr)

    def __call__(self, plugin: str, stdin: bytes, env: Mapping[str, str], timeout: float) -> tuple[int, bytes, bytes]:
        if env["CNI_COMMAND"] == self.fail[0]:
            self.calls.append((env["CNI_COMMAND"], dict(env), json.loads(stdin)))
            return self.fail[1], self.fail[2], self.fail[3]
        return super().__call__(plugin, stdin, env, timeout)


def _real_runner(tmp_path: Path, fake: RecordingExec) -> Any:
    from kvnet.cni.delegate import DelegateRunner

    bins = tmp_path / "bin"
    bins.mkdir(exist_ok=True)
    (bins / "fake").write_text("#!/bin/sh\n")
    (bins / "fake").chmod(0o755)
    return DelegateRunner([str(bins)], exec=fake, cache_dir=str(tmp_path / "cache"))


SINGLE = {"cniVersion": "1.1.0", "name": "main-net", "type": "fake"}
LIST = {"cniVersion": "1.1.0", "name": "main-net", "plugins": [{"type": "fake"}]}
ERROR_JSON = b'{"cniVersion":"1.1.0","code":7,"msg":"no bridge","details":"br0 is missing"}'


@pytest.mark.parametrize(
    ("main", "stdout", "stderr", "cause"),
    [
        # a single conf: libcni's AddNetwork returns the plugin's error as it is (msg; details)
        (SINGLE, ERROR_JSON, b"", "no bridge; br0 is missing"),
        # a list: AddNetworkList names the plugin
        (LIST, ERROR_JSON, b"", 'plugin type="fake" failed (add): no bridge; br0 is missing'),
        # no JSON: invoke's RawExec words it
        (SINGLE, b"", b"boom\n", 'netplugin failed: "boom\\n"'),
        (SINGLE, b"", b"", "netplugin failed with no error message: exit status 1"),
    ],
)
def test_delegate_errors_read_as_libcni_reports_them(
    tmp_path: Path, main: dict[str, Any], stdout: bytes, stderr: bytes, cause: str
) -> None:
    cfg = config(tmp_path, cniVersion="1.1.0", delegates=[main])
    del cfg["kubeconfig"]
    with pytest.raises(DelegateFailed) as err:
        run("ADD", cfg, None, _real_runner(tmp_path, FailingExec("ADD", 1, stdout, stderr)))
    assert err.value.msg == f'[default/web/uid-1:main-net]: error adding container to network "main-net": {cause}'


def test_del_and_status_errors_read_as_multus(tmp_path: Path) -> None:
    cfg = config(tmp_path, cniVersion="1.1.0", delegates=[LIST])
    del cfg["kubeconfig"]
    run("ADD", cfg, None, _real_runner(tmp_path, RecordingExec()))
    with pytest.raises(DelegateFailed) as err:
        run("DEL", cfg, None, _real_runner(tmp_path, FailingExec("DEL", 1, ERROR_JSON)))
    assert err.value.msg == (
        'DelegateDel: error invoking ConflistDel - "main-net": conflistDel: error in getting result from '
        'DelNetworkList: plugin type="fake" failed (delete): no bridge; br0 is missing'
    )
    # STATUS: the delegate's CNI error as it is, code and details too (Multus's CmdStatus)
    status_error = b'{"cniVersion":"1.1.0","code":50,"msg":"not ready yet","details":"waiting"}'
    for main in (SINGLE, LIST):
        cfg = config(tmp_path, cniVersion="1.1.0", delegates=[main])
        with pytest.raises(DelegateFailed) as err:
            run("STATUS", cfg, None, _real_runner(tmp_path, FailingExec("STATUS", 1, status_error)))
        assert (err.value.msg, err.value.details, err.value.cni_code) == ("not ready yet", "waiting", 50)


def test_gc_through_the_runner_sends_gc_not_del(tmp_path: Path) -> None:
    """The runtime does not list the attachment, yet nothing is deleted: the main network
    gets GC with both keys libcni's GCNetworkList injects."""
    from kvnet.cni.delegate import DelegateRunner

    bins = tmp_path / "bin"
    bins.mkdir()
    (bins / "fake").write_text("#!/bin/sh\n")
    (bins / "fake").chmod(0o755)
    main = {"cniVersion": "1.1.0", "name": "main-net", "type": "fake"}
    cfg = config(tmp_path, cniVersion="1.1.0", delegates=[main])
    del cfg["kubeconfig"]
    fake = RecordingExec()
    runner = DelegateRunner([str(bins)], exec=fake, cache_dir=str(tmp_path / "cache"))
    run("ADD", cfg, None, runner)
    fake.calls.clear()
    run("GC", {**cfg, "cni.dev/valid-attachments": []}, None, runner)
    assert [c[0] for c in fake.calls] == ["GC"]
    sent = fake.calls[0][2]
    assert sent["cni.dev/valid-attachments"] == [{"containerID": "c0ffee", "ifname": "eth0"}]
    assert sent["cni.dev/attachments"] == sent["cni.dev/valid-attachments"]
    assert (tmp_path / "cache" / "results" / "main-net-c0ffee-eth0").exists()


# ------------------------------------------------------------------------------------
# the entry point
# ------------------------------------------------------------------------------------


def test_config_errors_worded_per_command_as_multus() -> None:
    """CmdAdd, CmdStatus and CmdGC wrap LoadNetConf's error (cmdErr(nil, "error loading
    netconf: %v")); CmdDel and CmdCheck return it as it is."""
    from kvnet.meta.wiring import make_handlers

    handlers = make_handlers(
        api_for=lambda _k: FakeApi(), runner_for=lambda _c, _r: FakeRunner(), seams_for=lambda _c: Seams()
    )
    bad = {"cniVersion": "1.1.0", "name": "kvnet", "type": "kvnet"}
    cause = "LoadNetConf: at least one delegate/clusterNetwork must be specified"
    for command, msg in (
        ("ADD", f"kvnet: error loading netconf: {cause}"),
        ("STATUS", f"kvnet: error loading netconf: {cause}"),
        ("GC", f"kvnet: error loading netconf: {cause}"),
        ("DEL", cause),
        ("CHECK", cause),
    ):
        with pytest.raises(InvalidConfig) as err:
            handlers[command](request(bad, command))
        assert err.value.msg == msg, command


def test_main_hot_path_imports_no_heavy_library() -> None:
    code = (
        "import sys, kvnet.meta.main\n"
        "heavy = [m for m in ('kubernetes', 'libvirt', 'jinja2', 'grpc', 'pyroute2') if m in sys.modules]\n"
        "print(heavy)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_shim_imports_stdlib_only() -> None:
    code = (
        "import sys; before = set(sys.modules)\n"
        "import kvnet.meta.shim\n"
        "print(sorted(m for m in set(sys.modules) - before if m.startswith('kvnet') and m not in "
        "('kvnet', 'kvnet.meta', 'kvnet.meta.shim')))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


# ------------------------------------------------------------------------------------
# thick mode without root: shim -> daemon -> the same meta code, with fakes
# ------------------------------------------------------------------------------------


def test_shim_through_daemon_runs_the_same_add(tmp_path: Path) -> None:
    import io

    from kvnet.meta import shim, wiring
    from kvnet.meta.daemon import CniDaemon

    api = FakeApi([pod(**{NETWORKS: "a"})], [nad("a")])
    runner = FakeRunner()
    handlers = wiring.make_handlers(
        api_for=lambda _k: api, runner_for=lambda _c, _r: runner, seams_for=lambda _c: Seams()
    )
    sock = str(tmp_path / "run" / "kvnet.sock")
    cfg = {**config(tmp_path), "socketPath": sock}
    env = {
        "CNI_COMMAND": "ADD",
        "CNI_CONTAINERID": "c0ffee",
        "CNI_NETNS": "/var/run/netns/p",
        "CNI_IFNAME": "eth0",
        "CNI_PATH": "/opt/cni/bin",
        "CNI_ARGS": "K8S_POD_NAMESPACE=default;K8S_POD_NAME=web;K8S_POD_UID=uid-1",
        "HOME": "/root",
    }
    with CniDaemon(sock, handlers=handlers):
        out = io.StringIO()
        assert shim.run(env, json.dumps(cfg).encode(), out) == 0
        result = json.loads(out.getvalue())
        assert result["cniVersion"] == "1.0.0" and result["interfaces"][0]["name"] == "eth0"
        assert runner.adds() == [("main-net", "eth0"), ("a", "net1")]
        # errors travel back as the CNI error object with the exit status
        out = io.StringIO()
        assert shim.run({**env, "CNI_CONTAINERID": "bad/id"}, json.dumps(cfg).encode(), out) == 1
        assert json.loads(out.getvalue())["code"] == 4
        out = io.StringIO()
        assert shim.run({"CNI_COMMAND": "VERSION"}, b"", out) == 0
        assert "1.1.0" in json.loads(out.getvalue())["supportedVersions"]
    assert not Path(sock).exists()


@pytest.mark.parametrize("compiled", [True, False])
def test_standalone_shim_script_runs_without_site(tmp_path: Path, compiled: bool) -> None:
    """The installed script runs its compiled code, or (a Python with other bytecode) its source."""
    from importlib.util import MAGIC_NUMBER

    from kvnet.meta.shim import standalone_script

    exe = tmp_path / "kvnet-shim"
    text = standalone_script(sys.executable)
    assert text.count(repr(MAGIC_NUMBER)) == 1
    exe.write_text(text if compiled else text.replace(repr(MAGIC_NUMBER), repr(b"\0\0\r\n")))
    exe.chmod(0o755)
    proc = subprocess.run([str(exe)], env={"CNI_COMMAND": "VERSION"}, capture_output=True, check=True)
    assert json.loads(proc.stdout)["supportedVersions"][-1] == "1.1.0"
    cfg = {"cniVersion": "1.0.0", "name": "x", "type": "kvnet-shim", "socketPath": str(tmp_path / "none.sock")}
    env = {"CNI_COMMAND": "ADD", "CNI_CONTAINERID": "c", "CNI_NETNS": "/n", "CNI_IFNAME": "eth0", "CNI_PATH": "/p"}
    proc = subprocess.run([str(exe)], input=json.dumps(cfg).encode(), env=env, capture_output=True, check=False)
    assert proc.returncode == 1 and json.loads(proc.stdout)["code"] == 11


def test_shim_without_daemon_is_try_again_later(tmp_path: Path) -> None:
    import io

    from kvnet.meta import shim

    sock = str(tmp_path / "none.sock")
    out = io.StringIO()
    cfg = {"cniVersion": "0.4.0", "name": "x", "type": "kvnet-shim", "socketPath": sock}
    env = {"CNI_COMMAND": "ADD", "CNI_CONTAINERID": "c", "CNI_NETNS": "/n", "CNI_IFNAME": "eth0", "CNI_PATH": "/p"}
    assert shim.run(env, json.dumps(cfg).encode(), out) == 1
    err = json.loads(out.getvalue())
    assert err["code"] == 11 and err["cniVersion"] == "0.4.0"
    assert err["msg"].startswith(f"kvnet-shim: no kvnet daemon is listening at {sock} (is it running?): ")


def _one_shot_server(tmp_path: Path, answer: bytes | None) -> tuple[str, Any]:
    """A unix socket that reads one request, then sends ``answer`` (None: closes without one)."""
    import socket
    import threading

    sock_path = str(tmp_path / "d.sock")
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(sock_path)
    server.listen(1)

    def serve() -> None:
        conn, _ = server.accept()
        with conn:
            conn.recv(65536)
            if answer is not None:
                conn.sendall(answer)
        server.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    return sock_path, thread


@pytest.mark.parametrize(
    ("answer", "says"),
    [
        (None, "went away during ADD without answering"),
        (
            b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}",
            "is stopping and refused ADD; try again",
        ),
    ],
)
def test_shim_says_what_happened_to_the_daemon(tmp_path: Path, answer: bytes | None, says: str) -> None:
    """A daemon gone mid-call and a stopping daemon are told apart from a call that failed
    (which comes back as the daemon's CNI error, printed as it is)."""
    import io

    from kvnet.meta import shim

    sock, thread = _one_shot_server(tmp_path, answer)
    cfg = {"cniVersion": "1.0.0", "name": "x", "type": "kvnet-shim", "socketPath": sock}
    env = {"CNI_COMMAND": "ADD", "CNI_CONTAINERID": "c", "CNI_NETNS": "/n", "CNI_IFNAME": "eth0", "CNI_PATH": "/p"}
    out = io.StringIO()
    assert shim.run(env, json.dumps(cfg).encode(), out) == 1
    thread.join(5)
    err = json.loads(out.getvalue())
    assert (
        err["code"] == 11 and err["msg"].startswith(f"kvnet-shim: the kvnet daemon at {sock} ") and says in err["msg"]
    )


@pytest.mark.parametrize("stdin", [b"{", b"[1]", b"", b" \n", b'"', b'{"a": tru}', b"{}x", b"\xff"])
def test_shim_refuses_a_config_that_is_not_json_as_kvnet_cni_does(stdin: bytes, tmp_path: Path) -> None:
    """multus-shim runs skel, which checks the config before it calls its daemon: a broken
    config is code 6, never the try-again-later of an unreachable daemon; the installed
    script (which starts without ``json``) says the same as the module."""
    import io

    from kvnet.cni.protocol import plugin_main
    from kvnet.meta import shim

    exe = tmp_path / "kvnet-shim"
    exe.write_text(shim.standalone_script(sys.executable))
    exe.chmod(0o755)

    env = {"CNI_COMMAND": "ADD", "CNI_CONTAINERID": "c", "CNI_NETNS": "/n", "CNI_IFNAME": "eth0", "CNI_PATH": "/p"}
    out = io.StringIO()
    assert shim.run(env, stdin, out) == 1
    thin = io.StringIO()
    assert plugin_main({"ADD": lambda _r: None}, environ=env, stdin=io.BytesIO(stdin), stdout=thin) != 0
    assert json.loads(out.getvalue()) == json.loads(thin.getvalue())
    proc = subprocess.run([str(exe)], input=stdin, env=env, capture_output=True, check=False)
    assert (proc.returncode, proc.stdout.decode(), proc.stderr) == (1, out.getvalue(), b"")
    assert json.loads(out.getvalue())["code"] == 6


# ------------------------------------------------------------------------------------
# kvnet install
# ------------------------------------------------------------------------------------


def _install(tmp_path: Path, *extra: str) -> tuple[int, str]:
    import contextlib
    import io

    from kvnet import cli

    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        rc = cli.main(
            [
                "install",
                "--bin-dir",
                str(tmp_path / "bin"),
                "--conf-dir",
                str(tmp_path / "net.d"),
                "--cni-dir",
                str(tmp_path / "cache"),
                *extra,
            ]
        )
    return rc, out.getvalue()


def test_install_links_programs_and_wraps_the_default_network(tmp_path: Path) -> None:
    (tmp_path / "net.d").mkdir()
    flannel = {"cniVersion": "0.3.1", "name": "cbr0", "plugins": [{"type": "flannel"}, {"type": "portmap"}]}
    (tmp_path / "net.d" / "10-flannel.conflist").write_text(json.dumps(flannel))
    rc, out = _install(tmp_path, "--kubeconfig", "/etc/kvnet/kubeconfig")
    assert rc == 0
    assert sorted(p.name for p in (tmp_path / "bin").iterdir()) == [
        "kvnet",
        "kvnet-binding",
        "kvnet-mirror",
        "kvnet-shim",
    ]
    assert os.path.basename(os.readlink(tmp_path / "bin" / "kvnet")) == "kvnet-cni"
    shim_text = (tmp_path / "bin" / "kvnet-shim").read_text()
    assert shim_text.startswith(f"#!{sys.executable} -IS\n") and "def call_daemon" in shim_text
    assert os.access(tmp_path / "bin" / "kvnet-shim", os.X_OK)
    conf = json.loads((tmp_path / "net.d" / "00-kvnet.conflist").read_text())
    assert conf["plugins"] == [
        {
            "type": "kvnet",
            "cniDir": str(tmp_path / "cache"),
            "binDir": str(tmp_path / "bin"),
            "logToStderr": True,
            "logLevel": "error",
            "kubeconfig": "/etc/kvnet/kubeconfig",
            "delegates": [flannel],
        }
    ]
    # the written plugin config is one the meta-plugin accepts
    assert parse_multus_config({**conf["plugins"][0], "name": conf["name"]}).delegates[0]["name"] == "cbr0"
    assert out.count("installed:") == 5
    rc, out = _install(tmp_path, "--kubeconfig", "/etc/kvnet/kubeconfig")
    assert rc == 0 and out.count("unchanged:") == 5  # idempotent


def test_install_thick_and_errors(tmp_path: Path) -> None:
    rc, _ = _install(tmp_path)
    assert rc == 1  # no default network to wrap
    rc, _ = _install(tmp_path, "--mode", "thick", "--kubeconfig", "/k", "--cluster-network", "cbr0")
    assert rc == 0
    conf = json.loads((tmp_path / "net.d" / "00-kvnet.conflist").read_text())
    assert conf["plugins"][0]["type"] == "kvnet-shim" and conf["plugins"][0]["socketPath"] == "/run/kvnet/kvnet.sock"
    assert conf["plugins"][0]["clusterNetwork"] == "cbr0"


def test_shim_rejects_a_non_http_answer(tmp_path: Path) -> None:
    import io
    import socket
    import threading

    from kvnet.meta import shim

    path = str(tmp_path / "junk.sock")
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    srv.bind(path)
    srv.listen(1)

    def answer() -> None:
        conn, _ = srv.accept()
        conn.recv(65536)
        conn.sendall(b"garbage\r\n\r\n{}")
        conn.close()

    t = threading.Thread(target=answer)
    t.start()
    out = io.StringIO()
    cfg = {"cniVersion": "1.0.0", "name": "x", "type": "kvnet-shim", "socketPath": path}
    env = {"CNI_COMMAND": "DEL", "CNI_CONTAINERID": "c", "CNI_IFNAME": "eth0", "CNI_PATH": "/p"}
    try:
        assert shim.run(env, json.dumps(cfg).encode(), out) == 1
    finally:
        t.join()
        srv.close()
    err = json.loads(out.getvalue())
    assert err["code"] == 11 and "not an HTTP answer" in err["msg"]


def test_shim_socket_path_rules() -> None:
    from kvnet.meta.shim import socket_path

    assert socket_path({"socketPath": "/a.sock", "socketDir": "/d"}) == "/a.sock"
    assert socket_path({"socketDir": "/run/x"}) == "/run/x/kvnet.sock"
    assert socket_path({}) == "/run/kvnet/kvnet.sock"


def test_shim_call_imports_only_c_modules(tmp_path: Path) -> None:
    """The installed shim's ADD that goes well imports nothing but ``_json``, ``_socket``
    and ``posix`` on top of what ``python -I -S`` starts with: ``json`` and ``socket``
    would cost it more than the interpreter's own start (docs/bench/meta_cni_profile.md)."""

    def imported(argv: list[str], **kw: Any) -> set[str]:
        proc = subprocess.run([sys.executable, "-I", "-S", "-X", "importtime", *argv], capture_output=True, **kw)
        assert proc.returncode == 0, proc
        rows = [line.split("|")[-1].strip() for line in proc.stderr.decode().splitlines() if line.startswith("import")]
        return set(rows) - {"imported package"}

    from kvnet.meta.shim import standalone_script

    exe = tmp_path / "kvnet-shim"
    exe.write_text(standalone_script(sys.executable))
    answer = json.dumps({"exit": 0, "stdout": '{"cniVersion": "1.0.0"}'}).encode()
    sock, thread = _one_shot_server(
        tmp_path, b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s" % (len(answer), answer)
    )
    cfg = {"cniVersion": "1.0.0", "name": "x", "type": "kvnet-shim", "socketPath": sock}
    env = {"CNI_COMMAND": "ADD", "CNI_CONTAINERID": "c", "CNI_NETNS": "/n", "CNI_IFNAME": "eth0", "CNI_PATH": "/p"}
    extra = imported([str(exe)], input=json.dumps(cfg).encode(), env=env) - imported(["-c", "pass"])
    thread.join(5)
    assert extra <= {"_json", "_socket", "posix"}, extra


def test_daemon_config_overlays_all_but_identity() -> None:
    from kvnet.meta.wiring import overlay_config

    req = {"cniVersion": "0.4.0", "name": "from-runtime", "type": "kvnet-shim", "socketPath": "/s", "cniDir": "/a"}
    daemon = {"cniVersion": "1.0.0", "Name": "daemon", "type": "kvnet", "cniDir": "/b", "clusterNetwork": "main"}
    assert overlay_config(req, daemon) == {
        "cniVersion": "0.4.0",
        "name": "from-runtime",
        "type": "kvnet-shim",
        "socketPath": "/s",
        "cniDir": "/b",
        "clusterNetwork": "main",
    }
    assert overlay_config(req, None) is req


# ------------------------------------------------------------------------------------
# properties and the real binary without root
# ------------------------------------------------------------------------------------

from hypothesis import given  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

_key = st.from_regex(r"[A-Za-z_][A-Za-z0-9_]{0,8}", fullmatch=True)
_val = st.from_regex(r"[A-Za-z0-9_.=/-]{0,8}", fullmatch=True)


@given(
    value=st.recursive(
        st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
        lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=4),
        max_leaves=12,
    ),
    pad=st.sampled_from(["", " ", "\n\t ", "\r\n"]),
)
def test_shim_json_is_the_json_package(value: Any, pad: str) -> None:
    """The shim's C-only JSON reads what ``json.loads`` reads and writes its request as
    ``json.dumps`` does; anything ``json.loads`` refuses it refuses too."""
    from kvnet.meta import shim

    text = pad + json.dumps(value) + pad
    assert shim._loads(text) == json.loads(text)
    assert shim._loads(text + "x") is shim._NOT_JSON and shim._loads(text[:-1] + "]x") is shim._NOT_JSON
    env = {"CNI_COMMAND": "ADD", "CNI_ARGS": json.dumps(value)}
    stdin = text.encode() + b"\xff"
    body = shim._request_body(env, stdin)
    assert body == json.dumps({"env": env, "stdin": stdin.decode("utf-8", errors="surrogateescape")}).encode()


@given(pairs=st.lists(st.tuples(_key, _val), max_size=6), mac=st.booleans())
def test_delegate_cni_args_properties(pairs: list[tuple[str, str]], mac: bool) -> None:
    from dataclasses import replace

    from kvnet.meta.cache import CachedDelegate

    raw = ";".join(f"{k}={v}" for k, v in pairs)
    req = replace(request(config(Path("/nonexistent"))), args_str=raw, args=parse_cni_args(raw))
    pa = PodArgs("ns", "pod", "uid", "infra")
    d = CachedDelegate(name="n", conf={"type": "x"}, mac_request="02:00:00:00:00:01" if mac else "")
    out = delegate_cni_args(req, pa, d).split(";")
    # Multus's newCNIRuntimeConf, step by step: the fixed five; each runtime pair fills a
    # fixed or earlier key whose value is empty, else it is appended (equal pairs too)
    model = [
        ["IgnoreUnknown", "true"],
        ["K8S_POD_NAMESPACE", "ns"],
        ["K8S_POD_NAME", "pod"],
        ["K8S_POD_INFRA_CONTAINER_ID", "infra"],
        ["K8S_POD_UID", "uid"],
    ]
    for k, v in pairs:
        hit = next((p for p in model if p[0] == k and p[1] == "" and v != ""), None)
        if hit is not None:
            hit[1] = v
        else:
            model.append([k, v])
    expected = [f"{k}={v}" for k, v in model] + (["MAC=02:00:00:00:00:01"] if mac else [])
    assert out == expected
    assert out[:5] == [
        "IgnoreUnknown=true",
        "K8S_POD_NAMESPACE=ns",
        "K8S_POD_NAME=pod",
        "K8S_POD_INFRA_CONTAINER_ID=infra",
        "K8S_POD_UID=uid",
    ]
    keys = {item.split("=", 1)[0] for item in out}
    for k, v in pairs:  # every runtime key reaches the delegate, every non-empty value too
        assert k in keys
        assert not v or f"{k}={v}" in out
    assert len(out) >= 5 + len(pairs) - sum(1 for _, v in pairs if v) + (1 if mac else 0)


@given(
    cni_args=st.dictionaries(_key, st.integers() | _val, max_size=4),
    existing=st.dictionaries(_key, st.integers(), max_size=3),
    conflist=st.booleans(),
)
def test_inject_args_properties(cni_args: dict[str, Any], existing: dict[str, Any], conflist: bool) -> None:
    plugin = {"type": "bridge", "args": {"cni": dict(existing), "other": 1}}
    conf: dict[str, Any] = {"name": "n", "plugins": [plugin, {"type": "tuning"}]} if conflist else dict(plugin)
    out = delegates._inject_args(conf, cni_args, "0000:00:01.0")
    targets = out["plugins"] if conflist else [out]
    for t in targets:
        assert t["args"]["cni"] == {**(existing if t["type"] == "bridge" else {}), **cni_args}
        assert t["deviceID"] == t["pciBusID"] == "0000:00:01.0"
    assert targets[0]["args"]["other"] == 1
    assert plugin["args"]["cni"] == existing  # the input is not changed


def test_kvnet_cni_binary_without_root(tmp_path: Path, kvnet_bin_dir: str) -> None:
    """The real entry point: stdout carries only the result, logs go to logFile/stderr."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    noop = bin_dir / "noop"
    noop.write_text(
        '#!/bin/sh\ncase "$CNI_COMMAND" in\nVERSION) echo \'{"cniVersion":"1.0.0","supportedVersions":'
        '["1.0.0"]}\';;\nADD) cat >/dev/null; echo \'{"cniVersion":"1.0.0","interfaces":[{"name":"\'$CNI_IFNAME\''
        '","sandbox":"/n"}],"ips":[{"address":"10.1.2.3/24"}],"dns":{}}\';;\n*) cat >/dev/null;;\nesac\n'
    )
    noop.chmod(0o755)
    log = tmp_path / "kvnet.log"
    cfg = {
        "cniVersion": "0.4.0",
        "name": "k",
        "type": "kvnet",
        "cniDir": str(tmp_path / "cache"),
        "binDir": str(bin_dir),
        "logFile": str(log),
        "logLevel": "verbose",
        "logToStderr": False,
        "delegates": [
            {"cniVersion": "1.0.0", "name": "main", "type": "noop"},
            {"cniVersion": "1.0.0", "name": "second", "type": "noop"},
        ],
    }
    env = {
        "PATH": os.environ["PATH"],
        "CNI_COMMAND": "ADD",
        "CNI_CONTAINERID": "abc",
        "CNI_NETNS": "/n",
        "CNI_IFNAME": "eth0",
        "CNI_PATH": str(bin_dir),
        "CNI_ARGS": "K8S_POD_NAMESPACE=d;K8S_POD_NAME=p",
    }
    exe = os.path.join(kvnet_bin_dir, "kvnet-cni")
    proc = subprocess.run([exe], input=json.dumps(cfg).encode(), env=env, capture_output=True, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert json.loads(proc.stdout) == {
        "cniVersion": "0.4.0",
        "interfaces": [{"name": "eth0", "sandbox": "/n"}],
        "ips": [{"version": "4", "address": "10.1.2.3/24"}],
        "dns": {},
    }
    assert proc.stderr == b""
    text = log.read_text()
    assert "pod d/p: container abc gets eth0=main, net1=second" in text and "added net1 from second" in text
    proc = subprocess.run(
        [exe], input=json.dumps(cfg).encode(), env={**env, "CNI_COMMAND": "DEL"}, capture_output=True, check=False
    )
    assert proc.returncode == 0 and proc.stdout == b"", proc.stdout + proc.stderr
    assert not (tmp_path / "cache" / "abc").exists()


def test_kvnet_cni_sriov_device_ids_from_podresources(tmp_path: Path, kvnet_bin_dir: str) -> None:
    """resourceName NADs get the kubelet's device IDs in order, device-info reaches network-status."""
    from kvnet.lab.apiserver import ApiStandIn
    from kvnet.lab.podresources_server import PodResourcesStandIn
    from kvnet.meta import deviceinfo

    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    rec = bin_dir / "rec"
    rec.write_text(
        f'#!/bin/sh\ncase "$CNI_COMMAND" in\nVERSION) echo \'{{"cniVersion":"1.0.0","supportedVersions":'
        f'["1.0.0"]}}\';;\nADD) cat > {tmp_path}/$CNI_IFNAME.json; echo \'{{"cniVersion":"1.0.0",'
        f'"interfaces":[{{"name":"\'$CNI_IFNAME\'","sandbox":"/n"}}],"dns":{{}}}}\';;\n*) cat >/dev/null;;\nesac\n'
    )
    rec.chmod(0o755)
    devroot = tmp_path / "devinfo"
    info = deviceinfo.parse_device_info({"type": "pci", "version": "1.1.0", "pci": {"pci-address": "0000:81:00.2"}})
    deviceinfo.save_dp("intel.com/sriov", "0000:81:00.2", info, str(devroot))
    sr = {"cniVersion": "1.0.0", "type": "rec", "capabilities": {"deviceID": True, "CNIDeviceInfoFile": True}}
    with (
        ApiStandIn() as api,
        PodResourcesStandIn(
            str(tmp_path / "kubelet.sock"), {("default", "vm"): {"intel.com/sriov": ["0000:81:00.3", "0000:81:00.2"]}}
        ),
    ):
        nads = [
            {**nad(n, config=sr, resource="intel.com/sriov"), "kind": "NetworkAttachmentDefinition"}
            for n in ("sr1", "sr2")
        ]
        api.load(
            [
                *nads,
                {
                    **pod("vm", uid="u-vm", **{NETWORKS: "sr1,sr2"}),
                    "kind": "Pod",
                    "spec": {"containers": [{"name": "compute", "image": "x"}]},
                },
            ]
        )
        api.write_kubeconfig(str(tmp_path / "kubeconfig"))
        cfg = {
            "cniVersion": "1.0.0",
            "name": "k",
            "type": "kvnet",
            "cniDir": str(tmp_path / "cache"),
            "binDir": str(bin_dir),
            "kubeconfig": str(tmp_path / "kubeconfig"),
            "logToStderr": False,
            "podResourcesSocket": str(tmp_path / "kubelet.sock"),
            "deviceInfoDir": str(devroot),
            "delegates": [{"cniVersion": "1.0.0", "name": "main", "type": "rec"}],
        }
        env = {
            "PATH": os.environ["PATH"],
            "CNI_COMMAND": "ADD",
            "CNI_CONTAINERID": "abc",
            "CNI_NETNS": "/n",
            "CNI_IFNAME": "eth0",
            "CNI_PATH": str(bin_dir),
            "CNI_ARGS": "K8S_POD_NAMESPACE=default;K8S_POD_NAME=vm;K8S_POD_UID=u-vm",
        }
        exe = os.path.join(kvnet_bin_dir, "kvnet-cni")
        proc = subprocess.run([exe], input=json.dumps(cfg).encode(), env=env, capture_output=True, check=False)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        net1 = json.loads((tmp_path / "net1.json").read_text())
        net2 = json.loads((tmp_path / "net2.json").read_text())
        # sorted device IDs, handed out in NAD order, in the config and the runtime config
        assert net1["deviceID"] == net1["pciBusID"] == net1["runtimeConfig"]["deviceID"] == "0000:81:00.2"
        assert net2["deviceID"] == "0000:81:00.3"
        cni_file = deviceinfo.cni_path("default/sr1", "abc", "net1", str(devroot))
        assert net1["runtimeConfig"]["CNIDeviceInfoFile"] == cni_file and os.path.exists(cni_file)
        status = json.loads(
            api.get("Pod", "default", "vm")["metadata"]["annotations"]["k8s.v1.cni.cncf.io/network-status"]
        )
        assert status[1]["device-info"] == {"type": "pci", "version": "1.1.0", "pci": {"pci-address": "0000:81:00.2"}}
        assert "device-info" not in status[2]  # the device plugin wrote no file for that one
        cached = json.loads((tmp_path / "cache" / "abc").read_text())
        assert [(d.get("deviceID"), d.get("resourceName")) for d in cached[1:]] == [
            ("0000:81:00.2", "intel.com/sriov"),
            ("0000:81:00.3", "intel.com/sriov"),
        ]
        proc = subprocess.run(
            [exe], input=json.dumps(cfg).encode(), env={**env, "CNI_COMMAND": "DEL"}, capture_output=True, check=False
        )
        assert proc.returncode == 0, proc.stdout + proc.stderr
        assert not os.path.exists(cni_file)
