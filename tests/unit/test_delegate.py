"""Delegate execution without root: a fake Exec for the logic, small fake plugin scripts
for the real process handling (errors on stdout/stderr, garbage, hangs past the timeout)."""

from __future__ import annotations

import base64
import json
import os
import re
import stat
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
from fixtures_cni import make_fake_plugin, read_calls

from kvnet.cni import libcni_cache
from kvnet.cni.delegate import DelegateEnv, DelegateRunner, ExecTimeout, delegate_error
from kvnet.core.errors import (
    DecodeFailure,
    DelegateFailed,
    IncompatibleVersion,
    InvalidConfig,
    InvalidEnvironment,
    KvnetError,
)
from kvnet.lab.fakes import FakeExec, FakePlugin

ENV = DelegateEnv("ctr1", "/var/run/netns/p1", "net1", "IgnoreUnknown=true;K8S_POD_NAME=p", ("/extra",))


@pytest.fixture
def bin_dir(tmp_path: Path) -> Path:
    d = tmp_path / "bin"
    d.mkdir()
    return d


def exe(d: Path, name: str) -> Path:
    d.mkdir(parents=True, exist_ok=True)
    p = d / name
    p.write_text("#!/bin/sh\nexit 0\n")
    p.chmod(0o755)
    return p


def runner_with(bin_dir: Path, plugins: Mapping[str, FakePlugin], **kw: Any) -> tuple[DelegateRunner, FakeExec]:
    for name in plugins:
        exe(bin_dir, name)
    fake = FakeExec(plugins)
    return DelegateRunner([str(bin_dir)], exec=fake, **kw), fake


# --- find ------------------------------------------------------------------------


def test_find_search_order(tmp_path: Path) -> None:
    a, b, c = tmp_path / "a", tmp_path / "b", tmp_path / "c"
    exe(b, "p")
    exe(c, "p")
    runner = DelegateRunner([str(a), str(b)])
    assert runner.find("p", [str(c)]) == str(b / "p")
    exe(a, "p")
    assert runner.find("p", [str(c)]) == str(a / "p")
    assert DelegateRunner([str(tmp_path / "none")]).find("p", [str(c)]) == str(c / "p")


def test_find_falls_back_to_usr_lib_cni(tmp_path: Path) -> None:
    if not Path("/usr/lib/cni/bridge").exists():
        pytest.skip("containernetworking-plugins not installed in /usr/lib/cni")
    assert DelegateRunner([str(tmp_path)]).find("bridge") == "/usr/lib/cni/bridge"


def test_find_skips_non_executable(tmp_path: Path) -> None:
    p = tmp_path / "a" / "p"
    p.parent.mkdir()
    p.write_text("x")
    p.chmod(0o644)
    q = exe(tmp_path / "b", "p")
    assert DelegateRunner([str(p.parent), str(q.parent)]).find("p") == str(q)


@pytest.mark.parametrize("bad", ["../bin/sh", "/bin/sh", "a/b", "..", ".hidden", ""])
def test_find_refuses_paths(tmp_path: Path, bad: str) -> None:
    with pytest.raises(InvalidConfig) as info:
        DelegateRunner([str(tmp_path)]).find(bad)
    assert info.value.cni_code == 7


def test_find_missing_names_the_path(tmp_path: Path) -> None:
    with pytest.raises(InvalidConfig) as info:
        DelegateRunner([str(tmp_path)]).find("nosuchplugin", ["/x"])
    assert info.value.msg == f"failed to find plugin 'nosuchplugin' in path [{tmp_path} /x /usr/lib/cni]"


# --- run: env, negotiation, conversion ---------------------------------------------


def test_env_is_exactly_cni_vars_and_path(bin_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CNI_COMMAND", "LEAK")
    monkeypatch.setenv("CNI_NETNS", "/leak")
    monkeypatch.setenv("SECRET", "x")
    runner, fake = runner_with(bin_dir, {"p": FakePlugin()})
    runner.run("ADD", {"cniVersion": "1.0.0", "name": "n", "type": "p"}, ENV)
    add = next(c for c in fake.calls if c.command == "ADD")
    assert add.env == {
        "CNI_COMMAND": "ADD",
        "CNI_CONTAINERID": "ctr1",
        "CNI_NETNS": "/var/run/netns/p1",
        "CNI_IFNAME": "net1",
        "CNI_ARGS": "IgnoreUnknown=true;K8S_POD_NAME=p",
        "CNI_PATH": f"{bin_dir}:/extra:/usr/lib/cni",
        "PATH": os.environ["PATH"],
    }


def test_version_asked_once_per_binary(bin_dir: Path) -> None:
    runner, fake = runner_with(bin_dir, {"p": FakePlugin(), "q": FakePlugin()})
    conf = {"cniVersion": "1.0.0", "name": "n", "type": "p"}
    runner.run("ADD", conf, ENV)
    runner.run("DEL", conf, ENV)
    runner.run("ADD", {**conf, "type": "q"}, ENV)
    assert fake.commands(skip_version=False) == [
        ("p", "VERSION"),
        ("p", "ADD"),
        ("p", "DEL"),
        ("q", "VERSION"),
        ("q", "ADD"),
    ]
    assert fake.calls[0].env["CNI_COMMAND"] == "VERSION"


@pytest.mark.parametrize("conf_version", ["1.0.0", "1.1.0"])
def test_plugin_that_only_knows_031(bin_dir: Path, conf_version: str) -> None:
    """A 0.3.1-only plugin gets a 0.3.1 conf (prevResult down-converted); its result is
    up-converted to the conf's version."""
    runner, fake = runner_with(bin_dir, {"old": FakePlugin(versions=("0.3.1",))})
    prev = {
        "cniVersion": conf_version,
        "interfaces": [{"name": "eth0", "mtu": 9000}],
        "ips": [{"interface": 0, "address": "10.5.0.2/16"}],
        "dns": {},
    }
    out = runner.run("ADD", {"cniVersion": conf_version, "name": "n", "type": "old", "prevResult": prev}, ENV)
    sent = next(c for c in fake.calls if c.command == "ADD").conf
    assert sent["cniVersion"] == "0.3.1"
    assert sent["prevResult"] == {
        "cniVersion": "0.3.1",
        "interfaces": [{"name": "eth0"}],
        "ips": [{"version": "4", "interface": 0, "address": "10.5.0.2/16"}],
        "dns": {},
    }
    assert out == {  # types100 leaves the empty dns out
        "cniVersion": conf_version,
        "interfaces": [{"name": "eth0"}],
        "ips": [{"interface": 0, "address": "10.5.0.2/16"}],
    }


def test_result_in_conf_version_when_plugin_speaks_it(bin_dir: Path) -> None:
    runner, fake = runner_with(bin_dir, {"p": FakePlugin(versions=("1.0.0", "1.1.0"))})
    out = runner.run("ADD", {"cniVersion": "1.1.0", "name": "n", "type": "p"}, ENV)
    assert [c.conf["cniVersion"] for c in fake.calls if c.command == "ADD"] == ["1.1.0"]
    assert out is not None and out["interfaces"][0]["mtu"] == 1500 and out["routes"][0]["table"] == 5


def test_negotiation_picks_lowest_above_when_nothing_below(bin_dir: Path) -> None:
    runner, fake = runner_with(bin_dir, {"p": FakePlugin(versions=("0.4.0", "1.0.0"))})
    out = runner.run("ADD", {"cniVersion": "0.2.0", "name": "n", "type": "p"}, ENV)
    assert [c.conf["cniVersion"] for c in fake.calls if c.command == "ADD"] == ["0.4.0"]
    assert out == {
        "cniVersion": "0.2.0",
        "ip4": {"ip": "10.0.0.2/24", "gateway": "10.0.0.1", "routes": [{"dst": "0.0.0.0/0", "gw": "10.0.0.1"}]},
        "dns": {},
    }


def test_no_common_version(bin_dir: Path) -> None:
    runner, _ = runner_with(bin_dir, {"p": FakePlugin(versions=("9.9.9",))})
    with pytest.raises(IncompatibleVersion, match=re.escape("delegate p does not support config version '1.0.0'")):
        runner.run("ADD", {"cniVersion": "1.0.0", "name": "n", "type": "p"}, ENV)


def test_conf_version_unknown(bin_dir: Path) -> None:
    runner, _ = runner_with(bin_dir, {"p": FakePlugin()})
    with pytest.raises(IncompatibleVersion, match=re.escape("unsupported cniVersion '0.9.0'")):
        runner.run("ADD", {"cniVersion": "0.9.0", "name": "n", "type": "p"}, ENV)


def test_prev_result_dropped_for_pre_030_plugins(bin_dir: Path) -> None:
    runner, fake = runner_with(bin_dir, {"p": FakePlugin(versions=("0.2.0",))})
    runner.run("DEL", {"cniVersion": "1.0.0", "name": "n", "type": "p", "prevResult": {"cniVersion": "1.0.0"}}, ENV)
    sent = next(c for c in fake.calls if c.command == "DEL").conf
    assert sent["cniVersion"] == "0.2.0" and "prevResult" not in sent


def test_missing_type(bin_dir: Path) -> None:
    runner, _ = runner_with(bin_dir, {})
    with pytest.raises(InvalidConfig, match="delegate config for network 'n' has no \"type\""):
        runner.run("ADD", {"cniVersion": "1.0.0", "name": "n"}, ENV)


@pytest.mark.parametrize(
    "failure,code,msg,details",
    [
        (
            (1, b'{"cniVersion":"1.0.0","code":7,"msg":"bad bridge","details":"vlan"}', b""),
            7,
            'plugin type="p" failed (add): bad bridge',
            "vlan",
        ),
        ((1, b"", b'{"code":11,"msg":"busy"}'), 11, 'plugin type="p" failed (add): busy', ""),
        ((1, b"not json", b'{"code":11,"msg":"busy"}'), 11, 'plugin type="p" failed (add): busy', ""),
        ((2, b"panic: oops", b""), 102, 'plugin type="p" failed (add): panic: oops', ""),
        ((2, b"", b"some words\n"), 102, 'plugin type="p" failed (add): some words', ""),
        ((3, b"", b""), 102, 'plugin type="p" failed (add): exited with status 3 and no message', ""),
        ((-9, b"", b""), 102, 'plugin type="p" failed (add): killed by signal 9', ""),
        ((1, b'{"code":"x","msg":"weird code"}', b""), 102, 'plugin type="p" failed (add): weird code', ""),
        ((1, b'{"code":0,"msg":"zero"}', b""), 102, 'plugin type="p" failed (add): zero', ""),
    ],
)
def test_delegate_errors_fake_exec(
    bin_dir: Path, failure: tuple[int, bytes, bytes], code: int, msg: str, details: str
) -> None:
    runner, _ = runner_with(bin_dir, {"p": FakePlugin(fail={"ADD": failure})})
    with pytest.raises(DelegateFailed) as info:
        runner.run("ADD", {"cniVersion": "1.0.0", "name": "n", "type": "p"}, ENV)
    assert (info.value.cni_code, info.value.msg, info.value.details) == (code, msg, details)
    assert info.value.to_cni("1.0.0")["code"] == code


def test_delegate_error_text_is_bounded() -> None:
    err = delegate_error("p", "ADD", 1, b"x" * 100000, b"")
    assert len(err.msg) < 5000


def test_timeout_from_exec_becomes_delegate_failed(bin_dir: Path) -> None:
    exe(bin_dir, "p")

    def hanging(plugin: str, stdin: bytes, env: Mapping[str, str], timeout: float) -> tuple[int, bytes, bytes]:
        if env["CNI_COMMAND"] == "VERSION":
            return 0, b'{"cniVersion":"1.0.0","supportedVersions":["1.0.0"]}', b""
        raise ExecTimeout(plugin, timeout)

    runner = DelegateRunner([str(bin_dir)], exec=hanging, timeout=2.5)
    with pytest.raises(DelegateFailed) as info:
        runner.run("ADD", {"cniVersion": "1.0.0", "name": "n", "type": "p"}, ENV)
    assert info.value.msg == 'plugin type="p" failed (add): timed out after 2.5s and was killed'


def test_exec_oserror_becomes_delegate_failed(bin_dir: Path) -> None:
    exe(bin_dir, "p")

    def broken(plugin: str, stdin: bytes, env: Mapping[str, str], timeout: float) -> tuple[int, bytes, bytes]:
        raise PermissionError(13, "Permission denied")

    with pytest.raises(DelegateFailed, match=r'plugin type="p" could not be run \(version, .*Permission denied'):
        DelegateRunner([str(bin_dir)], exec=broken).run("ADD", {"cniVersion": "1.0.0", "name": "n", "type": "p"}, ENV)


@pytest.mark.parametrize(
    "out,msg",
    [
        (b"", "delegate p ADD returned no result"),
        (b"{oops", "delegate p ADD returned an unparseable result"),
        (b"[1]", "delegate p ADD returned a result that is not a JSON object"),
    ],
)
def test_bad_add_result(bin_dir: Path, out: bytes, msg: str) -> None:
    runner, _ = runner_with(bin_dir, {"p": FakePlugin(fail={"ADD": (0, out, b"")})})
    with pytest.raises(DecodeFailure) as info:
        runner.run("ADD", {"cniVersion": "1.0.0", "name": "n", "type": "p"}, ENV)
    assert info.value.msg.startswith(msg) and info.value.cni_code == 6


# --- run_network: conflist semantics, runtimeConfig, cache ---------------------------

CONFLIST = {
    "cniVersion": "1.0.0",
    "name": "mynet",
    "plugins": [
        {"type": "bridge", "bridge": "br0"},
        {"type": "tuning", "capabilities": {"mac": True}},
        {"type": "portmap", "capabilities": {"portMappings": True, "bandwidth": False}},
    ],
}
PLUGINS3 = {"bridge": FakePlugin(), "tuning": FakePlugin(), "portmap": FakePlugin()}
RC = {
    "portMappings": [{"hostPort": 8080, "containerPort": 80, "protocol": "tcp"}],
    "bandwidth": {"ingressRate": 1},
    "mac": "02:00:00:00:00:01",
    "ips": ["10.0.0.9/24"],
}


def test_conflist_add_order_prev_result_and_capabilities(bin_dir: Path, tmp_path: Path) -> None:
    runner, fake = runner_with(bin_dir, PLUGINS3)
    result = runner.run_network("ADD", CONFLIST, ENV, runtime_config=RC)
    adds = [c for c in fake.calls if c.command == "ADD"]
    assert [c.plugin for c in adds] == ["bridge", "tuning", "portmap"]
    assert all(c.conf["name"] == "mynet" and c.conf["cniVersion"] == "1.0.0" for c in adds)
    assert "prevResult" not in adds[0].conf
    assert adds[1].conf["prevResult"] == result and adds[2].conf["prevResult"] == result
    assert "runtimeConfig" not in adds[0].conf
    assert adds[1].conf["runtimeConfig"] == {"mac": "02:00:00:00:00:01"}
    assert adds[2].conf["runtimeConfig"] == {"portMappings": RC["portMappings"]}
    assert result is not None and result["ips"][0]["address"] == "10.0.0.2/24"


def test_single_conf_is_a_list_of_one(bin_dir: Path) -> None:
    runner, fake = runner_with(bin_dir, {"macvlan": FakePlugin()})
    out = runner.run_network("ADD", {"cniVersion": "0.4.0", "name": "m", "type": "macvlan", "master": "eth0"}, ENV)
    assert fake.commands() == [("macvlan", "ADD")]
    assert out is not None and out["cniVersion"] == "0.4.0" and out["ips"][0]["version"] == "4"


def test_add_writes_libcni_cache_and_del_reads_and_removes_it(bin_dir: Path, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    runner, fake = runner_with(bin_dir, PLUGINS3, cache_dir=str(cache))
    result = runner.run_network("ADD", CONFLIST, ENV, runtime_config=RC)
    path = cache / "results" / "mynet-ctr1-net1"
    doc = json.loads(path.read_text())
    assert doc == {
        "kind": "cniCacheV1",
        "containerId": "ctr1",
        "config": base64.b64encode(json.dumps(CONFLIST).encode()).decode(),
        "ifName": "net1",
        "networkName": "mynet",
        "netns": "/var/run/netns/p1",
        "cniArgs": [["IgnoreUnknown", "true"], ["K8S_POD_NAME", "p"]],
        "capabilityArgs": RC,
        "result": result,
    }
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700

    fake.calls.clear()
    runner.run_network("DEL", CONFLIST, ENV)
    dels = [c for c in fake.calls if c.command == "DEL"]
    assert [c.plugin for c in dels] == ["portmap", "tuning", "bridge"]
    assert all(c.conf["prevResult"] == result for c in dels)
    # the cached capability args are used when the caller has none
    assert dels[0].conf["runtimeConfig"] == {"portMappings": RC["portMappings"]}
    assert not path.exists()


def test_del_without_cache_still_calls_plugins(bin_dir: Path, tmp_path: Path) -> None:
    runner, fake = runner_with(bin_dir, PLUGINS3, cache_dir=str(tmp_path / "empty"))
    runner.run_network("DEL", CONFLIST, ENV)
    assert fake.commands() == [("portmap", "DEL"), ("tuning", "DEL"), ("bridge", "DEL")]
    assert all("prevResult" not in c.conf for c in fake.calls if c.command == "DEL")


def test_del_uses_given_prev_result_when_no_cache(bin_dir: Path) -> None:
    runner, fake = runner_with(bin_dir, PLUGINS3)
    prev = {"cniVersion": "1.1.0", "ips": [{"address": "10.0.0.7/24"}]}
    runner.run_network("DEL", CONFLIST, ENV, prev_result=prev)
    assert all(
        c.conf["prevResult"] == {"cniVersion": "1.0.0", "ips": [{"address": "10.0.0.7/24"}]}
        for c in fake.calls
        if c.command == "DEL"
    )


def test_del_stops_at_first_failure_and_keeps_cache(bin_dir: Path, tmp_path: Path) -> None:
    plugins = {**PLUGINS3, "tuning": FakePlugin(fail={"DEL": (1, b'{"code":5,"msg":"io"}', b"")})}
    runner, _fake = runner_with(bin_dir, plugins, cache_dir=str(tmp_path / "c"))
    runner.run_network("ADD", CONFLIST, ENV)
    with pytest.raises(DelegateFailed, match=r'plugin type="tuning" failed \(del\): io'):
        runner.run_network("DEL", CONFLIST, ENV)
    assert (tmp_path / "c" / "results" / "mynet-ctr1-net1").exists()


def test_check_in_order_with_cached_result(bin_dir: Path, tmp_path: Path) -> None:
    runner, fake = runner_with(bin_dir, PLUGINS3, cache_dir=str(tmp_path / "c"))
    result = runner.run_network("ADD", CONFLIST, ENV)
    fake.calls.clear()
    runner.run_network("CHECK", CONFLIST, ENV)
    checks = [c for c in fake.calls if c.command == "CHECK"]
    assert [c.plugin for c in checks] == ["bridge", "tuning", "portmap"]
    assert all(c.conf["prevResult"] == result for c in checks)


def test_check_needs_040(bin_dir: Path) -> None:
    runner, _ = runner_with(bin_dir, PLUGINS3)
    with pytest.raises(
        IncompatibleVersion, match=re.escape('configuration version "0.3.1" does not support the CHECK command')
    ):
        runner.run_network("CHECK", {**CONFLIST, "cniVersion": "0.3.1"}, ENV)


def test_check_skipped_for_plugin_below_040(bin_dir: Path) -> None:
    runner, fake = runner_with(bin_dir, {"old": FakePlugin(versions=("0.3.1",)), "new": FakePlugin()})
    net = {"cniVersion": "1.0.0", "name": "n", "plugins": [{"type": "old"}, {"type": "new"}]}
    runner.run_network("CHECK", net, ENV, prev_result={"cniVersion": "1.0.0"})
    assert fake.commands() == [("new", "CHECK")]


def test_status_only_for_11_plugins(bin_dir: Path) -> None:
    runner, fake = runner_with(bin_dir, {"old": FakePlugin(), "new": FakePlugin(versions=("1.0.0", "1.1.0"))})
    net = {"cniVersion": "1.1.0", "name": "n", "plugins": [{"type": "old"}, {"type": "new"}]}
    runner.run_network("STATUS", net, DelegateEnv("", "", "", ""))
    assert fake.commands() == [("new", "STATUS")]
    fake.calls.clear()
    runner.run_network("STATUS", {**net, "cniVersion": "1.0.0"}, DelegateEnv("", "", "", ""))
    assert fake.calls == []


def test_status_failure_reported(bin_dir: Path) -> None:
    plugins = {"new": FakePlugin(versions=("1.1.0",), fail={"STATUS": (1, b'{"code":50,"msg":"not ready"}', b"")})}
    runner, _ = runner_with(bin_dir, plugins)
    with pytest.raises(DelegateFailed) as info:
        runner.run_network("STATUS", {"cniVersion": "1.1.0", "name": "n", "type": "new"}, DelegateEnv("", "", "", ""))
    assert info.value.cni_code == 50 and info.value.msg == 'plugin type="new" failed (status): not ready'


def test_gc_deletes_stale_cached_attachments_and_sends_gc(bin_dir: Path, tmp_path: Path) -> None:
    plugins = {"old": FakePlugin(), "new": FakePlugin(versions=("1.0.0", "1.1.0"))}
    runner, fake = runner_with(bin_dir, plugins, cache_dir=str(tmp_path / "c"))
    net = {"cniVersion": "1.1.0", "name": "n", "plugins": [{"type": "old"}, {"type": "new"}]}
    other = {"cniVersion": "1.1.0", "name": "other", "type": "new"}
    for cid in ("keep", "stale"):
        runner.run_network("ADD", net, DelegateEnv(cid, f"/ns/{cid}", "eth0", f"K8S_POD_NAME={cid}"))
    runner.run_network("ADD", other, DelegateEnv("stale", "/ns/stale", "eth1", ""))
    fake.calls.clear()
    runner.run_network(
        "GC", net, DelegateEnv("", "", "", ""), valid_attachments=[{"containerID": "keep", "ifname": "eth0"}]
    )
    dels = [c for c in fake.calls if c.command == "DEL"]
    assert [(c.plugin, c.env["CNI_CONTAINERID"], c.env["CNI_ARGS"]) for c in dels] == [
        ("new", "stale", "K8S_POD_NAME=stale"),
        ("old", "stale", "K8S_POD_NAME=stale"),
    ]
    gcs = [c for c in fake.calls if c.command == "GC"]
    assert [c.plugin for c in gcs] == ["new"]
    assert gcs[0].conf["cni.dev/valid-attachments"] == [{"containerID": "keep", "ifname": "eth0"}]
    left = sorted(p.name for p in (tmp_path / "c" / "results").iterdir())
    assert left == ["n-keep-eth0", "other-stale-eth1"]


@pytest.mark.parametrize(
    "network,exc,msg",
    [
        ({"cniVersion": "1.0.0", "type": "x"}, InvalidConfig, "missing network name"),
        (
            {"cniVersion": "1.0.0", "name": "../up", "type": "x"},
            InvalidConfig,
            "invalid characters found in network name",
        ),
        ({"cniVersion": "7.0.0", "name": "n", "type": "x"}, IncompatibleVersion, "network 'n': unsupported cniVersion"),
        ({"cniVersion": "1.0.0", "name": "n", "plugins": []}, InvalidConfig, '"plugins" must be a non-empty list'),
        ({"cniVersion": "1.0.0", "name": "n", "plugins": ["bridge"]}, InvalidConfig, '"plugins" must be'),
    ],
)
def test_bad_networks(bin_dir: Path, network: dict[str, Any], exc: type[Exception], msg: str) -> None:
    runner, _ = runner_with(bin_dir, {})
    with pytest.raises(exc, match=msg):
        runner.run_network("ADD", network, ENV)


def test_cache_path_cannot_escape(tmp_path: Path) -> None:
    with pytest.raises(InvalidEnvironment):
        libcni_cache.cache_path(tmp_path, "n", "../../etc", "eth0")
    with pytest.raises(InvalidConfig):
        libcni_cache.cache_path(tmp_path, "../n", "c", "eth0")
    with pytest.raises(InvalidEnvironment):
        libcni_cache.cache_path(tmp_path, "n", "c", "a/b")


def test_cache_reads_files_written_by_libcni(tmp_path: Path) -> None:
    """A file as libcni writes it (Go's []byte as base64, compact JSON) reads back."""
    conf = b'{"cniVersion":"1.0.0","name":"n","type":"bridge"}'
    doc = {
        "kind": "cniCacheV1",
        "containerId": "c1",
        "config": base64.b64encode(conf).decode(),
        "ifName": "eth0",
        "networkName": "n",
        "netns": "/ns",
        "cniArgs": [["K8S_POD_NAME", "p"]],
        "result": {"cniVersion": "1.0.0", "ips": [{"address": "10.0.0.2/24"}], "dns": {}},
    }
    (tmp_path / "results").mkdir()
    (tmp_path / "results" / "n-c1-eth0").write_text(json.dumps(doc, separators=(",", ":")))
    att = libcni_cache.read_result(tmp_path, "n", "c1", "eth0")
    assert att == libcni_cache.CachedAttachment(
        "n", "c1", "eth0", conf, "/ns", (("K8S_POD_NAME", "p"),), {}, doc["result"]
    )
    assert libcni_cache.list_attachments(tmp_path, "c1") == [att]
    assert libcni_cache.list_attachments(tmp_path, "c2") == []


def test_cache_reads_legacy_bare_result(tmp_path: Path) -> None:
    (tmp_path / "results").mkdir()
    (tmp_path / "results" / "n-c1-eth0").write_text('{"cniVersion":"0.4.0","ips":[]}')
    att = libcni_cache.read_result(tmp_path, "n", "c1", "eth0")
    assert att is not None and att.result == {"cniVersion": "0.4.0", "ips": []}


def test_cache_unreadable_is_none(tmp_path: Path) -> None:
    (tmp_path / "results").mkdir()
    (tmp_path / "results" / "n-c1-eth0").write_text("{broken")
    assert libcni_cache.read_result(tmp_path, "n", "c1", "eth0") is None
    assert libcni_cache.delete_result(tmp_path, "n", "c1", "eth0") is True
    assert libcni_cache.delete_result(tmp_path, "n", "c1", "eth0") is False


# --- real processes: small fake plugin scripts --------------------------------------

CONF = {"cniVersion": "1.0.0", "name": "n", "type": "fake"}


def test_script_success_and_env(tmp_path: Path) -> None:
    record = tmp_path / "calls.jsonl"
    make_fake_plugin(tmp_path / "bin", "fake", record=str(record))
    out = DelegateRunner([str(tmp_path / "bin")], timeout=20).run("ADD", CONF, ENV)
    assert out is not None and out["cniVersion"] == "1.0.0" and out["interfaces"][0]["name"] == "net1"
    calls = read_calls(record)
    assert [c["command"] for c in calls] == ["VERSION", "ADD"]
    # nothing but CNI_* and PATH reaches the plugin (the shell wrapper adds PWD and SHLVL,
    # Python's C-locale coercion adds LC_CTYPE)
    assert set(calls[1]["env_keys"]) - {"PWD", "SHLVL", "_", "LC_CTYPE"} == {
        "CNI_COMMAND",
        "CNI_CONTAINERID",
        "CNI_NETNS",
        "CNI_IFNAME",
        "CNI_ARGS",
        "CNI_PATH",
        "PATH",
    }
    assert json.loads(calls[1]["stdin"]) == CONF


@pytest.mark.parametrize(
    "mode,code,msg,details",
    [
        ("error-stdout", 117, 'plugin type="fake" failed (add): fake failure', "on stdout"),
        ("error-stderr", 118, 'plugin type="fake" failed (add): fake failure on stderr', ""),
        ("garbage-stdout", 102, 'plugin type="fake" failed (add): panic: something broke\ngoroutine 1 [running]', ""),
        ("garbage-stderr", 102, 'plugin type="fake" failed (add): plain words on stderr', ""),
        ("silent-fail", 102, 'plugin type="fake" failed (add): exited with status 4 and no message', ""),
    ],
)
def test_script_errors(tmp_path: Path, mode: str, code: int, msg: str, details: str) -> None:
    make_fake_plugin(tmp_path / "bin", "fake", modes={"ADD": mode})
    with pytest.raises(DelegateFailed) as info:
        DelegateRunner([str(tmp_path / "bin")], timeout=20).run("ADD", CONF, ENV)
    assert (info.value.cni_code, info.value.msg, info.value.details) == (code, msg, details)


def test_script_non_json_result(tmp_path: Path) -> None:
    make_fake_plugin(tmp_path / "bin", "fake", modes={"ADD": "bad-json-result"})
    with pytest.raises(DecodeFailure, match=re.escape("delegate fake ADD returned an unparseable result: '{not json'")):
        DelegateRunner([str(tmp_path / "bin")], timeout=20).run("ADD", CONF, ENV)


def test_script_result_without_version_is_the_sent_version(tmp_path: Path) -> None:
    make_fake_plugin(tmp_path / "bin", "fake", versions=["0.3.1"], modes={"ADD": "no-version-result"})
    out = DelegateRunner([str(tmp_path / "bin")], timeout=20).run("ADD", {**CONF, "cniVersion": "1.1.0"}, ENV)
    assert out is not None and out["cniVersion"] == "1.1.0"
    assert out["ips"] == [{"interface": 0, "address": "10.1.2.3/24", "gateway": "10.1.2.1"}]


def test_script_pre_020_version_answer(tmp_path: Path) -> None:
    record = tmp_path / "calls.jsonl"
    make_fake_plugin(tmp_path / "bin", "fake", no_version=True, versions=["0.1.0"], record=str(record))
    out = DelegateRunner([str(tmp_path / "bin")], timeout=20).run("ADD", {**CONF, "cniVersion": "0.4.0"}, ENV)
    assert json.loads(read_calls(record)[1]["stdin"])["cniVersion"] == "0.1.0"
    assert out is not None and out["ips"] == [{"version": "4", "address": "10.1.2.3/24", "gateway": "10.1.2.1"}]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie still answers kill(0); it is dead for our purpose
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ")[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def test_script_hang_is_killed_with_its_children(tmp_path: Path) -> None:
    record = tmp_path / "calls.jsonl"
    make_fake_plugin(tmp_path / "bin", "fake", modes={"ADD": "hang"}, record=str(record))
    runner = DelegateRunner([str(tmp_path / "bin")], timeout=1.5)
    runner.plugin_versions(runner.find("fake"), "fake")  # warm: time only the ADD
    start = time.monotonic()
    with pytest.raises(DelegateFailed) as info:
        runner.run("ADD", CONF, ENV)
    elapsed = time.monotonic() - start
    assert info.value.msg == 'plugin type="fake" failed (add): timed out after 1.5s and was killed'
    assert 1.4 < elapsed < 6
    add = next(c for c in read_calls(record) if c["command"] == "ADD")
    deadline = time.monotonic() + 3
    while time.monotonic() < deadline and (_alive(add["pid"]) or _alive(add["child_pid"])):
        time.sleep(0.05)
    assert not _alive(add["pid"]), "the plugin must be killed"
    assert not _alive(add["child_pid"]), "the plugin's children must be killed with it"


def test_script_killed_by_signal(tmp_path: Path) -> None:
    make_fake_plugin(tmp_path / "bin", "fake", modes={"DEL": "signal"})
    with pytest.raises(DelegateFailed) as info:
        DelegateRunner([str(tmp_path / "bin")], timeout=20).run("DEL", CONF, ENV)
    # the shell wrapper execs python, so the status is the signal itself
    assert info.value.msg == 'plugin type="fake" failed (del): killed by signal 9'


def test_error_object_with_status_zero_is_still_an_error(bin_dir: Path) -> None:
    runner, _ = runner_with(bin_dir, {"p": FakePlugin(fail={"ADD": (0, b'{"code":7,"msg":"no master"}', b"")})})
    with pytest.raises(DelegateFailed) as info:
        runner.run("ADD", {"cniVersion": "1.0.0", "name": "n", "type": "p"}, ENV)
    assert (info.value.cni_code, info.value.msg) == (7, 'plugin type="p" failed (add): no master')


def test_script_hang_with_escaped_child_does_not_block(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A grandchild in its own session survives the group kill and holds the pipes: the
    runner stops reading after the grace period instead of waiting for it."""
    import kvnet.cni.delegate as delegate

    monkeypatch.setattr(delegate, "KILL_GRACE", 0.5)
    record = tmp_path / "calls.jsonl"
    make_fake_plugin(tmp_path / "bin", "fake", modes={"ADD": "hang-escape"}, record=str(record))
    runner = DelegateRunner([str(tmp_path / "bin")], timeout=1.0)
    runner.plugin_versions(runner.find("fake"), "fake")
    start = time.monotonic()
    try:
        with pytest.raises(DelegateFailed, match="timed out after 1s and was killed"):
            runner.run("ADD", CONF, ENV)
        assert time.monotonic() - start < 5
        add = next(c for c in read_calls(record) if c["command"] == "ADD")
        assert not _alive(add["pid"])
    finally:
        for call in read_calls(record):
            if call.get("child_pid"):
                try:
                    os.kill(call["child_pid"], 9)
                except ProcessLookupError:
                    pass


@pytest.mark.parametrize(
    "env,msg",
    [
        (DelegateEnv("../x", "/ns", "eth0", ""), "invalid characters in containerID"),
        (DelegateEnv("", "/ns", "eth0", ""), "missing containerID"),
        (DelegateEnv("c1", "/ns", "eth0:1", ""), "interface name contains / or : or whitespace characters"),
        (DelegateEnv("c1", "/ns", "", ""), "interface name is empty"),
    ],
)
def test_add_validates_container_and_ifname_before_running(bin_dir: Path, env: DelegateEnv, msg: str) -> None:
    runner, fake = runner_with(bin_dir, {"p": FakePlugin()})
    with pytest.raises(KvnetError) as info:
        runner.run_network("ADD", {"cniVersion": "1.0.0", "name": "n", "type": "p"}, env)
    assert info.value.msg == msg and info.value.cni_code in (3, 4)
    assert fake.calls == []


def test_versions_file_spares_version_calls_across_runners(bin_dir: Path, tmp_path: Path) -> None:
    vfile = tmp_path / "state" / "versions.json"
    conf = {"cniVersion": "1.0.0", "name": "n", "type": "p"}
    first, fake1 = runner_with(bin_dir, {"p": FakePlugin(versions=("0.4.0", "1.0.0"))}, versions_file=str(vfile))
    first.run("ADD", conf, ENV)
    assert fake1.commands(skip_version=False) == [("p", "VERSION"), ("p", "ADD")]
    stored = json.loads(vfile.read_text())
    assert stored[str(bin_dir / "p")]["versions"] == ["0.4.0", "1.0.0"]

    fake2 = FakeExec({"p": FakePlugin(versions=("0.4.0", "1.0.0"))})
    DelegateRunner([str(bin_dir)], exec=fake2, versions_file=str(vfile)).run("ADD", conf, ENV)
    assert fake2.commands(skip_version=False) == [("p", "ADD")]

    # a replaced binary is asked again
    (bin_dir / "p").unlink()
    exe(bin_dir, "p").write_text("#!/bin/sh\n# new build\nexit 0\n")
    fake3 = FakeExec({"p": FakePlugin(versions=("1.0.0", "1.1.0"))})
    DelegateRunner([str(bin_dir)], exec=fake3, versions_file=str(vfile)).run(
        "ADD", {**conf, "cniVersion": "1.1.0"}, ENV
    )
    assert fake3.commands(skip_version=False) == [("p", "VERSION"), ("p", "ADD")]
    assert [c.conf["cniVersion"] for c in fake3.calls if c.command == "ADD"] == ["1.1.0"]


def test_versions_file_asks_again_after_an_in_place_rewrite(bin_dir: Path, tmp_path: Path) -> None:
    """Same path, same inode, same size: a new modification time alone makes it a new binary."""
    vfile = tmp_path / "versions.json"
    conf = {"cniVersion": "1.0.0", "name": "n", "type": "p"}
    first, _fake1 = runner_with(bin_dir, {"p": FakePlugin(versions=("0.4.0", "1.0.0"))}, versions_file=str(vfile))
    first.run("ADD", conf, ENV)
    path = bin_dir / "p"
    before = path.stat()
    with open(path, "r+b") as f:  # rewrite in place, same length
        data = f.read()
        f.seek(0)
        f.write(data.replace(b"exit 0", b"exit 1"))
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns + 1_000_000_000))
    after = path.stat()
    assert (after.st_ino, after.st_size) == (before.st_ino, before.st_size)
    fake2 = FakeExec({"p": FakePlugin(versions=("1.0.0",))})
    DelegateRunner([str(bin_dir)], exec=fake2, versions_file=str(vfile)).run("ADD", conf, ENV)
    assert fake2.commands(skip_version=False) == [("p", "VERSION"), ("p", "ADD")]
    assert json.loads(vfile.read_text())[str(path)]["versions"] == ["1.0.0"]


def test_versions_file_unwritable_or_corrupt_is_harmless(bin_dir: Path, tmp_path: Path) -> None:
    bad = tmp_path / "corrupt.json"
    bad.write_text("{nope")
    runner, fake = runner_with(bin_dir, {"p": FakePlugin()}, versions_file=str(bad))
    runner.run("ADD", {"cniVersion": "1.0.0", "name": "n", "type": "p"}, ENV)
    assert fake.commands(skip_version=False)[0] == ("p", "VERSION")
    blocked = tmp_path / "file"
    blocked.write_text("")
    runner2, _ = runner_with(bin_dir, {"p": FakePlugin()}, versions_file=str(blocked / "sub" / "v.json"))
    runner2.run("ADD", {"cniVersion": "1.0.0", "name": "n", "type": "p"}, ENV)


@pytest.mark.parametrize("conf_version", ["1.0.0", "1.1.0"])
def test_script_that_only_knows_031(tmp_path: Path, conf_version: str) -> None:
    """A real process that speaks only 0.3.1: it is sent 0.3.1 (prevResult too) and its
    0.3.1 result comes back in the conf's version."""
    record = tmp_path / "calls.jsonl"
    make_fake_plugin(tmp_path / "bin", "fake", versions=["0.3.1"], record=str(record))
    prev = {"cniVersion": conf_version, "interfaces": [{"name": "br0"}], "ips": [{"address": "fd00::5/64"}], "dns": {}}
    out = DelegateRunner([str(tmp_path / "bin")], timeout=20).run(
        "ADD", {**CONF, "cniVersion": conf_version, "prevResult": prev}, ENV
    )
    sent = json.loads(next(c for c in read_calls(record) if c["command"] == "ADD")["stdin"])
    assert sent["cniVersion"] == "0.3.1"
    assert sent["prevResult"] == {
        "cniVersion": "0.3.1",
        "interfaces": [{"name": "br0"}],
        "ips": [{"version": "6", "address": "fd00::5/64"}],
        "dns": {},
    }
    assert out == {
        "cniVersion": conf_version,
        "interfaces": [{"name": "net1", "mac": "0a:58:0a:01:02:03", "sandbox": "/var/run/netns/p1"}],
        "ips": [{"interface": 0, "address": "10.1.2.3/24", "gateway": "10.1.2.1"}],
        "routes": [{"dst": "0.0.0.0/0", "gw": "10.1.2.1"}],
    }


def test_real_exec_of_a_non_executable_format(tmp_path: Path) -> None:
    """ENOEXEC from the kernel (no shebang, not ELF) is translated at the exec boundary."""
    bad = tmp_path / "bin" / "fake"
    bad.parent.mkdir()
    bad.write_bytes(b"\x00\x01\x02 not a program")
    bad.chmod(0o755)
    with pytest.raises(DelegateFailed) as info:
        DelegateRunner([str(bad.parent)], timeout=5).run("ADD", CONF, ENV)
    assert info.value.msg.startswith(f'plugin type="fake" could not be run (version, {bad}): ')
    assert "Exec format error" in info.value.msg


@pytest.mark.parametrize("status", [1, 2, -9])
def test_delegate_error_never_crashes_on_odd_output(status: int) -> None:
    odd = [
        b"",
        b"null",
        b"[]",
        b'"text"',
        b"{}",
        b'{"code": null}',
        b'{"msg": 5}',
        b'{"code": true, "msg": "x"}',
        b"\xff\xfe\x00",
        b'{"code": 7, "msg": "m", "details": {"nested": 1}}',
    ]
    for out in odd:
        for err in odd:
            e = delegate_error("p", "ADD", status, out, err)
            assert e.msg.startswith('plugin type="p" failed (add): ') and e.cni_code > 0


# --- the per-container call guard (docs/reliability.md) ---------------------------------


def test_call_guard_serialises_calls_on_one_container(tmp_path: Path) -> None:
    """A second call for the same container waits until the first lets go; the lock
    file is gone once both ended."""
    import threading
    import time

    from kvnet.cni.delegate import CallGuard

    order: list[str] = []
    first = CallGuard(str(tmp_path), "c1", wait=10)
    first.acquire()

    def second() -> None:
        with CallGuard(str(tmp_path), "c1", wait=10):
            order.append("second")

    t = threading.Thread(target=second)
    t.start()
    time.sleep(0.3)
    order.append("first done")
    first.release()
    t.join(10)
    assert order == ["first done", "second"]
    assert list((tmp_path / ".kvnet-locks").iterdir()) == []
    # another container is not held up
    with CallGuard(str(tmp_path), "c1", wait=10), CallGuard(str(tmp_path), "c2", wait=0.1):
        pass


def test_call_guard_kills_what_a_dead_call_left(tmp_path: Path) -> None:
    """The lock is held by a delegate whose kvnet is gone (a pid that no longer runs is
    recorded as the holder): the next call kills that delegate and goes on."""
    import signal
    import subprocess
    import sys
    import time

    from kvnet.cni.delegate import CallGuard

    folder = tmp_path / ".kvnet-locks"
    folder.mkdir()
    lock = folder / "c9"
    # a "delegate" holding the lock in its own group, with the container ID in its env
    orphan = subprocess.Popen(
        [
            sys.executable,
            "-c",
            f"import fcntl,os,time; fd=os.open({str(lock)!r}, os.O_RDWR|os.O_CREAT); "
            "fcntl.flock(fd, fcntl.LOCK_EX); print('held', flush=True); time.sleep(60)",
        ],
        stdout=subprocess.PIPE,
        env={**os.environ, "CNI_CONTAINERID": "c9"},
        start_new_session=True,
    )
    assert orphan.stdout is not None and orphan.stdout.readline().strip() == b"held"
    lock.write_text(json.dumps({"pid": 999999999, "start": "1", "groups": [orphan.pid]}))
    start = time.monotonic()
    with CallGuard(str(tmp_path), "c9", wait=30):
        took = time.monotonic() - start
    assert orphan.wait(5) == -signal.SIGKILL
    orphan.stdout.close()
    assert took < 5


def test_cancelled_guard_runs_only_the_rollback(tmp_path: Path) -> None:
    from kvnet.cni.delegate import CallGuard, Interrupted, TryAgainLater

    with CallGuard(str(tmp_path), "c3", wait=1) as guard:
        guard.cancel("test stop")
        with pytest.raises(Interrupted, match="test stop") as err:
            guard.may_start("ADD")
        assert isinstance(err.value, TryAgainLater) and err.value.cni_code == 11
        guard.may_start("DEL")
        guard.may_start("VERSION")


def test_call_guard_records_delegates_started_and_ended_in_many_threads(tmp_path: Path) -> None:
    """Parallel delegates start and end in worker threads acting for one guard: the lock
    file ends as a whole record of the delegates still running (the next call kills those
    when this one is gone), whatever the interleaving; a worker's guard is its own again
    afterwards."""
    import threading

    from kvnet.cni.delegate import CallGuard, acting_for, current_guard

    with CallGuard(str(tmp_path), "c5", wait=1) as guard:
        record = tmp_path / ".kvnet-locks" / "c5"
        go = threading.Barrier(16)
        seen: list[object] = []

        def worker(n: int) -> None:
            with acting_for(guard):
                seen.append(current_guard())
                go.wait(10)
                for i in range(200):
                    pid = 100000 + n * 1000 + i
                    guard.started(pid, "ADD")
                    if i != 199 or n % 2:  # the even workers leave their last one running
                        guard.ended(pid)
            seen.append(current_guard())

        threads = [threading.Thread(target=worker, args=(n,)) for n in range(16)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        doc = json.loads(record.read_text())
        assert doc["pid"] == os.getpid()
        assert doc["groups"] == sorted(100000 + n * 1000 + 199 for n in range(0, 16, 2))
        assert seen.count(guard) == 16 and seen.count(None) == 16
        assert current_guard() is guard


def test_a_child_forked_without_exec_gets_the_default_signal_action() -> None:
    """pyroute2 forks a netns helper under the in-process binding; a SIGTERM to it must end
    it, not run kvnet-cni's handler (an interrupt and a rollback inside the copy)."""
    script = (
        "import os, signal, sys, time\n"
        "from kvnet.cni import delegate\n"
        "delegate.handle_signals(lambda s, f: print('handler ran in', os.getpid(), flush=True), (signal.SIGTERM,))\n"
        "pid = os.fork()\n"
        "if pid == 0:\n"
        "    time.sleep(30)\n"
        "    os._exit(0)\n"
        "time.sleep(0.2)\n"
        "os.kill(pid, signal.SIGTERM)\n"
        "_, status = os.waitpid(pid, 0)\n"
        "print(os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGTERM, flush=True)\n"
        "os.kill(os.getpid(), signal.SIGTERM)\n"
        "time.sleep(0.2)\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=30, check=True)
    lines = done.stdout.splitlines()
    assert lines[0] == "True", done.stdout + done.stderr
    assert lines[1].startswith("handler ran in "), done.stdout  # the process itself keeps its handler
