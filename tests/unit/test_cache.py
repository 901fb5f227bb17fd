"""The delegate cache: Multus's exact file format, both directions, and path safety."""

from __future__ import annotations

import base64
import json
import os
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kvnet.core.errors import DecodeFailure, InvalidEnvironment, UnknownContainer
from kvnet.meta import cache
from kvnet.meta.cache import CachedDelegate

# A cache as Multus 4.x writes it (Go encoding/json of []*DelegateNetConf): a clusterNetwork
# conflist in the older 4.x shape (lossy Bytes, lossless CNINetworkConfigList), a NAD
# macvlan with interface/mac/ips/default-route/cni-args, and an SR-IOV NAD with a deviceID.
MULTUS_CACHE = (
    '[{"Conf":{"ipam":{},"dns":{}},"ConfList":{"cniVersion":"0.3.1","name":"cbr0","plugins":[{"type":"bridge",'
    '"ipam":{"type":"host-local"},"dns":{}},{"type":"portmap","capabilities":{"portMappings":true},"ipam":{},'
    '"dns":{}}]},"CNINetworkConfigList":{"Name":"cbr0","CNIVersion":"0.3.1","DisableCheck":false,"DisableGC":false,'
    '"Plugins":[{"Network":{"type":"bridge","ipam":{"type":"host-local"},"dns":{}},"Bytes":"eyJ0eXBlIjoiYnJpZGdlIiwiY'
    "nJpZGdlIjoiY25pMCIsImlzRGVmYXVsdEdhdGV3YXkiOnRydWUsImlwYW0iOnsidHlwZSI6Imhvc3QtbG9jYWwiLCJzdWJuZXQiOiIxMC4yNDQuM"
    'S4wLzI0In19"},{"Network":{"type":"portmap","capabilities":{"portMappings":true},"ipam":{},"dns":{}},"Bytes":"eyJ0e'
    'XBlIjoicG9ydG1hcCIsImNhcGFiaWxpdGllcyI6eyJwb3J0TWFwcGluZ3MiOnRydWV9fQ=="}],"Bytes":"eyJjbmlWZXJzaW9uIjoiMC4zLjEiL'
    "CJuYW1lIjoiY2JyMCIsInBsdWdpbnMiOlt7InR5cGUiOiJicmlkZ2UiLCJicmlkZ2UiOiJjbmkwIiwiaXNEZWZhdWx0R2F0ZXdheSI6dHJ1ZSwia"
    "XBhbSI6eyJ0eXBlIjoiaG9zdC1sb2NhbCIsInN1Ym5ldCI6IjEwLjI0NC4xLjAvMjQifX0seyJ0eXBlIjoicG9ydG1hcCIsImNhcGFiaWxpdGllc"
    'yI6eyJwb3J0TWFwcGluZ3MiOnRydWV9fV19"},"Name":"cbr0","IsFilterV4Gateway":true,"IsFilterV6Gateway":true,"Bytes":"e'
    "yJjbmlWZXJzaW9uIjoiMC4zLjEiLCJuYW1lIjoiY2JyMCIsInBsdWdpbnMiOlt7InR5cGUiOiJicmlkZ2UiLCJpcGFtIjp7InR5cGUiOiJob3N0L"
    "WxvY2FsIn0sImRucyI6e319LHsidHlwZSI6InBvcnRtYXAiLCJjYXBhYmlsaXRpZXMiOnsicG9ydE1hcHBpbmdzIjp0cnVlfSwiaXBhbSI6e30sI"
    'mRucyI6e319XX0="},{"Conf":{"cniVersion":"0.3.1","name":"macvlan-conf","type":"macvlan","ipam":{"type":"static"},'
    '"dns":{}},"ConfList":{},"CNINetworkConfigList":{"Name":"","CNIVersion":"","DisableCheck":false,"DisableGC":false,'
    '"Plugins":null,"Bytes":null},"Name":"default/macvlan-conf","ifnameRequest":"mv0","macRequest":"c2:b0:57:49:47:f1",'
    '"ipRequest":["10.1.1.101/24"],"default-route":["10.1.1.1"],"IsFilterV4Gateway":false,"IsFilterV6Gateway":true,'
    '"Bytes":"eyJjbmlWZXJzaW9uIjoiMC4zLjEiLCJuYW1lIjoibWFjdmxhbi1jb25mIiwidHlwZSI6Im1hY3ZsYW4iLCJtYXN0ZXIiOiJldGgxIiwi'
    'bW9kZSI6ImJyaWRnZSIsImlwYW0iOnsidHlwZSI6InN0YXRpYyJ9LCJhcmdzIjp7ImNuaSI6eyJmb28iOiJiYXIifX19"},{"Conf":{"cniVers'
    'ion":"1.0.0","name":"sriov-net","type":"sriov","ipam":{},"dns":{}},"ConfList":{},"CNINetworkConfigList":{"Name":"'
    '","CNIVersion":"","DisableCheck":false,"DisableGC":false,"Plugins":null,"Bytes":null},"Name":"kube-system/sriov-n'
    'et","IsFilterV4Gateway":true,"IsFilterV6Gateway":true,"deviceID":"0000:3b:02.4","resourceName":"intel.com/sriov_n'
    'etdevice","Bytes":"eyJjbmlWZXJzaW9uIjoiMS4wLjAiLCJuYW1lIjoic3Jpb3YtbmV0IiwidHlwZSI6InNyaW92IiwidmxhbiI6MTAwLCJkZ'
    'XZpY2VJRCI6IjAwMDA6M2I6MDIuNCIsInBjaUJ1c0lEIjoiMDAwMDozYjowMi40In0="}]'
)


# The same macvlan delegate as Multus 4.3 writes it: libcni v1.3's NetworkConfigList has
# LoadOnlyInlinedPlugins, and PluginConf.MarshalJSON drops an empty dns and re-marshals
# through a map (keys sorted).
MULTUS_43_MACVLAN = (
    '{"Conf":{"cniVersion":"0.3.1","ipam":{"type":"static"},"name":"macvlan-conf","type":"macvlan"},"ConfList":{},'
    '"CNINetworkConfigList":{"Name":"","CNIVersion":"","DisableCheck":false,"DisableGC":false,'
    '"LoadOnlyInlinedPlugins":false,"Plugins":null,"Bytes":null},"Name":"default/macvlan-conf","ifnameRequest":"mv0",'
    '"macRequest":"c2:b0:57:49:47:f1","ipRequest":["10.1.1.101/24"],"default-route":["10.1.1.1"],'
    '"IsFilterV4Gateway":false,"IsFilterV6Gateway":true,'
    '"Bytes":"eyJjbmlWZXJzaW9uIjoiMC4zLjEiLCJuYW1lIjoibWFjdmxhbi1jb25mIiwidHlwZSI6Im1hY3ZsYW4iLCJtYXN0ZXIiOiJldGgxIiwi'
    'bW9kZSI6ImJyaWRnZSIsImlwYW0iOnsidHlwZSI6InN0YXRpYyJ9LCJhcmdzIjp7ImNuaSI6eyJmb28iOiJiYXIifX19"}'
)


def test_multus_written_cache_parses() -> None:
    first, macvlan, sriov = cache.decode(MULTUS_CACHE.encode())
    # the older 4.x conflist comes back lossless (bridge name and subnet restored)
    assert first.master and first.is_conflist and first.name == "cbr0"
    assert first.conf == {
        "cniVersion": "0.3.1",
        "name": "cbr0",
        "plugins": [
            {
                "type": "bridge",
                "bridge": "cni0",
                "isDefaultGateway": True,
                "ipam": {"type": "host-local", "subnet": "10.244.1.0/24"},
            },
            {"type": "portmap", "capabilities": {"portMappings": True}},
        ],
    }
    assert first.is_filter_v4_gateway and first.is_filter_v6_gateway
    assert not macvlan.master and macvlan.name == "default/macvlan-conf"
    assert macvlan.ifname_request == "mv0"
    assert macvlan.mac_request == "c2:b0:57:49:47:f1"
    assert macvlan.ip_request == ("10.1.1.101/24",)
    assert macvlan.gateway_request == ("10.1.1.1",)
    assert not macvlan.is_filter_v4_gateway and macvlan.is_filter_v6_gateway
    assert macvlan.conf["args"] == {"cni": {"foo": "bar"}} and macvlan.plugin_type == "macvlan"
    assert sriov.device_id == "0000:3b:02.4" and sriov.resource_name == "intel.com/sriov_netdevice"
    assert sriov.conf["pciBusID"] == "0000:3b:02.4"


def test_ours_matches_go_tags_exactly() -> None:
    d = CachedDelegate(
        name="default/macvlan-conf",
        conf={
            "cniVersion": "0.3.1",
            "name": "macvlan-conf",
            "type": "macvlan",
            "master": "eth1",
            "mode": "bridge",
            "ipam": {"type": "static"},
            "args": {"cni": {"foo": "bar"}},
        },
        ifname_request="mv0",
        mac_request="c2:b0:57:49:47:f1",
        ip_request=("10.1.1.101/24",),
        gateway_request=("10.1.1.1",),
        is_filter_v4_gateway=False,
        is_filter_v6_gateway=True,
    )
    multus = json.loads(MULTUS_43_MACVLAN)
    ours = cache.encode_delegate(d)
    assert list(ours) == list(multus)  # same keys in Go's field order
    assert ours == multus  # and the same values, Bytes included
    assert json.dumps(ours, separators=(",", ":")) == MULTUS_43_MACVLAN  # byte for byte
    # a 4.3 cache reads back as the older 4.x one does
    assert cache.decode(f"[{MULTUS_43_MACVLAN}]".encode()) == cache.decode(
        json.dumps([json.loads(MULTUS_CACHE)[1]]).encode()
    )


def test_conflist_delegate_shape() -> None:
    conf = {
        "cniVersion": "1.0.0",
        "name": "chain",
        "plugins": [
            {"type": "bridge", "bridge": "br9", "ipam": {"type": "host-local", "subnet": "10.9.0.0/24"}},
            {"type": "tuning", "capabilities": {"mac": True}, "sysctl": {"net.core.somaxconn": "500"}},
        ],
    }
    enc = cache.encode_delegate(CachedDelegate(name="ns/chain", conf=conf, master=True))
    # Multus's LoadDelegateNetConf unmarshals the conflist into Conf as well
    assert enc["Conf"] == {"cniVersion": "1.0.0", "ipam": {}, "name": "chain"}
    assert enc["ConfList"] == {
        "cniVersion": "1.0.0",
        "name": "chain",
        "plugins": [
            {"ipam": {"type": "host-local"}, "type": "bridge"},
            {"capabilities": {"mac": True}, "ipam": {}, "type": "tuning"},
        ],
    }
    assert list(enc["ConfList"]["plugins"][1]) == ["capabilities", "ipam", "type"]
    assert enc["CNINetworkConfigList"]["Plugins"] is None
    assert "default-route" not in enc and "ifnameRequest" not in enc
    assert json.loads(base64.b64decode(enc["Bytes"])) == conf


def test_round_trip_through_file(tmp_path: Path) -> None:
    delegates = cache.decode(MULTUS_CACHE.encode())
    path = cache.save(tmp_path / "multus", "abc123", delegates)
    assert path == tmp_path / "multus" / "abc123"
    assert oct(path.stat().st_mode & 0o777) == "0o600"
    assert oct(path.parent.stat().st_mode & 0o777) == "0o700"
    again = cache.load(tmp_path / "multus", "abc123")
    assert again == delegates
    cache.remove(tmp_path / "multus", "abc123")
    assert cache.load(tmp_path / "multus", "abc123") is None
    cache.remove(tmp_path / "multus", "abc123")  # idempotent
    assert os.listdir(tmp_path / "multus") == []


@pytest.mark.parametrize("container_id", ["../etc", "..", ".", "a/b", "/abs", ".hidden", "a b", "x\n", "-x", "a\x00"])
@pytest.mark.parametrize("op", ["save", "load", "remove"])
def test_escaping_container_ids_rejected(tmp_path: Path, container_id: str, op: str) -> None:
    with pytest.raises(InvalidEnvironment) as err:
        if op == "save":
            cache.save(tmp_path, container_id, [CachedDelegate(name="n", conf={"type": "bridge"})])
        else:
            getattr(cache, op)(tmp_path, container_id)
    # libcni's ValidateContainerID: the message, the ID in the details, code 4
    assert (err.value.msg, err.value.details, err.value.cni_code) == (
        "invalid characters in containerID",
        container_id,
        4,
    )
    assert list(tmp_path.iterdir()) == []


def test_missing_container_id_rejected(tmp_path: Path) -> None:
    with pytest.raises(UnknownContainer) as err:
        cache.save(tmp_path, "", [CachedDelegate(name="n", conf={"type": "bridge"})])
    assert (err.value.msg, err.value.cni_code) == ("missing containerID", 3)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("data", "needle"),
    [
        (b"{", "failed to load netconf"),
        (b"[]", "not a non-empty JSON array"),
        (b"[1]", "delegate #0 is not an object"),
        (b'[{"Bytes":"%%%"}]', "delegate #0 Bytes is not base64 JSON"),
        (b'[{"Bytes":12}]', "delegate #0 Bytes is not a base64 string"),
        (b'[{"Bytes":"WzFd"}]', "delegate #0 Bytes is not a JSON object"),
    ],
)
def test_malformed_cache(data: bytes, needle: str) -> None:
    with pytest.raises(DecodeFailure) as err:
        cache.decode(data)
    assert needle in err.value.msg and err.value.cni_code == 6


def test_go_keys_match_case_insensitively() -> None:
    raw = [{"bytes": base64.b64encode(b'{"type":"bridge","name":"b"}').decode(), "name": "ns/b", "IFNAMEREQUEST": "x0"}]
    (d,) = cache.decode(json.dumps(raw).encode())
    assert d.name == "ns/b" and d.ifname_request == "x0" and d.conf["type"] == "bridge"


_json = st.recursive(
    st.none() | st.booleans() | st.integers(-(10**6), 10**6) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
    max_leaves=8,
)


@given(
    extra=st.dictionaries(
        st.text(min_size=1, max_size=6).filter(lambda k: k not in ("type", "plugins")), _json, max_size=4
    ),
    name=st.text(max_size=12),
    ifname=st.text(alphabet="abcdefgh0123", max_size=8),
    ips=st.lists(st.from_regex(r"10\.0\.0\.[0-9]{1,2}/24", fullmatch=True), max_size=2),
    gws=st.none() | st.lists(st.sampled_from(["10.0.0.1", "fd00::1"]), max_size=2),
    v4=st.booleans(),
    v6=st.booleans(),
)
def test_encode_decode_round_trip(extra, name, ifname, ips, gws, v4, v6) -> None:  # type: ignore[no-untyped-def]
    d = CachedDelegate(
        name=name,
        conf={**extra, "type": "bridge"},
        ifname_request=ifname,
        ip_request=tuple(ips),
        gateway_request=None if gws is None else tuple(gws),
        is_filter_v4_gateway=v4,
        is_filter_v6_gateway=v6,
        master=True,
    )
    (back,) = cache.decode(cache.encode([d]))
    assert back == d


# --- a DEL rebuilt from the pod whose delegates cannot read their call --------------------


def test_rebuilt_del_is_moot_only_when_nothing_was_recorded(tmp_path: Path) -> None:
    from kvnet.cni import libcni_cache

    cid = "c" * 64
    assert cache.rebuilt_del_is_moot(tmp_path, cid, [7])  # a bad IPAM subnet, a missing plugin
    assert cache.rebuilt_del_is_moot(tmp_path, cid, [7, 1, 6])
    assert not cache.rebuilt_del_is_moot(tmp_path, cid, [])  # nothing failed: nothing to excuse
    assert not cache.rebuilt_del_is_moot(tmp_path, cid, [7, 11])  # try again later: a retry may work
    assert not cache.rebuilt_del_is_moot(tmp_path, cid, [102])
    # a libcni result of the container: an ADD was recorded, something may be left
    libcni_cache.write_result(tmp_path, libcni_cache.CachedAttachment("blue", cid, "net1", b"{}"))
    assert not cache.rebuilt_del_is_moot(tmp_path, cid, [7])
    assert cache.rebuilt_del_is_moot(tmp_path, "d" * 64, [7])  # another container's result
    # the delegate cache of the container
    cache.save(tmp_path, "e" * 64, [])
    assert not cache.rebuilt_del_is_moot(tmp_path, "e" * 64, [7])
    assert cache.rebuilt_del_is_moot(tmp_path, "a" * 300, [7])  # an ID no ADD accepts
