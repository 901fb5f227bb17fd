"""Hostile input at the meta-plugin's edges (issue 12, "nothing lost"): each case once made
an ADD or a DEL end in code 999 with a Python message, or a DEL that never succeeds.

Every call goes through the CNI entry point (``plugin_main``) of the meta-plugin wired as
in production (the light API client against the API stand-in, the delegate runner over a
recording fake ``Exec``, the caches in a temporary ``cniDir``), or through ``kvnet-shim``
to a running ``kvnet daemon``. Each test asserts the exact code and message, which
delegates ran, and that nothing is left in the caches.
"""

from __future__ import annotations

import io
import json
import os
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest

from kvnet.cni.delegate import DelegateRunner, subprocess_exec
from kvnet.cni.protocol import CniRequest, plugin_main
from kvnet.lab.apiserver import ApiStandIn
from kvnet.lab.fakes import FakeExec, FakePlugin
from kvnet.meta import shim
from kvnet.meta.config import MultusConfig
from kvnet.meta.daemon import CniDaemon
from kvnet.meta.wiring import light_api, make_handlers

CID = "c0ffee" * 10 + "beef"  # 64 characters, as runtimes name containers
POD_ARGS = "IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=web;K8S_POD_UID=uid-1"


class Node:
    """One node's meta-plugin: its config, bin dir, caches and the calls its delegates got."""

    def __init__(self, tmp_path: Path, standin: ApiStandIn) -> None:
        self.tmp = tmp_path
        self.bin_dir = tmp_path / "bin"
        self.bin_dir.mkdir()
        self.cni_dir = tmp_path / "cache"
        self.kubeconfig = tmp_path / "kubeconfig"
        standin.write_kubeconfig(str(self.kubeconfig))
        self.exec = FakeExec({"ok": FakePlugin()})
        (self.bin_dir / "ok").write_text("#!/bin/sh\nexit 0\n")
        (self.bin_dir / "ok").chmod(0o755)

    def conf(self, **extra: Any) -> dict[str, Any]:
        conf: dict[str, Any] = {
            "cniVersion": "1.0.0",
            "name": "kvnet-cni-network",
            "type": "kvnet",
            "kubeconfig": str(self.kubeconfig),
            "cniDir": str(self.cni_dir),
            "binDir": str(self.bin_dir),
            "delegates": [{"cniVersion": "1.0.0", "name": "main", "type": "ok"}],
        }
        conf.update(extra)
        return conf

    def runner(self, conf: MultusConfig, request: CniRequest | None = None) -> DelegateRunner:
        return DelegateRunner([conf.bin_dir], exec=self.exec, cache_dir=conf.cni_dir)

    def handlers(self) -> dict[str, Any]:
        return make_handlers(api_for=light_api, runner_for=self.runner)

    def env(self, command: str, **override: str) -> dict[str, str]:
        env = {
            "CNI_COMMAND": command,
            "CNI_CONTAINERID": CID,
            "CNI_NETNS": "/var/run/netns/web",
            "CNI_IFNAME": "eth0",
            "CNI_PATH": str(self.bin_dir),
            "CNI_ARGS": POD_ARGS,
        }
        env.update(override)
        return env

    def call(self, command: str, conf: Mapping[str, Any] | None = None, /, **env: str) -> tuple[int, dict[str, Any]]:
        out = io.StringIO()
        stdin = io.BytesIO(json.dumps(conf or self.conf()).encode())
        rc = plugin_main(self.handlers(), environ=self.env(command, **env), stdin=stdin, stdout=out)
        return rc, json.loads(out.getvalue()) if out.getvalue().strip() else {}

    def delegate_calls(self) -> list[tuple[str, str, str]]:
        """(command, network, ifname) of every delegate call but VERSION."""
        return [
            (c.command, c.conf.get("name", ""), c.env["CNI_IFNAME"]) for c in self.exec.calls if c.command != "VERSION"
        ]

    def leftovers(self) -> list[str]:
        """Every file left in cniDir (the delegate cache, libcni's results, temp files)."""
        if not self.cni_dir.exists():
            return []
        return sorted(str(p.relative_to(self.cni_dir)) for p in self.cni_dir.rglob("*") if p.is_file())


def pod(networks: str | None = None, name: str = "web") -> dict[str, Any]:
    annotations = {"k8s.v1.cni.cncf.io/networks": networks} if networks else {}
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"namespace": "default", "name": name, "uid": "uid-1", "annotations": annotations},
    }


def nad(name: str, config: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": "k8s.cni.cncf.io/v1",
        "kind": "NetworkAttachmentDefinition",
        "metadata": {"namespace": "default", "name": name},
        "spec": {"config": json.dumps(config)},
    }


@pytest.fixture
def standin() -> Iterator[ApiStandIn]:
    with ApiStandIn() as server:
        yield server


@pytest.fixture
def node(tmp_path: Path, standin: ApiStandIn) -> Node:
    return Node(tmp_path, standin)


# --- a network name too long for libcni's cache file -------------------------------


def test_network_name_too_long_for_the_results_cache(node: Node, standin: ApiStandIn) -> None:
    """A NAD's network name of 300 characters passes the name rules but cannot name
    libcni's ``<network>-<containerID>-<ifname>`` file (NAME_MAX 255): ADD was 999 with an
    OSError text, every DEL 102. Now ADD is code 7 naming the network and rolls back the
    attachment, and DEL succeeds."""
    long_name = "n" * 300
    standin.load([pod("extra"), nad("extra", {"cniVersion": "1.0.0", "name": long_name, "type": "ok"})])
    rc, err = node.call("ADD")
    assert rc == 1 and err["code"] == 7, err
    assert err["msg"] == (
        f"[default/web/uid-1:{long_name}]: error adding container to network {json.dumps(long_name)}: "
        f"network name {long_name!r} is too long for libcni's results cache: the file "
        "<network>-<containerID>-<ifname> would be 370 bytes, more than NAME_MAX 255"
    )
    # the attachment that was added is deleted again, the main network's too
    assert node.delegate_calls() == [
        ("ADD", "main", "eth0"),
        ("ADD", long_name, "net1"),
        ("DEL", long_name, "net1"),
        ("DEL", "main", "eth0"),
    ]
    rc, err = node.call("DEL")
    assert (rc, err) == (0, {})
    assert node.delegate_calls()[-2:] == [("DEL", long_name, "net1"), ("DEL", "main", "eth0")]
    assert node.leftovers() == []


def test_network_name_that_fits_the_results_cache(node: Node, standin: ApiStandIn) -> None:
    """The limit is NAME_MAX itself: the longest network name that fits is cached and read back."""
    fits = "n" * (255 - len(f"-{CID}-net1"))
    standin.load([pod("extra"), nad("extra", {"cniVersion": "1.0.0", "name": fits, "type": "ok"})])
    rc, result = node.call("ADD")
    assert rc == 0, result
    assert (node.cni_dir / "results" / f"{fits}-{CID}-net1").is_file()
    assert node.call("DEL") == (0, {})
    assert node.leftovers() == []


# --- CNI env the runtime (or a kvnet-shim caller) got wrong -------------------------


@pytest.mark.parametrize(
    ("variable", "value", "message"),
    [
        ("CNI_IFNAME", "eth\x000", "CNI_IFNAME contains a NUL byte"),
        ("CNI_NETNS", "/var/run/netns/web\x00x", "CNI_NETNS contains a NUL byte"),
        ("CNI_ARGS", POD_ARGS + "\x00", "CNI_ARGS contains a NUL byte"),
        ("CNI_PATH", "/opt/cni/bin\x00", "CNI_PATH contains a NUL byte"),
        ("CNI_CONTAINERID", CID + "\x00", "CNI_CONTAINERID contains a NUL byte"),
        # os.environ keeps an undecodable byte (0xff) as a lone surrogate
        ("CNI_IFNAME", os.fsdecode(b"eth\xff"), "CNI_IFNAME is not valid UTF-8"),
        ("CNI_ARGS", os.fsdecode(b"K8S_POD_NAME=w\xffb"), "CNI_ARGS is not valid UTF-8"),
        ("CNI_NETNS", os.fsdecode(b"/var/run/netns/\xff"), "CNI_NETNS is not valid UTF-8"),
    ],
)
@pytest.mark.parametrize("command", ["ADD", "DEL"])
def test_env_with_nul_or_undecodable_bytes(node: Node, command: str, variable: str, value: str, message: str) -> None:
    rc, err = node.call(command, **{variable: value})
    assert rc == 1 and err["code"] == 4 and err["msg"] == message, err
    assert err["details"] == repr(value)
    assert node.delegate_calls() == [] and node.leftovers() == []


def test_env_with_nul_through_kvnet_shim(node: Node, standin: ApiStandIn) -> None:
    """The shim carries the env to the daemon as JSON, where a NUL survives (execve's env
    cannot hold one): the daemon answers code 4 naming the variable, as kvnet-cni does."""
    standin.load([pod()])
    socket = str(node.tmp / "kvnet.sock")
    conf = node.conf(type="kvnet-shim", socketPath=socket)
    with CniDaemon(socket, handlers=node.handlers()):
        for variable, value in [("CNI_IFNAME", "eth\x000"), ("CNI_NETNS", "/x\x00"), ("CNI_PATH", "/bin\x00")]:
            out = io.StringIO()
            rc = shim.run(node.env("ADD", **{variable: value}), json.dumps(conf).encode(), out)
            err = json.loads(out.getvalue())
            assert rc == 1 and err["code"] == 4 and err["msg"] == f"{variable} contains a NUL byte", err
        out = io.StringIO()
        assert shim.run(node.env("ADD"), json.dumps(conf).encode(), out) == 0, out.getvalue()
    assert node.delegate_calls() == [("ADD", "main", "eth0")]


def test_container_id_too_long(node: Node, standin: ApiStandIn) -> None:
    """A container ID names Multus's cache file: past NAME_MAX, ADD was code 5 with an
    OSError text and every DEL code 5. ADD is code 4 naming CNI_CONTAINERID; the DEL
    finds nothing cached (nothing could have been) and deletes from the pod, successfully."""
    standin.load([pod()])
    long_id = "a" * 300
    rc, err = node.call("ADD", CNI_CONTAINERID=long_id)
    assert rc == 1 and err == {
        "cniVersion": "1.0.0",
        "code": 4,
        "msg": "CNI_CONTAINERID is 300 bytes long, more than 237 "
        "(libcni's cache file <network>-<containerID>-<ifname> must fit in NAME_MAX 255)",
        "details": "a" * 64 + "...",
    }
    assert node.delegate_calls() == []
    assert node.call("DEL", CNI_CONTAINERID=long_id) == (0, {})
    assert node.delegate_calls() == [("DEL", "main", "eth0")]
    assert node.leftovers() == []


def test_longest_container_id_works(node: Node, standin: ApiStandIn) -> None:
    """The longest container ID accepted is cached (the temp files stay within NAME_MAX too)."""
    standin.load([pod()])
    long_id = "a" * 237
    assert node.call("ADD", CNI_CONTAINERID="a" * 238)[1]["code"] == 4
    rc, result = node.call("ADD", CNI_CONTAINERID=long_id)
    assert rc == 0, result
    assert (node.cni_dir / long_id).is_file()
    assert node.call("DEL", CNI_CONTAINERID=long_id) == (0, {})
    assert node.leftovers() == []


# --- pod names that are no URL segment ----------------------------------------------


@pytest.mark.parametrize(
    ("namespace", "name", "message"),
    [
        ("default", ".", "invalid resource name \".\": [may not be '.']"),
        ("default", "..", "invalid resource name \"..\": [may not be '..']"),
        ("default", "a%2Fb", "invalid resource name \"a%2Fb\": [may not contain '%']"),
        ("..", "web", "invalid namespace \"..\": [may not be '..']"),
    ],
)
def test_pod_name_that_is_no_url_segment(
    node: Node, standin: ApiStandIn, namespace: str, name: str, message: str
) -> None:
    """``pods/..`` would be another URL (the namespace's pods list, or the namespace): the
    call is refused before any request, as client-go refuses it, with code 4 (CNI_ARGS);
    DEL goes on from the cache."""
    standin.load([pod()])
    args = f"K8S_POD_NAMESPACE={namespace};K8S_POD_NAME={name};K8S_POD_UID=uid-1"
    before = len(standin.requests)
    rc, err = node.call("ADD", CNI_ARGS=args)
    assert rc == 1 and err["code"] == 4, err
    assert err["msg"] == f"kvnet: [{namespace}/{name}/uid-1]: error waiting for pod: {message}"
    assert standin.requests[before:] == [] and node.delegate_calls() == []
    assert node.call("DEL", CNI_ARGS=args) == (0, {})
    assert standin.requests[before:] == []
    assert node.leftovers() == []


# --- kvnet's own config ---------------------------------------------------------------


@pytest.mark.parametrize("timeout", [2**31, 2**63, 1e300])
def test_delegate_timeout_out_of_range(node: Node, timeout: float) -> None:
    """``delegateTimeout`` ≥ 2^31 was an OverflowError on every ADD (code 999)."""
    rc, err = node.call("ADD", node.conf(delegateTimeout=timeout))
    assert rc == 1 and err["code"] == 7, err
    assert err["msg"].startswith("kvnet: error loading netconf: LoadNetConf: delegateTimeout must be more than 0")
    assert node.delegate_calls() == [] and node.leftovers() == []


def test_network_name_with_an_escaped_lone_surrogate(node: Node) -> None:
    """``"\\udcff"`` in the config's name decodes to no character Go would keep: code 7."""
    conf = node.conf(name="kvnet\udcff")
    rc, err = node.call("ADD", conf)
    assert rc == 1 and err["code"] == 7 and err["msg"] == "invalid characters found in network name", err
    assert node.delegate_calls() == [] and node.leftovers() == []


# --- a DEL without a cache whose delegates cannot read their call ---------------------


def test_rebuilt_del_of_a_delegate_that_cannot_run_ends(node: Node, standin: ApiStandIn) -> None:
    """No cache (the ADD never got that far, or the cache is gone), and the pod's network
    names a plugin that is not there: every DEL was code 7 again, so the runtime retried it
    forever though nothing of the container exists. The rule (kvnet.meta.cache): such a
    DEL ends in success, after trying every delegate."""
    standin.load([pod("extra"), nad("extra", {"cniVersion": "1.0.0", "name": "extra", "type": "nosuch"})])
    rc, err = node.call("DEL")
    assert node.delegate_calls() == [("DEL", "main", "eth0")]  # the main network is still deleted
    assert (rc, err) == (0, {})
    assert node.leftovers() == []


# --- lone surrogates in what the pod's author wrote ------------------------------------


@pytest.mark.parametrize(
    "networks",
    [
        '[{"name": "extra", "interface": "e\\udcff"}]',
        '[{"name": "extra", "interface": "e\\ud800"}]',
        "extra@e\ud800",  # the short form: the pod's JSON from the API holds the escape
    ],
)
def test_lone_surrogate_in_the_annotations_interface(node: Node, standin: ApiStandIn, networks: str) -> None:
    """``"interface": "e\\ud800"`` in the networks annotation: Python's decoder keeps a lone
    surrogate, which no exec can pass (999 'surrogates not allowed', or the plugin got a
    byte that is no UTF-8 and its result was unparseable, code 6). Go decodes it as U+FFFD,
    so Multus's delegate gets ``e\\ufffd``; kvnet's does too, through a real exec."""
    record = node.tmp / "ifnames"
    plugin = node.bin_dir / "rec"
    plugin.write_text(
        "#!/bin/sh\n"
        'if [ "$CNI_COMMAND" = VERSION ]; then echo \'{"cniVersion":"1.0.0","supportedVersions":["1.0.0"]}\'; exit 0; fi\n'
        f'printf "%s %s\\n" "$CNI_COMMAND" "$CNI_IFNAME" >> {record}\n'
        'if [ "$CNI_COMMAND" = ADD ]; then echo \'{"cniVersion":"1.0.0"}\'; fi\n'
    )
    plugin.chmod(0o755)
    standin.load([pod(networks), nad("extra", {"cniVersion": "1.0.0", "name": "extra", "type": "rec"})])
    node.exec = FakeExec({"ok": FakePlugin()})

    def runner(conf: MultusConfig, request: CniRequest | None = None) -> DelegateRunner:
        def exec_(plugin: str, stdin: bytes, env: Mapping[str, str], timeout: float) -> tuple[int, bytes, bytes]:
            if os.path.basename(plugin) == "ok":
                return node.exec(plugin, stdin, env, timeout)
            return subprocess_exec(plugin, stdin, env, timeout)

        return DelegateRunner([conf.bin_dir], exec=exec_, cache_dir=conf.cni_dir)

    node.runner = runner  # type: ignore[method-assign]
    rc, result = node.call("ADD")
    assert rc == 0, result
    assert record.read_text(encoding="utf-8") == "ADD e\ufffd\n"
    assert node.call("DEL") == (0, {})
    assert record.read_text(encoding="utf-8") == "ADD e\ufffd\nDEL e\ufffd\n"
    assert node.leftovers() == []
