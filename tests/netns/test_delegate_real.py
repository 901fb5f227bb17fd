"""The delegate runner on Debian's real CNI plugins, in network namespaces (root).

Each test makes two namespaces: a "host" one where the plugins run (so the bridge and
portmap's iptables chains live and die with it) and a "pod" one given as CNI_NETNS.
host-local keeps its leases in a temp dir, never in the host's /var/lib/cni.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from kvnet.cni.delegate import DelegateEnv, DelegateRunner, exec_argv
from kvnet.cni.results import version_key
from kvnet.core.errors import DelegateFailed

pytestmark = pytest.mark.root

IP = shutil.which("ip") or "/usr/sbin/ip"


@dataclass
class NetnsExec:
    """Runs each plugin inside the test's "host" namespace and records what it was sent."""

    host: str
    calls: list[tuple[str, str, dict[str, Any]]] = field(default_factory=list)

    def __call__(self, plugin: str, stdin: bytes, env: Mapping[str, str], timeout: float) -> tuple[int, bytes, bytes]:
        sent = json.loads(stdin) if stdin else {}
        self.calls.append((os.path.basename(plugin), env["CNI_COMMAND"], sent))
        return exec_argv([IP, "netns", "exec", self.host, plugin], stdin, env, timeout)

    def sent(self, command: str) -> list[tuple[str, dict[str, Any]]]:
        return [(p, conf) for p, c, conf in self.calls if c == command]


@dataclass
class Lab:
    host: Any
    pod: Any
    data_dir: Path
    cache_dir: Path
    exec: NetnsExec
    runner: DelegateRunner
    bridge: str

    def env(self, ifname: str = "net1", container_id: str = "ctr-1") -> DelegateEnv:
        return DelegateEnv(container_id, self.pod.path, ifname, "IgnoreUnknown=true;K8S_POD_NAME=p;K8S_POD_NAMESPACE=d")

    def ipj(self, *args: str) -> Any:
        out = self.pod.run("ip", "-j", *args).stdout
        return json.loads(out) if out.strip() else []


@pytest.fixture
def lab(netns_factory: Callable[..., Any], cni_bin_dir: str, tmp_path: Path) -> Iterator[Lab]:
    host = netns_factory("kvh")
    pod = netns_factory("kvp")
    ex = NetnsExec(host.name)
    runner = DelegateRunner([cni_bin_dir], timeout=30, exec=ex, cache_dir=str(tmp_path / "cache"))
    yield Lab(host, pod, tmp_path / "ipam", tmp_path / "cache", ex, runner, "kvbr0")


def supported_versions(plugin_dir: str, plugin: str) -> list[str]:
    """What the plugin answers to VERSION."""
    done = subprocess.run(
        [os.path.join(plugin_dir, plugin)], input=b"{}", env={"CNI_COMMAND": "VERSION"}, capture_output=True, check=True
    )
    versions: list[str] = json.loads(done.stdout)["supportedVersions"]
    return versions


def bridge_conf(lab: Lab, subnet: str = "10.77.0.0/24") -> dict[str, Any]:
    return {
        "type": "bridge",
        "bridge": lab.bridge,
        "isGateway": True,
        "ipam": {
            "type": "host-local",
            "dataDir": str(lab.data_dir),
            "ranges": [[{"subnet": subnet}]],
            "routes": [{"dst": "0.0.0.0/0"}],
        },
    }


def leases(lab: Lab, network: str) -> list[str]:
    d = lab.data_dir / network
    return sorted(p.name for p in d.iterdir() if p.name[0].isdigit()) if d.exists() else []


def test_bridge_host_local_add_check_del(lab: Lab) -> None:
    net = {"cniVersion": "1.0.0", "name": "blue", **bridge_conf(lab)}
    result = lab.runner.run_network("ADD", net, lab.env())
    assert result is not None and result["cniVersion"] == "1.0.0"
    assert result["ips"][0]["address"] == "10.77.0.2/24" and result["ips"][0]["gateway"] == "10.77.0.1"

    links = {link["ifname"]: link for link in lab.ipj("link", "show")}
    assert "net1" in links and links["net1"]["operstate"] in ("UP", "UNKNOWN", "LOWERLAYERDOWN")
    addrs = [(a["local"], a["prefixlen"]) for a in lab.ipj("-4", "addr", "show", "dev", "net1")[0]["addr_info"]]
    assert addrs == [("10.77.0.2", 24)]
    default = [r for r in lab.ipj("-4", "route", "show") if r["dst"] == "default"]
    assert default == [{"dst": "default", "gateway": "10.77.0.1", "dev": "net1", "flags": []}]
    assert leases(lab, "blue") == ["10.77.0.2"]
    # the bridge lives in the plugins' (host) namespace, with the gateway address
    br = json.loads(lab.host.run("ip", "-j", "-4", "addr", "show", "dev", lab.bridge).stdout)
    assert br[0]["addr_info"][0]["local"] == "10.77.0.1"

    lab.runner.run_network("CHECK", net, lab.env())
    assert [p for p, _ in lab.exec.sent("CHECK")] == ["bridge"]
    assert lab.exec.sent("CHECK")[0][1]["prevResult"]["ips"][0]["address"] == "10.77.0.2/24"

    lab.runner.run_network("DEL", net, lab.env())
    assert "net1" not in {link["ifname"] for link in lab.ipj("link", "show")}
    assert leases(lab, "blue") == []
    # DEL twice is fine
    lab.runner.run_network("DEL", net, lab.env())


def test_check_fails_when_the_link_is_gone(lab: Lab) -> None:
    net = {"cniVersion": "1.0.0", "name": "blue", **bridge_conf(lab)}
    lab.runner.run_network("ADD", net, lab.env())
    lab.pod.run("ip", "link", "del", "net1")
    with pytest.raises(DelegateFailed) as info:
        lab.runner.run_network("CHECK", net, lab.env())
    assert info.value.msg.startswith('plugin type="bridge" failed (check): ')
    lab.runner.run_network("DEL", net, lab.env())
    assert leases(lab, "blue") == []


def test_11_conf_reaches_the_bridge_in_the_version_it_speaks(lab: Lab, cni_bin_dir: str) -> None:
    """A 1.1.0 conflist: Debian's bridge (1.0.0 at most) refuses it raw, so through the runner
    it gets 1.0.0 and the result comes back as 1.1.0; the v1.10.0 bridge speaks 1.1.0 and
    gets it unchanged."""
    speaks_11 = "1.1.0" in supported_versions(cni_bin_dir, "bridge")
    sent_version = "1.1.0" if speaks_11 else "1.0.0"

    net = {"cniVersion": "1.1.0", "name": "green", "plugins": [bridge_conf(lab, "10.78.0.0/24")]}
    result = lab.runner.run_network("ADD", net, lab.env())
    assert [conf["cniVersion"] for _, conf in lab.exec.sent("ADD")] == [sent_version]
    assert result is not None and result["cniVersion"] == "1.1.0"
    assert result["ips"][0]["address"] == "10.78.0.2/24"
    assert [a["local"] for a in lab.ipj("-4", "addr", "show", "dev", "net1")[0]["addr_info"]] == ["10.78.0.2"]

    lab.runner.run_network("CHECK", net, lab.env())
    check = lab.exec.sent("CHECK")[0][1]
    assert check["cniVersion"] == sent_version and check["prevResult"]["cniVersion"] == sent_version

    lab.runner.run_network("DEL", net, lab.env())
    assert "net1" not in {link["ifname"] for link in lab.ipj("link", "show")}
    assert leases(lab, "green") == []


def test_conflist_bridge_tuning_portmap_with_runtime_config(lab: Lab) -> None:
    if not shutil.which("iptables"):
        pytest.skip("portmap needs iptables (apt-get install iptables)")
    net = {
        "cniVersion": "1.0.0",
        "name": "mesh",
        "plugins": [
            bridge_conf(lab, "10.79.0.0/24"),
            {"type": "tuning", "sysctl": {"net.ipv4.conf.net1.arp_notify": "1"}},
            {"type": "portmap", "capabilities": {"portMappings": True}, "snat": True},
        ],
    }
    rc = {
        "portMappings": [{"hostPort": 18080, "containerPort": 80, "protocol": "tcp"}],
        "bandwidth": {"ingressRate": 1000, "ingressBurst": 1000},
    }
    env = lab.env()
    result = lab.runner.run_network("ADD", net, env, runtime_config=rc)
    adds = lab.exec.sent("ADD")
    assert [p for p, _ in adds] == ["bridge", "tuning", "portmap"]
    assert "runtimeConfig" not in adds[0][1] and "runtimeConfig" not in adds[1][1]
    assert adds[2][1]["runtimeConfig"] == {"portMappings": rc["portMappings"]}
    assert adds[1][1]["prevResult"]["ips"][0]["address"] == "10.79.0.2/24"
    assert result is not None and result["ips"][0]["address"] == "10.79.0.2/24"
    # tuning's sysctl and portmap's DNAT rule are real
    assert lab.pod.run("sysctl", "-n", "net.ipv4.conf.net1.arp_notify").stdout.strip() == "1"
    nat = lab.host.run("iptables-save", "-t", "nat").stdout
    assert "--dport 18080" in nat and "10.79.0.2:80" in nat

    cache_file = lab.cache_dir / "results" / "mesh-ctr-1-net1"
    doc = json.loads(cache_file.read_text())
    assert doc["kind"] == "cniCacheV1" and doc["networkName"] == "mesh" and doc["containerId"] == "ctr-1"
    assert doc["ifName"] == "net1" and doc["netns"] == lab.pod.path
    assert doc["cniArgs"] == [["IgnoreUnknown", "true"], ["K8S_POD_NAME", "p"], ["K8S_POD_NAMESPACE", "d"]]
    assert doc["capabilityArgs"] == rc and doc["result"] == result

    lab.runner.run_network("DEL", net, env)
    dels = lab.exec.sent("DEL")
    assert [p for p, _ in dels] == ["portmap", "tuning", "bridge"]
    assert all(conf["prevResult"] == result for _, conf in dels)
    assert dels[0][1]["runtimeConfig"] == {"portMappings": rc["portMappings"]}
    assert "--dport 18080" not in lab.host.run("iptables-save", "-t", "nat").stdout
    assert "net1" not in {link["ifname"] for link in lab.ipj("link", "show")}
    assert leases(lab, "mesh") == []
    assert not cache_file.exists()


def test_del_without_cache_and_with_netns_gone(lab: Lab) -> None:
    """DEL from another runner (no cache) and after the pod netns is gone still succeeds
    and frees the lease."""
    net = {"cniVersion": "1.0.0", "name": "blue", **bridge_conf(lab)}
    lab.runner.run_network("ADD", net, lab.env())
    assert leases(lab, "blue") == ["10.77.0.2"]
    subprocess.run([IP, "netns", "delete", lab.pod.name], check=True)
    fresh = DelegateRunner(lab.runner.bin_dirs, timeout=30, exec=lab.exec)
    fresh.run_network("DEL", net, DelegateEnv("ctr-1", "", "net1", ""))
    assert leases(lab, "blue") == []


def test_two_attachments_in_one_pod(lab: Lab) -> None:
    blue = {"cniVersion": "1.0.0", "name": "blue", **bridge_conf(lab)}
    red = {
        "cniVersion": "1.0.0",
        "name": "red",
        "type": "bridge",
        "bridge": "kvbr1",
        "ipam": {"type": "host-local", "dataDir": str(lab.data_dir), "ranges": [[{"subnet": "10.80.0.0/24"}]]},
    }
    lab.runner.run_network("ADD", blue, lab.env("net1"))
    lab.runner.run_network("ADD", red, lab.env("net2"))
    names = {link["ifname"] for link in lab.ipj("link", "show")}
    assert {"net1", "net2"} <= names
    assert sorted(p.name for p in (lab.cache_dir / "results").iterdir()) == ["blue-ctr-1-net1", "red-ctr-1-net2"]
    lab.runner.run_network("DEL", red, lab.env("net2"))
    lab.runner.run_network("DEL", blue, lab.env("net1"))
    assert not ({"net1", "net2"} & {link["ifname"] for link in lab.ipj("link", "show")})
    assert list((lab.cache_dir / "results").iterdir()) == []
    assert leases(lab, "blue") == [] and leases(lab, "red") == []


@pytest.mark.parametrize("version", ["0.2.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"])
def test_every_config_version_through_the_real_bridge(lab: Lab, version: str, cni_bin_dir: str) -> None:
    """The real bridge's output comes back in each config version's own result shape (a
    version the bridge does not speak is sent as the newest one it does)."""
    net = {"cniVersion": version, "name": "blue", **bridge_conf(lab)}
    result = lab.runner.run_network("ADD", net, lab.env())
    assert result is not None and result["cniVersion"] == version
    sent = lab.exec.sent("ADD")[0][1]["cniVersion"]
    assert sent == (version if version in supported_versions(cni_bin_dir, "bridge") else "1.0.0")
    if version == "0.2.0":
        assert result["ip4"]["ip"] == "10.77.0.2/24" and result["ip4"]["gateway"] == "10.77.0.1"
        assert "interfaces" not in result
    else:
        ip = result["ips"][0]
        assert ip["address"] == "10.77.0.2/24"
        assert ("version" in ip) == version.startswith("0.")
        assert result["interfaces"][ip["interface"]]["name"] == "net1"
    if version_key(version) >= (0, 4, 0):
        lab.runner.run_network("CHECK", net, lab.env())
    lab.runner.run_network("DEL", net, lab.env())
    assert "net1" not in {link["ifname"] for link in lab.ipj("link", "show")}
    assert leases(lab, "blue") == []
