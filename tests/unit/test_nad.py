"""NAD → delegate: spec.config, name injection, conflists, the confDir fallback, bad configs."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kvnet.core.errors import InvalidConfig, KvnetError, NetworkNotFound
from kvnet.meta.nad import Delegate, delegate_from_conf_dir, delegate_from_nad


def nad(
    name: str = "blue",
    namespace: str = "pods",
    config: Any = None,
    annotations: dict[str, str] | None = None,
    spec: Any = "unset",
) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name, "namespace": namespace}
    if annotations:
        meta["annotations"] = annotations
    obj: dict[str, Any] = {"apiVersion": "k8s.cni.cncf.io/v1", "kind": "NetworkAttachmentDefinition", "metadata": meta}
    if spec != "unset":
        obj["spec"] = spec
    elif config is not None:
        obj["spec"] = {"config": config if isinstance(config, str) else json.dumps(config)}
    return obj


class FakeDir:
    """A conf dir as two callables: what ``delegate_from_*`` read and list."""

    def __init__(self, files: dict[str, Any]) -> None:
        self.files = {k: (v if isinstance(v, bytes) else json.dumps(v).encode()) for k, v in files.items()}
        self.read: list[str] = []

    def read_file(self, path: str) -> bytes:
        self.read.append(path)
        if path not in self.files:
            raise FileNotFoundError(path)
        return self.files[path]

    def list_dir(self, path: str) -> Sequence[str]:
        if path in self.files:
            raise NotADirectoryError(path)
        names = [k[len(path) + 1 :] for k in self.files if k.startswith(path + "/")]
        if not names:
            raise FileNotFoundError(path)
        return [n for n in names if "/" not in n]


BRIDGE = {"cniVersion": "1.0.0", "name": "blue-net", "type": "bridge", "bridge": "br-blue"}
CONFLIST = {"cniVersion": "1.0.0", "name": "chain", "plugins": [{"type": "ptp"}, {"type": "tuning"}]}


def test_spec_config_kept_with_its_name() -> None:
    got = delegate_from_nad(nad(config=BRIDGE), "/etc/cni/multus/net.d")
    assert got == Delegate(name="pods/blue", config=BRIDGE, resource_name=None)
    assert got.conf_name == "blue-net" and not got.is_conflist


@pytest.mark.parametrize("name_value", [None, ""])
def test_name_injected_when_absent(name_value: str | None) -> None:
    config: dict[str, Any] = {"cniVersion": "1.0.0", "type": "macvlan", "master": "eth0"}
    if name_value is not None:
        config["name"] = name_value
    got = delegate_from_nad(nad(name="red", config=config), "/unused")
    assert got.config == {**config, "name": "red"}
    assert got.name == "pods/red"


def test_conflist_and_resource_name() -> None:
    got = delegate_from_nad(
        nad(config=CONFLIST, annotations={"k8s.v1.cni.cncf.io/resourceName": "intel.com/sriov"}), "/x"
    )
    assert got.is_conflist and got.config == CONFLIST
    assert got.resource_name == "intel.com/sriov"


@pytest.mark.parametrize("spec", [None, {}, {"config": ""}])
def test_empty_spec_reads_conf_dir(spec: Any) -> None:
    d = FakeDir(
        {
            "/cni/00-other.conf": {"name": "other", "type": "ptp"},
            "/cni/10-blue.conflist": {"cniVersion": "1.0.0", "name": "blue", "plugins": [{"type": "bridge"}]},
            "/cni/README": b"not a conf",
        }
    )
    got = delegate_from_nad(nad(spec=spec), "/cni", read_file=d.read_file, list_dir=d.list_dir)
    assert got == Delegate(
        name="pods/blue", config={"cniVersion": "1.0.0", "name": "blue", "plugins": [{"type": "bridge"}]}
    )
    assert "/cni/README" not in d.read


def test_empty_spec_from_real_files(tmp_path: Path) -> None:
    (tmp_path / "50-blue.conf").write_text(json.dumps({"name": "blue", "type": "bridge"}))
    (tmp_path / "sub.conf").mkdir()
    got = delegate_from_nad(nad(spec={}), str(tmp_path))
    assert got.config == {"name": "blue", "type": "bridge"}


W = "net-attach-def pods/blue: "
FROM_FILE = W + "GetCNIConfig: err in GetCNIConfigFromFile: "
FROM_SPEC = W + "GetCNIConfig: err in getCNIConfigFromSpec: failed to unmarshal Spec.Config: "


@pytest.mark.parametrize(
    ("obj", "files", "error", "message"),
    [
        (nad(config="{"), {}, InvalidConfig, FROM_SPEC + "unexpected end of JSON input"),
        (
            nad(config="[1]"),
            {},
            InvalidConfig,
            FROM_SPEC + "json: cannot unmarshal array into Go value of type map[string]interface {}",
        ),
        (
            nad(config='{"name": "x"}'),
            {},
            InvalidConfig,
            W
            + "LoadDelegateNetConf: failed with: LoadDelegateNetConfList: delegate must have the 'type' or 'plugin' field",
        ),
        (
            nad(config='{"name": "x", "plugins": []}'),
            {},
            InvalidConfig,
            W
            + "LoadDelegateNetConf: failed with: LoadDelegateNetConfList: delegate must have the 'type' or 'plugin' field",
        ),
        (
            nad(config='{"name": "x", "plugins": [{}]}'),
            {},
            InvalidConfig,
            W
            + "LoadDelegateNetConf: failed with: LoadDelegateNetConfList: a plugin delegate must have the 'type' field",
        ),
        (
            nad(config='{"name": "../x", "type": "bridge"}'),
            {},
            InvalidConfig,
            W + "invalid characters found in network name '../x'",
        ),
        (nad(spec="x"), {}, InvalidConfig, W + "spec is a JSON string, expected an object with a config string"),
        (
            nad(spec={"config": {"type": "bridge"}}),
            {},
            InvalidConfig,
            W + "spec.config must be a string holding CNI JSON, got a JSON object",
        ),
        (
            nad(name="../../etc", config=BRIDGE),
            {},
            InvalidConfig,
            "net-attach-def pods/../../etc: invalid object name '../../etc'",
        ),
        (nad(spec={}), {}, NetworkNotFound, FROM_FILE + "No networks found in /cni"),
        (
            nad(spec={}),
            {"/cni/a.conf": {"name": "a", "type": "x"}},
            NetworkNotFound,
            FROM_FILE + "no network available in the name blue in cni dir /cni",
        ),
        (
            nad(spec={}),
            {"/cni/a.conf": b"{bad"},
            InvalidConfig,
            FROM_FILE
            + "Error loading CNI config file /cni/a.conf: error parsing configuration: invalid character 'b' at offset 2: Expecting property name enclosed in double quotes",
        ),
        (
            nad(spec={}),
            {"/cni/b.conf": {"name": "blue"}},
            InvalidConfig,
            FROM_FILE + "Error loading CNI config file /cni/b.conf: no 'type'; perhaps this is a .conflist?",
        ),
        (
            nad(spec={}),
            {"/cni/b.conflist": {"plugins": [{"type": "x"}]}},
            InvalidConfig,
            FROM_FILE + "Error loading CNI conflist file /cni/b.conflist: error parsing configuration list: no name",
        ),
        (
            nad(spec={}),
            {"/cni/b.conflist": {"name": "blue"}},
            InvalidConfig,
            FROM_FILE
            + "Error loading CNI conflist file /cni/b.conflist: error parsing configuration list: no 'plugins' key",
        ),
        (
            nad(spec={}),
            {"/cni/b.conflist": {"name": "blue", "plugins": []}},
            InvalidConfig,
            FROM_FILE
            + "Error loading CNI conflist file /cni/b.conflist: error parsing configuration list: no plugins in list",
        ),
    ],
)
def test_bad_nads(obj: dict[str, Any], files: dict[str, Any], error: type[Exception], message: str) -> None:
    d = FakeDir(files)
    with pytest.raises(error) as info:
        delegate_from_nad(obj, "/cni", read_file=d.read_file, list_dir=d.list_dir)
    assert type(info.value) is error
    assert info.value.msg == message  # type: ignore[attr-defined]


# --- clusterNetwork / defaultNetworks from files -------------------------------------------


def test_conf_dir_by_network_name() -> None:
    d = FakeDir(
        {"/cni/00-a.conf": {"name": "a", "type": "ptp"}, "/cni/05-k8s.conflist": CONFLIST | {"name": "k8s-pod-network"}}
    )
    got = delegate_from_conf_dir("k8s-pod-network", "/cni", read_file=d.read_file, list_dir=d.list_dir)
    assert got.name == "k8s-pod-network" and got.is_conflist


def test_conf_dir_path_forms() -> None:
    d = FakeDir(
        {
            "/etc/cni/net.d/10-flannel.conflist": CONFLIST | {"name": "cbr0"},
            "/etc/cni/net.d/20-b.conf": {"name": "b", "type": "bridge"},
            "/etc/x/one.conf": {"name": "one", "type": "macvlan"},
        }
    )
    # a directory: its first conf file
    assert (
        delegate_from_conf_dir("/etc/cni/net.d", "/unused", read_file=d.read_file, list_dir=d.list_dir).name == "cbr0"
    )
    # a file path
    got = delegate_from_conf_dir("/etc/x/one.conf", "/unused", read_file=d.read_file, list_dir=d.list_dir)
    assert got == Delegate(name="one", config={"name": "one", "type": "macvlan"})


@pytest.mark.parametrize(
    ("name", "files", "error", "message"),
    [
        (
            "missing",
            {"/cni/a.conf": {"name": "a", "type": "x"}},
            NetworkNotFound,
            "getNetDelegate: cannot find network: missing",
        ),
        ("/nowhere/x.conf", {}, NetworkNotFound, "getNetDelegate: cannot find network: /nowhere/x.conf"),
        (
            "/etc/x/one.conf",
            {"/etc/x/one.conf": {"name": "one"}},
            InvalidConfig,
            "error loading CNI config file /etc/x/one.conf: no 'type'; perhaps this is a .conflist?",
        ),
        (
            "/etc/x/one.conf",
            {"/etc/x/one.conf": {"name": "a b", "type": "x"}},
            InvalidConfig,
            "network file /etc/x/one.conf: invalid characters found in network name 'a b'",
        ),
    ],
)
def test_conf_dir_errors(name: str, files: dict[str, Any], error: type[Exception], message: str) -> None:
    d = FakeDir(files)
    with pytest.raises(error) as info:
        delegate_from_conf_dir(name, "/cni", read_file=d.read_file, list_dir=d.list_dir)
    assert type(info.value) is error
    assert info.value.msg == message  # type: ignore[attr-defined]


def test_crd_matches_upstream_names() -> None:
    import yaml

    crd = yaml.safe_load(
        (Path(__file__).resolve().parents[2] / "crds" / "network-attachment-definition.yaml").read_text()
    )
    assert crd["apiVersion"] == "apiextensions.k8s.io/v1" and crd["kind"] == "CustomResourceDefinition"
    assert crd["metadata"]["name"] == "network-attachment-definitions.k8s.cni.cncf.io"
    spec = crd["spec"]
    assert (spec["group"], spec["scope"]) == ("k8s.cni.cncf.io", "Namespaced")
    assert spec["names"] == {
        "plural": "network-attachment-definitions",
        "singular": "network-attachment-definition",
        "kind": "NetworkAttachmentDefinition",
        "shortNames": ["net-attach-def"],
    }
    (version,) = spec["versions"]
    assert (version["name"], version["served"], version["storage"]) == ("v1", True, True)
    props = version["schema"]["openAPIV3Schema"]["properties"]
    assert props["spec"]["properties"]["config"]["type"] == "string"


# --- fuzz: any NAD object gives a delegate or a kvnet error ---------------------------------------


conf_values = st.recursive(
    st.none() | st.booleans() | st.integers(-1, 2) | st.sampled_from(["", "bridge", "blue", "a b"]),
    lambda children: (
        st.lists(children, max_size=2)
        | st.dictionaries(st.sampled_from(["name", "type", "plugins", "cniVersion"]), children, max_size=3)
    ),
    max_leaves=8,
)


@settings(max_examples=150, deadline=None)
@given(
    st.one_of(st.none(), st.text(max_size=5), conf_values.map(json.dumps)),
    st.sampled_from(["blue", "", "Blue", None]),
)
def test_any_nad_gives_delegate_or_error(config: str | None, name: str | None) -> None:
    obj = {"metadata": {"name": name, "namespace": "pods"}, "spec": {"config": config}}
    d = FakeDir({"/cni/a.conf": {"name": "blue", "type": "bridge"}})
    try:
        got = delegate_from_nad(obj, "/cni", read_file=d.read_file, list_dir=d.list_dir)
    except KvnetError as err:
        assert err.cni_code in (7, 101) and err.msg
    else:
        assert got.name == f"pods/{name}" and got.conf_name
