"""Property-based fuzzing of every input kvnet reads (issue 12, "nothing lost").

Each input goes in where a runtime, a pod author or virt-launcher would put it: the CNI
env and the stdin config through the meta-plugin's CNI entry point (``plugin_main`` with
the production handlers, the light API client against the API stand-in, the delegate
runner over a fake ``Exec``); the NAD and both forms of the networks annotation (and the
default-network one) as objects in the API; the binding record as a pod link's ifalias
and the VMI and domain XML through the sidecar's hooks. The property: an input error is a
specific CNI error code (or, in the sidecar, a gRPC status other than INTERNAL) whose
message says what was wrong — never 999 with a Python exception's text.

Reproducible in CI: every test has a fixed ``max_examples`` and is derandomized. The
examples per input are in :data:`EXAMPLES`.
"""

from __future__ import annotations

import io
import json
import shutil
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import grpc
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kvnet.cni.delegate import DelegateRunner
from kvnet.cni.protocol import CniRequest, plugin_main
from kvnet.core import bindrecord
from kvnet.core.errors import KvnetError
from kvnet.core.naming import hashed_pod_iface
from kvnet.domain.networkinfo import parse_network_info
from kvnet.lab.apiserver import ApiStandIn
from kvnet.lab.fake_pod import add_bridge_binding, network_info, write_link
from kvnet.lab.fakes import FakeExec, FakePlugin
from kvnet.meta.config import MultusConfig
from kvnet.meta.wiring import light_api, make_handlers
from kvnet.sidecar.hooks import KvnetHooks, PodFactsReader
from kvnet.sidecar.podfacts import read_pod_links
from kvnet.sidecar.server import status_for
from kvnet.sidecar.wiring import PipelineTranslator

EXAMPLES = {
    "cni-env": 250,
    "stdin-config": 250,
    "stdin-bytes": 200,
    "nad": 150,
    "networks-json": 150,
    "networks-short": 150,
    "default-network": 100,
    "binding-record": 150,
    "vmi": 150,
    "domain-xml": 150,
}

# What a Python exception's text looks like when it leaks into a message.
_PYTHON_TEXT = (
    "Traceback",
    "object has no attribute",
    "is not subscriptable",
    "unhashable type",
    "unsupported operand",
    "[Errno",
    "codec can't",
    "embedded null",
    "object of type",
    "argument must be",
    "not supported between",
)


def _settings(name: str) -> settings:
    return settings(
        max_examples=EXAMPLES[name],
        derandomize=True,
        deadline=None,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much],
    )


def assert_cni_error(answer: Mapping[str, Any]) -> None:
    """A CNI error object with a specific code and a message of kvnet's own."""
    assert answer["code"] != 999, answer
    msg = str(answer.get("msg", ""))
    assert msg, answer
    leaked = [t for t in _PYTHON_TEXT if t in msg]
    assert not leaked, answer


# --- the meta-plugin, wired as in production ---------------------------------------

CID = "f" * 64
POD_ARGS = "IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=web;K8S_POD_UID=uid-1"


class Node:
    def __init__(self, root: Path, standin: ApiStandIn) -> None:
        self.standin = standin
        self.standin_nads: list[str] = []
        self.bin_dir = root / "bin"
        self.bin_dir.mkdir()
        self.cni_dir = root / "cache"
        self.conf_dir = root / "net.d"
        self.conf_dir.mkdir()
        self.kubeconfig = root / "kubeconfig"
        standin.write_kubeconfig(str(self.kubeconfig))
        self.exec = FakeExec({"ok": FakePlugin(), "bridge": FakePlugin()})
        for name in self.exec.plugins:
            (self.bin_dir / name).write_text("#!/bin/sh\nexit 0\n")
            (self.bin_dir / name).chmod(0o755)

    def conf(self) -> dict[str, Any]:
        return {
            "cniVersion": "1.0.0",
            "name": "kvnet-cni-network",
            "type": "kvnet",
            "kubeconfig": str(self.kubeconfig),
            "cniDir": str(self.cni_dir),
            "binDir": str(self.bin_dir),
            "confDir": str(self.conf_dir),
            "delegates": [{"cniVersion": "1.0.0", "name": "main", "type": "ok"}],
        }

    def runner(self, conf: MultusConfig, request: CniRequest | None = None) -> DelegateRunner:
        return DelegateRunner([conf.bin_dir], exec=self.exec, cache_dir=conf.cni_dir, timeout=5.0)

    def env(self, command: str = "ADD") -> dict[str, str]:
        return {
            "CNI_COMMAND": command,
            "CNI_CONTAINERID": CID,
            "CNI_NETNS": "/var/run/netns/web",
            "CNI_IFNAME": "eth0",
            "CNI_PATH": str(self.bin_dir),
            "CNI_ARGS": POD_ARGS,
        }

    def call(self, env: Mapping[str, str], stdin: bytes) -> tuple[int, dict[str, Any]]:
        out = io.StringIO()
        handlers = make_handlers(api_for=light_api, runner_for=self.runner)
        rc = plugin_main(handlers, environ=env, stdin=io.BytesIO(stdin), stdout=out)
        text = out.getvalue()
        return rc, json.loads(text) if text.strip() else {}

    def pod(self, annotations: Mapping[str, str], nads: tuple[dict[str, Any], ...] = ()) -> None:
        """The pod ``default/web`` with these annotations, and these NADs, replacing the last."""
        self.standin.delete("Pod", "default", "web")
        for obj in self.standin_nads:
            self.standin.delete("NetworkAttachmentDefinition", "default", obj)
        pod = {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"namespace": "default", "name": "web", "uid": "uid-1", "annotations": dict(annotations)},
        }
        self.standin.load([pod, *nads])
        self.standin_nads = [n["metadata"]["name"] for n in nads]

    def add_then_del(self, stdin: bytes | None = None) -> None:
        """ADD: a result or a specific error; DEL afterwards always succeeds and nothing is left."""
        data = json.dumps(self.conf()).encode() if stdin is None else stdin
        rc, answer = self.call(self.env("ADD"), data)
        if rc != 0:
            assert_cni_error(answer)
        rc, answer = self.call(self.env("DEL"), data)
        if rc != 0:
            assert_cni_error(answer)
        shutil.rmtree(self.cni_dir, ignore_errors=True)


@pytest.fixture(scope="module")
def node() -> Iterator[Node]:
    root = Path(tempfile.mkdtemp(prefix="kvnet-fuzz-"))
    try:
        with ApiStandIn() as standin:
            yield Node(root, standin)
    finally:
        shutil.rmtree(root, ignore_errors=True)


# Text a hostile caller can send: NUL, lone surrogates (os.environ's undecodable bytes),
# separators the parsers split on, and long runs.
hostile_text = (
    st.text(
        alphabet=st.sampled_from(["a", "0", "-", ".", "/", ":", ";", "=", " ", "\t", "\x00", "\udcff", "é", "%", "@"]),
        max_size=24,
    )
    | st.text(max_size=12)
    | st.builds(lambda c, n: c * n, st.sampled_from(["a", "é", "."]), st.integers(200, 400))
)

json_scalars = st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats(allow_nan=False) | hostile_text
json_values = st.recursive(
    json_scalars,
    lambda children: st.lists(children, max_size=3) | st.dictionaries(hostile_text, children, max_size=3),
    max_leaves=10,
)


# --- CNI env -------------------------------------------------------------------------

COMMANDS = st.sampled_from(["ADD", "DEL", "CHECK", "STATUS", "GC", "VERSION"])
# each variable: the good value (kept), missing, or hostile; the command mostly a real one
env_changes = st.fixed_dictionaries(
    {
        "CNI_COMMAND": st.one_of(COMMANDS, COMMANDS, COMMANDS, hostile_text),
        **{
            name: st.one_of(st.just(None), st.just(""), hostile_text, hostile_text)
            for name in ("CNI_CONTAINERID", "CNI_NETNS", "CNI_IFNAME", "CNI_ARGS", "CNI_PATH")
        },
        "CNI_ARGS+": st.one_of(st.just(""), hostile_text),
    }
).filter(lambda d: sum(v is not None for k, v in d.items() if k != "CNI_COMMAND") <= 3)


@given(env_changes)
@_settings("cni-env")
def test_cni_env(node: Node, changes: dict[str, str | None]) -> None:
    node.pod({})
    env = node.env(changes["CNI_COMMAND"] or "")
    for name, value in changes.items():
        if name == "CNI_ARGS+":
            env["CNI_ARGS"] = env.get("CNI_ARGS", "") + (";" + value if value else "")
        elif value == "":
            env.pop(name, None)
        elif value is not None:
            env[name] = value
    rc, answer = node.call(env, json.dumps(node.conf()).encode())
    if rc != 0:
        assert_cni_error(answer)
        if answer["code"] == 4:  # the env's code: the message names the variable or its rule
            assert any(
                word in answer["msg"]
                for word in ("CNI_", "interface name", "containerID", "ARGS", "env variables", "CNI_COMMAND")
            ), answer
    shutil.rmtree(node.cni_dir, ignore_errors=True)


# --- stdin config ----------------------------------------------------------------------

CONFIG_KEYS = (
    "cniVersion",
    "name",
    "type",
    "delegates",
    "clusterNetwork",
    "defaultNetworks",
    "systemNamespaces",
    "multusNamespace",
    "namespaceIsolation",
    "globalNamespaces",
    "logLevel",
    "logToStderr",
    "delegateTimeout",
    "inProcessBinding",
    "retryDeleteOnError",
    "capabilities",
    "runtimeConfig",
    "args",
    "prevResult",
)


@given(
    st.dictionaries(st.sampled_from(CONFIG_KEYS), json_values, max_size=4)
    | st.builds(lambda d: {"delegates": [d]}, st.dictionaries(st.sampled_from(CONFIG_KEYS), json_values, max_size=4))
)
@_settings("stdin-config")
def test_stdin_config(node: Node, changes: dict[str, Any]) -> None:
    node.pod({})
    conf = {**node.conf(), **changes}
    node.add_then_del(json.dumps(conf).encode())


@given(st.binary(max_size=40) | st.builds(lambda t: t.encode("utf-8", "surrogatepass"), hostile_text))
@_settings("stdin-bytes")
def test_stdin_bytes(node: Node, data: bytes) -> None:
    rc, answer = node.call(node.env("ADD"), data)
    assert rc == 1
    assert_cni_error(answer)
    assert answer["code"] in (6, 7, 1), answer


# --- NADs and the annotations ----------------------------------------------------------

NAD_CONF_KEYS = ("cniVersion", "name", "type", "plugins", "ipam", "master", "mtu", "capabilities", "args")


def _nad(name: str, config: Any) -> dict[str, Any]:
    return {
        "apiVersion": "k8s.cni.cncf.io/v1",
        "kind": "NetworkAttachmentDefinition",
        "metadata": {"namespace": "default", "name": name},
        "spec": {"config": config},
    }


nad_configs = (
    st.dictionaries(st.sampled_from(NAD_CONF_KEYS), json_values, max_size=4).map(
        lambda d: json.dumps({"cniVersion": "1.0.0", "type": "bridge", **d})
    )
    | st.builds(
        lambda plugins: json.dumps({"cniVersion": "1.0.0", "name": "list", "plugins": plugins}),
        st.lists(st.dictionaries(st.sampled_from(NAD_CONF_KEYS), json_values, max_size=3), max_size=2),
    )
    | hostile_text
    | json_values
)


@given(nad_configs)
@_settings("nad")
def test_nad_config(node: Node, config: Any) -> None:
    node.pod({"k8s.v1.cni.cncf.io/networks": "extra"}, (_nad("extra", config),))
    node.add_then_del()


SELECTION_KEYS = (
    "name",
    "namespace",
    "interface",
    "ips",
    "mac",
    "infiniband-guid",
    "default-route",
    "portMappings",
    "bandwidth",
    "cni-args",
    "gateway",
)
selection = st.dictionaries(st.sampled_from(SELECTION_KEYS), json_values, max_size=4).map(
    lambda d: {"name": "extra", **d}
)


@given(st.lists(selection, max_size=3).map(json.dumps) | json_values.map(json.dumps))
@_settings("networks-json")
def test_networks_annotation_json(node: Node, value: str) -> None:
    node.pod(
        {"k8s.v1.cni.cncf.io/networks": value}, (_nad("extra", json.dumps({"cniVersion": "1.0.0", "type": "ok"})),)
    )
    node.add_then_del()


short_item = st.builds(
    lambda ns, name, ifname: f"{ns}{name}{ifname}",
    st.sampled_from(["", "default/", "/", "a/b/", "Default/"]),
    st.sampled_from(["extra", "", "Extra", "a_b", "x" * 300]) | hostile_text,
    st.sampled_from(["", "@net9", "@", "@a b", "@" + "i" * 20]) | st.builds(lambda t: "@" + t, hostile_text),
)


@given(st.lists(short_item, min_size=1, max_size=3).map(",".join))
@_settings("networks-short")
def test_networks_annotation_short(node: Node, value: str) -> None:
    node.pod(
        {"k8s.v1.cni.cncf.io/networks": value}, (_nad("extra", json.dumps({"cniVersion": "1.0.0", "type": "ok"})),)
    )
    node.add_then_del()


@given(short_item | selection.map(json.dumps) | st.lists(selection, max_size=2).map(json.dumps))
@_settings("default-network")
def test_default_network_annotation(node: Node, value: str) -> None:
    nad = _nad("extra", json.dumps({"cniVersion": "1.0.0", "type": "ok"}))
    node.pod({"v1.multus-cni.io/default-network": value}, (nad,))
    node.add_then_del()


# --- the sidecar: binding record, VMI, domain XML ------------------------------------

KUBEVIRT_DOMAIN = (Path(__file__).resolve().parents[1] / "sidecar" / "kubevirt" / "vmi-kvnet.xml").read_bytes()
RED_MAC = "02:00:00:aa:bb:01"


def vmi(**changes: Any) -> dict[str, Any]:
    """A VMI with interface ``red`` bound to kvnet (as virt-launcher marshals it, trimmed)."""
    doc: dict[str, Any] = {
        "apiVersion": "kubevirt.io/v1",
        "kind": "VirtualMachineInstance",
        "metadata": {"name": "vmi-kvnet", "namespace": "default", "uid": "5d307ca9", "annotations": {}},
        "spec": {
            "domain": {
                "cpu": {"cores": 1, "sockets": 1, "threads": 1},
                "devices": {
                    "interfaces": [{"name": "default", "masquerade": {}}, {"name": "red", "binding": {"name": "kvnet"}}]
                },
            },
            "networks": [{"name": "default", "pod": {}}, {"name": "red", "multus": {"networkName": "default/red-nad"}}],
        },
        "status": {"interfaces": [{"name": "red", "interfaceName": hashed_pod_iface("red"), "queueCount": 1}]},
    }
    doc.update(changes)
    return doc


class Pod:
    """A virt-launcher pod's /sys/class/net and network-info with network ``red`` bound."""

    def __init__(self, root: Path) -> None:
        self.sys_class_net = root / "sys-class-net"
        self.network_info = root / "podinfo" / "network-info"
        self.sys_class_net.mkdir(parents=True)
        self.network_info.parent.mkdir(parents=True)
        write_link(self.sys_class_net, "eth0", mac="0a:58:0a:f4:00:0c", mtu=1480)
        add_bridge_binding(self.sys_class_net, "red", original_mac=RED_MAC, mtu=1400)
        self.network_info.write_text(network_info({"red": {"mac": RED_MAC}}))
        reader = PodFactsReader(
            str(self.network_info),
            str(self.sys_class_net),
            read_links=read_pod_links,
            parse_network_info=parse_network_info,
            timeout=0.2,
            interval=0.05,
        )
        self.hooks = KvnetHooks("kvnet", reader, PipelineTranslator())

    def alias_file(self) -> Path:
        """The ifalias holding the binding record (on the pod link or its tap)."""
        for path in sorted(self.sys_class_net.glob("*/ifalias")):
            if bindrecord.is_tagged(path.read_text()):
                return path
        raise AssertionError("no binding record in the fake pod")

    def define(self, domain: bytes, vmi_doc: bytes) -> bytes | None:
        """OnDefineDomain: the new domain, or None after checking the error's gRPC status."""
        try:
            return self.hooks.on_define_domain(domain, vmi_doc)
        except KvnetError as err:
            assert status_for(err) is not grpc.StatusCode.INTERNAL, (type(err), err.msg)
            # the message names the input at fault (a decoder's own detail may follow)
            assert any(word in err.msg for word in _SIDECAR_INPUTS), err.msg
            return None


_SIDECAR_INPUTS = (
    "VMI",
    "domain",
    "binding record",
    "interface",
    "network",
    "bond",
    "metadata",
    "spec",
    "status",
    "annotation",
)


@pytest.fixture(scope="module")
def launcher() -> Iterator[Pod]:
    root = Path(tempfile.mkdtemp(prefix="kvnet-fuzz-pod-"))
    try:
        yield Pod(root)
    finally:
        shutil.rmtree(root, ignore_errors=True)


def test_the_unfuzzed_inputs_work(launcher: Pod, node: Node) -> None:
    """The base inputs the fuzzing varies are accepted (else every example would fail the same way)."""
    out = launcher.define(KUBEVIRT_DOMAIN, json.dumps(vmi()).encode())
    assert out is not None and b"ua-red" in out
    node.pod(
        {"k8s.v1.cni.cncf.io/networks": "extra"}, (_nad("extra", json.dumps({"cniVersion": "1.0.0", "type": "ok"})),)
    )
    rc, result = node.call(node.env("ADD"), json.dumps(node.conf()).encode())
    assert rc == 0 and result["interfaces"][0]["name"] == "eth0", result
    assert node.call(node.env("DEL"), json.dumps(node.conf()).encode()) == (0, {})
    assert [c.command for c in node.exec.calls if c.command != "VERSION"][-4:] == ["ADD", "ADD", "DEL", "DEL"]
    shutil.rmtree(node.cni_dir, ignore_errors=True)


record_fields = st.fixed_dictionaries(
    {},
    optional={
        "kvnet": st.sampled_from([1, 2, 0, True, "1"]) | json_values,
        "mac": st.sampled_from([RED_MAC, "zz", "", "02:00:00:aa:bb"]) | json_values,
        "mtu": st.sampled_from([1400, 0, -1, 70000, 1.5]) | json_values,
        "ip": st.lists(st.sampled_from(["10.0.0.2/24", "fe80::1/64", "10.0.0.2", "x"]) | hostile_text, max_size=2)
        | json_values,
        "gw": json_values,
        "rt": json_values,
        "x": json_values,
    },
)


@given(
    record_fields.map(lambda d: json.dumps(d, separators=(",", ":")))
    | st.builds(lambda t: '{"kvnet":' + t, hostile_text)
)
@_settings("binding-record")
def test_binding_record(launcher: Pod, text: str) -> None:
    path = launcher.alias_file()
    good = path.read_text()
    try:
        tagged = text if bindrecord.is_tagged(text) else '{"kvnet":1,' + text.lstrip("{")
        path.write_bytes(tagged.encode("utf-8", "surrogateescape"))  # an ifalias holds any bytes
        launcher.define(KUBEVIRT_DOMAIN, json.dumps(vmi()).encode())
    finally:
        path.write_text(good)


VMI_PATHS = (
    ("metadata",),
    ("metadata", "annotations"),
    ("spec",),
    ("spec", "domain"),
    ("spec", "domain", "devices"),
    ("spec", "domain", "devices", "interfaces"),
    ("spec", "networks"),
    ("status",),
    ("status", "interfaces"),
)


def _set(doc: dict[str, Any], path: tuple[str, ...], value: Any) -> dict[str, Any]:
    out: dict[str, Any] = json.loads(json.dumps(doc))
    where: Any = out
    for key in path[:-1]:
        where = where.setdefault(key, {}) if isinstance(where, dict) else {}
    if isinstance(where, dict):
        where[path[-1]] = value
    return out


interface_changes = st.dictionaries(
    st.sampled_from(["name", "binding", "macAddress", "model", "pciAddress", "bootOrder", "acpiIndex", "sriov"]),
    json_values,
    max_size=3,
)


@given(
    st.tuples(st.sampled_from(VMI_PATHS), json_values).map(lambda pv: _set(vmi(), *pv))
    | interface_changes.map(
        lambda ch: _set(
            vmi(), ("spec", "domain", "devices", "interfaces"), [{"name": "red", "binding": {"name": "kvnet"}, **ch}]
        )
    )
    | st.dictionaries(st.just("kvnet.io/bonds"), hostile_text | json_values.map(json.dumps)).map(
        lambda ann: _set(vmi(), ("metadata", "annotations"), ann)
    )
)
@_settings("vmi")
def test_vmi(launcher: Pod, doc: dict[str, Any]) -> None:
    launcher.define(KUBEVIRT_DOMAIN, json.dumps(doc).encode())


def _mutate_domain(cut: int, insert: str) -> bytes:
    at = cut % (len(KUBEVIRT_DOMAIN) + 1)
    return KUBEVIRT_DOMAIN[:at] + insert.encode("utf-8", "surrogatepass") + KUBEVIRT_DOMAIN[at:]


@given(
    st.builds(
        _mutate_domain,
        st.integers(0, 1 << 16),
        st.sampled_from(["<", ">", "&", "&x;", "<!DOCTYPE d [<!ENTITY x 'y'>]>", "</devices>", '"', "\x00", "]]>"])
        | hostile_text,
    )
    | st.builds(lambda n: KUBEVIRT_DOMAIN[: n % len(KUBEVIRT_DOMAIN)], st.integers(0, 1 << 16))
    | st.binary(max_size=40)
)
@_settings("domain-xml")
def test_domain_xml(launcher: Pod, domain: bytes) -> None:
    launcher.define(domain, json.dumps(vmi()).encode())
