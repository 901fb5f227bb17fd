"""The meta-plugin config: Multus's keys (any case), defaults and LoadNetConf messages."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kvnet.core.errors import DecodeFailure, InvalidConfig, KvnetError
from kvnet.meta.config import DEFAULT_DELEGATE_TIMEOUT, KvnetOptions, MultusConfig, parse_multus_config

BRIDGE = {
    "cniVersion": "1.0.0",
    "name": "cbr0",
    "type": "bridge",
    "ipam": {"type": "host-local", "subnet": "10.1.0.0/24"},
}


def test_defaults_with_delegates() -> None:
    conf = parse_multus_config(
        json.dumps({"name": "multus-cni-network", "type": "kvnet", "delegates": [BRIDGE]}).encode()
    )
    assert conf == MultusConfig(
        name="multus-cni-network",
        cni_version="",
        kubeconfig=None,
        cluster_network=None,
        default_networks=(),
        delegates=(BRIDGE,),
        conf_dir="/etc/cni/multus/net.d",
        cni_dir="/var/lib/cni/multus",
        bin_dir="/opt/cni/bin",
        log_file=None,
        log_level="panic",
        log_to_stderr=True,
        log_options=None,
        readiness_indicator_file=None,
        namespace_isolation=False,
        global_namespaces=("default",),
        system_namespaces=("kube-system",),
        multus_namespace="kube-system",
        runtime_config={},
        capabilities={},
        retry_delete_on_error=False,
        kvnet=KvnetOptions(),
        raw={"name": "multus-cni-network", "type": "kvnet", "delegates": [BRIDGE]},
    )


def test_every_key_any_case() -> None:
    raw: dict[str, Any] = {
        "NAME": "m",
        "Type": "multus",
        "CNIVERSION": "0.3.1",
        "KubeConfig": "/etc/kube.conf",
        "clusternetwork": "k8s-pod-network",
        "DefaultNetworks": ["extra", "/etc/x.conf"],
        "CONFDIR": "/c",
        "cnidir": "/cache",
        "BinDir": "/b",
        "LOGFILE": "/var/log/multus.log",
        "LogLevel": "DEBUG",
        "LogToStderr": False,
        "logoptions": {"maxAge": 5, "compress": True},
        "ReadinessIndicatorFile": "/run/ready",
        "NamespaceIsolation": True,
        "GlobalNamespaces": "default, shared ,infra",
        "SystemNamespaces": ["kube-system", "infra"],
        "MultusNamespace": "multus",
        "RuntimeConfig": {"portMappings": []},
        "Capabilities": {"portMappings": True},
        "somethingElse": 1,
    }
    conf = parse_multus_config(raw)
    assert (conf.name, conf.cni_version, conf.kubeconfig, conf.cluster_network) == (
        "m",
        "0.3.1",
        "/etc/kube.conf",
        "k8s-pod-network",
    )
    assert conf.default_networks == ("extra", "/etc/x.conf")
    assert (conf.conf_dir, conf.cni_dir, conf.bin_dir) == ("/c", "/cache", "/b")
    assert (conf.log_file, conf.log_level, conf.log_to_stderr) == ("/var/log/multus.log", "debug", False)
    assert conf.log_options == {"maxAge": 5, "compress": True}
    assert conf.readiness_indicator_file == "/run/ready"
    assert conf.namespace_isolation is True
    assert conf.global_namespaces == ("default", "shared", "infra")
    assert conf.system_namespaces == ("kube-system", "infra")
    assert conf.multus_namespace == "multus"
    assert conf.runtime_config == {"portMappings": []}
    assert conf.capabilities == {"portMappings": True}
    assert conf.delegates == ()
    assert conf.raw is raw or conf.raw == raw


def test_later_key_wins_like_go() -> None:
    # Go's decoder assigns keys in order, an exact or case-folded match alike
    assert parse_multus_config({"delegates": [BRIDGE], "confDir": "/a", "CONFDIR": "/b"}).conf_dir == "/b"
    assert parse_multus_config({"delegates": [BRIDGE], "CONFDIR": "/b", "confDir": "/a"}).conf_dir == "/a"


@pytest.mark.parametrize(
    ("level", "expected"), [("Verbose", "verbose"), ("error", "error"), ("PANIC", "panic"), ("chatty", "panic")]
)
def test_log_level(level: str, expected: str) -> None:
    assert parse_multus_config({"delegates": [BRIDGE], "logLevel": level}).log_level == expected


def test_conflist_delegate_accepted() -> None:
    conflist = {"cniVersion": "1.0.0", "name": "chain", "plugins": [{"type": "ptp"}, {"type": "portmap"}]}
    assert parse_multus_config({"delegates": [conflist, BRIDGE]}).delegates == (conflist, BRIDGE)


def test_namespace_rules() -> None:
    conf = parse_multus_config({"delegates": [BRIDGE], "namespaceIsolation": True, "globalNamespaces": "shared"})
    assert conf.namespace_allowed("a", "a")
    assert conf.namespace_allowed("a", "shared")
    assert not conf.namespace_allowed("a", "default")  # globalNamespaces replaces the default list
    open_conf = parse_multus_config({"delegates": [BRIDGE]})
    assert open_conf.namespace_allowed("a", "b")
    assert open_conf.is_system_namespace("kube-system") and not open_conf.is_system_namespace("a")


L = "LoadNetConf: "
DELEGATE = L + "failed to load delegate {} config: "


@pytest.mark.parametrize(
    ("raw", "error", "message"),
    [
        (b"{", DecodeFailure, L + "failed to load netconf: unexpected end of JSON input"),
        (
            b"[]",
            DecodeFailure,
            L + "failed to load netconf: json: cannot unmarshal array into Go value of type types.NetConf",
        ),
        ({"name": "m"}, InvalidConfig, L + "at least one delegate/clusterNetwork must be specified"),
        ({"delegates": []}, InvalidConfig, L + "at least one delegate/clusterNetwork must be specified"),
        (
            {"delegates": [{"name": "x"}]},
            InvalidConfig,
            DELEGATE.format(0)
            + "LoadDelegateNetConf: failed with: LoadDelegateNetConfList: delegate must have the 'type' or 'plugin' field",
        ),
        (
            {"delegates": [BRIDGE, {"name": "x", "plugins": [{"name": "p"}]}]},
            InvalidConfig,
            DELEGATE.format(1)
            + "LoadDelegateNetConf: failed with: LoadDelegateNetConfList: a plugin delegate must have the 'type' field",
        ),
        (
            {"delegates": [{"type": 5}]},
            InvalidConfig,
            DELEGATE.format(0)
            + "LoadDelegateNetConf: error unmarshalling delegate config: json: cannot unmarshal number into Go struct field NetConf.type of type string",
        ),
        (
            {"delegates": BRIDGE},
            DecodeFailure,
            L
            + "failed to load netconf: json: cannot unmarshal object into Go struct field NetConf.delegates of type []map[string]interface {}",
        ),
        (
            {"delegates": ["x"]},
            DecodeFailure,
            L
            + "failed to load netconf: json: cannot unmarshal string into Go struct field NetConf.delegates of type map[string]interface {}",
        ),
        (
            {"delegates": [BRIDGE], "confDir": 1},
            DecodeFailure,
            L
            + "failed to load netconf: json: cannot unmarshal number into Go struct field NetConf.confDir of type string",
        ),
        (
            {"delegates": [BRIDGE], "namespaceIsolation": "true"},
            DecodeFailure,
            L
            + "failed to load netconf: json: cannot unmarshal string into Go struct field NetConf.namespaceIsolation of type bool",
        ),
        (
            {"delegates": [BRIDGE], "systemNamespaces": "kube-system"},
            DecodeFailure,
            L
            + "failed to load netconf: json: cannot unmarshal string into Go struct field NetConf.systemNamespaces of type []string",
        ),
        (
            {"delegates": [BRIDGE], "capabilities": {"ips": "yes"}},
            DecodeFailure,
            L
            + "failed to load netconf: json: cannot unmarshal string into Go struct field NetConf.capabilities of type bool",
        ),
        (
            {"delegates": [BRIDGE], "logOptions": {"maxAge": "5"}},
            DecodeFailure,
            L
            + "failed to load netconf: json: cannot unmarshal string into Go struct field NetConf.logOptions.maxAge of type int",
        ),
        (
            {"delegates": [BRIDGE], "logOptions": {"Compress": 1}},
            DecodeFailure,
            L
            + "failed to load netconf: json: cannot unmarshal number into Go struct field NetConf.logOptions.compress of type bool",
        ),
        (
            {"delegates": [BRIDGE], "runtimeConfig": []},
            DecodeFailure,
            L
            + "failed to load netconf: json: cannot unmarshal array into Go struct field NetConf.runtimeConfig of type types.RuntimeConfig",
        ),
    ],
)
def test_errors(raw: Any, error: type[Exception], message: str) -> None:
    with pytest.raises(error) as info:
        parse_multus_config(raw)
    assert type(info.value) is error
    assert info.value.msg == message  # type: ignore[attr-defined]
    assert info.value.to_cni("1.0.0")["code"] == (6 if error is DecodeFailure else 7)  # type: ignore[attr-defined]


# --- fuzz: any JSON object gives a config or a kvnet error -------------------------------------


CONFIG_KEYS = [
    "name",
    "type",
    "cniVersion",
    "kubeconfig",
    "clusterNetwork",
    "defaultNetworks",
    "delegates",
    "confDir",
    "cniDir",
    "binDir",
    "logLevel",
    "logToStderr",
    "logOptions",
    "readinessindicatorfile",
    "namespaceIsolation",
    "globalNamespaces",
    "systemNamespaces",
    "multusNamespace",
    "runtimeConfig",
    "capabilities",
    "plugins",
    "Delegates",
]
values = st.recursive(
    st.none() | st.booleans() | st.integers(-3, 3) | st.sampled_from(["", "x", "bridge", "/k", "a,b"]),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.sampled_from(CONFIG_KEYS), children, max_size=4)
    ),
    max_leaves=12,
)


@settings(max_examples=150, deadline=None)
@given(st.dictionaries(st.sampled_from(CONFIG_KEYS), values, max_size=8))
def test_any_config_is_parsed_or_refused(raw: dict[str, Any]) -> None:
    try:
        conf = parse_multus_config(json.dumps(raw).encode())
    except KvnetError as err:
        assert err.cni_code in (6, 7) and err.msg
    else:
        assert conf.delegates or conf.cluster_network


# --- kvnet's own keys: typed once, a wrong value is an error naming the key ---------------


@pytest.mark.parametrize(
    ("keys", "options"),
    [
        ({}, KvnetOptions()),
        ({"delegateTimeout": 2}, KvnetOptions(delegate_timeout=2.0)),
        ({"DelegateTimeout": 0.5}, KvnetOptions(delegate_timeout=0.5)),  # Go's case-insensitive match
        ({"inProcessBinding": False}, KvnetOptions(in_process_binding=False)),
        (
            {"podResourcesSocket": "/k.sock", "deviceInfoDir": "/d"},
            KvnetOptions(pod_resources_socket="/k.sock", device_info_dir="/d"),
        ),
    ],
)
def test_kvnet_options(keys: dict[str, Any], options: KvnetOptions) -> None:
    conf = parse_multus_config({"name": "n", "type": "kvnet", "delegates": [BRIDGE], **keys})
    assert conf.kvnet == options
    assert KvnetOptions().delegate_timeout == DEFAULT_DELEGATE_TIMEOUT


@pytest.mark.parametrize(
    ("keys", "error", "message"),
    [
        (
            {"delegateTimeout": 0},
            InvalidConfig,
            "LoadNetConf: delegateTimeout must be more than 0 and at most 86400 seconds, not 0",
        ),
        ({"delegateTimeout": -1}, InvalidConfig, "delegateTimeout must be more than 0"),
        (
            {"delegateTimeout": 2**31},
            InvalidConfig,
            "delegateTimeout must be more than 0 and at most 86400 seconds, not 2147483648",
        ),
        (
            {"delegateTimeout": "60"},
            DecodeFailure,
            "cannot unmarshal string into Go struct field NetConf.delegateTimeout of type float64",
        ),
        ({"delegateTimeout": True}, DecodeFailure, "NetConf.delegateTimeout of type float64"),
        (
            {"inProcessBinding": "no"},
            DecodeFailure,
            "cannot unmarshal string into Go struct field NetConf.inProcessBinding of type bool",
        ),
        ({"podResourcesSocket": 1}, DecodeFailure, "NetConf.podResourcesSocket of type string"),
        ({"retryDeleteOnError": "yes"}, DecodeFailure, "NetConf.retryDeleteOnError of type bool"),
    ],
)
def test_kvnet_options_refused(keys: dict[str, Any], error: type[KvnetError], message: str) -> None:
    with pytest.raises(error, match=re.escape(message)):
        parse_multus_config({"name": "n", "type": "kvnet", "delegates": [BRIDGE], **keys})


def test_delegates_are_ignored_beside_cluster_network() -> None:
    """Multus's LoadNetConf loads delegates only without clusterNetwork: beside it they are
    ignored, even a delegate Multus would refuse on its own (no type); their JSON types
    still count."""
    conf = parse_multus_config(
        {"clusterNetwork": "main", "kubeconfig": "/k", "delegates": [BRIDGE, {"name": "no-type"}]}
    )
    assert conf.cluster_network == "main" and conf.delegates == ()
    with pytest.raises(DecodeFailure):
        parse_multus_config({"clusterNetwork": "main", "kubeconfig": "/k", "delegates": ["not an object"]})


def test_cluster_network_without_kubeconfig_is_read() -> None:
    """Multus's LoadNetConf accepts it; only the commands that need the cluster network
    fail (GetDefaultNetworks), tested with the commands."""
    conf = parse_multus_config({"clusterNetwork": "x"})
    assert conf.cluster_network == "x" and conf.kubeconfig is None
