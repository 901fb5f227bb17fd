"""CNI result conversion between 0.1.0 … 1.1.0: tables and hypothesis round trips."""

from __future__ import annotations

import copy
import ipaddress
import json
import re
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kvnet.cni.results import ALL_VERSIONS, convert_result, empty_result, go_typed, result_version, version_key
from kvnet.core.errors import DecodeFailure, IncompatibleVersion

# a loaded CI machine must not turn slowness into hypothesis failures
NO_DEADLINE = settings(deadline=None, max_examples=60, suppress_health_check=[HealthCheck.too_slow])

R11: dict[str, Any] = {
    "cniVersion": "1.1.0",
    "interfaces": [
        {"name": "br0", "mac": "aa:bb:cc:dd:ee:01"},
        {
            "name": "eth0",
            "mac": "aa:bb:cc:dd:ee:02",
            "mtu": 1400,
            "sandbox": "/var/run/netns/x",
            "socketPath": "/run/vhost.sock",
            "pciID": "0000:03:00.1",
        },
    ],
    "ips": [
        {"interface": 1, "address": "10.0.0.2/24", "gateway": "10.0.0.1"},
        {"interface": 1, "address": "10.0.1.2/24"},
        {"interface": 1, "address": "fd00::2/64", "gateway": "fd00::1"},
    ],
    "routes": [
        {"dst": "0.0.0.0/0", "gw": "10.0.0.1", "mtu": 1300, "advmss": 1200, "priority": 10, "table": 100, "scope": 0},
        {"dst": "::/0", "gw": "fd00::1"},
    ],
    "dns": {"nameservers": ["10.0.0.53"], "domain": "example.org", "search": ["example.org"], "options": ["ndots:2"]},
}

R10 = {
    "cniVersion": "1.0.0",
    "interfaces": [
        {"name": "br0", "mac": "aa:bb:cc:dd:ee:01"},
        {"name": "eth0", "mac": "aa:bb:cc:dd:ee:02", "sandbox": "/var/run/netns/x"},
    ],
    "ips": R11["ips"],
    "routes": [{"dst": "0.0.0.0/0", "gw": "10.0.0.1"}, {"dst": "::/0", "gw": "fd00::1"}],
    "dns": R11["dns"],
}

R040 = {
    **R10,
    "cniVersion": "0.4.0",
    "ips": [
        {"version": "4", "interface": 1, "address": "10.0.0.2/24", "gateway": "10.0.0.1"},
        {"version": "4", "interface": 1, "address": "10.0.1.2/24"},
        {"version": "6", "interface": 1, "address": "fd00::2/64", "gateway": "fd00::1"},
    ],
}

R020 = {
    "cniVersion": "0.2.0",
    "ip4": {"ip": "10.0.0.2/24", "gateway": "10.0.0.1", "routes": [{"dst": "0.0.0.0/0", "gw": "10.0.0.1"}]},
    "ip6": {"ip": "fd00::2/64", "gateway": "fd00::1", "routes": [{"dst": "::/0", "gw": "fd00::1"}]},
    "dns": R11["dns"],
}


@pytest.mark.parametrize(
    "source,to,expected",
    [
        (R11, "1.0.0", R10),
        (R11, "0.4.0", R040),
        (R11, "0.3.1", {**R040, "cniVersion": "0.3.1"}),
        (R11, "0.3.0", {**R040, "cniVersion": "0.3.0"}),
        (R11, "0.2.0", R020),
        (R11, "0.1.0", {**R020, "cniVersion": "0.1.0"}),
        (R10, "1.1.0", {**R10, "cniVersion": "1.1.0"}),
        (R040, "1.0.0", R10),
        (R040, "0.2.0", R020),
        (
            R020,
            "0.4.0",
            {
                "cniVersion": "0.4.0",
                "ips": [
                    {"version": "4", "address": "10.0.0.2/24", "gateway": "10.0.0.1"},
                    {"version": "6", "address": "fd00::2/64", "gateway": "fd00::1"},
                ],
                "routes": [{"dst": "0.0.0.0/0", "gw": "10.0.0.1"}, {"dst": "::/0", "gw": "fd00::1"}],
                "dns": R11["dns"],
            },
        ),
        (
            R020,
            "1.1.0",
            {
                "cniVersion": "1.1.0",
                "ips": [
                    {"address": "10.0.0.2/24", "gateway": "10.0.0.1"},
                    {"address": "fd00::2/64", "gateway": "fd00::1"},
                ],
                "routes": [{"dst": "0.0.0.0/0", "gw": "10.0.0.1"}, {"dst": "::/0", "gw": "fd00::1"}],
                "dns": R11["dns"],
            },
        ),
        (
            {"cniVersion": "0.1.0", "ip4": {"ip": "10.9.0.2/16"}},
            "0.2.0",
            {"cniVersion": "0.2.0", "ip4": {"ip": "10.9.0.2/16"}, "dns": {}},  # types020: dns always written
        ),
    ],
    ids=lambda v: v if isinstance(v, str) else None,
)
def test_conversion_table(source: dict[str, Any], to: str, expected: dict[str, Any]) -> None:
    before = copy.deepcopy(source)
    assert convert_result(source, to) == expected
    assert source == before, "the input must not be changed"


def test_debian_plugin_output_with_empty_dns() -> None:
    """What Debian's bridge prints (``"dns": {}``) comes out of up-conversion as libcni
    writes it: unchanged but for the empty dns, which types100's MarshalJSON leaves out."""
    bridge = {
        "cniVersion": "1.0.0",
        "interfaces": [
            {"name": "cni0", "mac": "5a:1c:ee:aa:bb:cc"},
            {"name": "eth0", "mac": "ee:aa:bb:cc:dd:ee", "sandbox": "/var/run/netns/t"},
        ],
        "ips": [{"interface": 1, "address": "10.10.0.2/24", "gateway": "10.10.0.1"}],
        "dns": {},
    }
    expected = {k: v for k, v in bridge.items() if k != "dns"}
    assert convert_result(bridge, "1.1.0") == {**expected, "cniVersion": "1.1.0"}


def test_dns_as_libcni_writes_it() -> None:
    """types040 always writes dns (a struct: ``{}`` when empty); types100's MarshalJSON
    leaves an empty one out. Checked against libcni v1.3.0 built with Go 1.26."""
    out = convert_result({"cniVersion": "1.0.0", "ips": [{"address": "10.0.0.2/24"}]}, "0.3.1")
    assert out["dns"] == {}
    assert "dns" not in convert_result({"cniVersion": "0.3.1", "dns": {}}, "1.1.0")
    assert convert_result({"cniVersion": "1.0.0", "dns": {"nameservers": [], "domain": "x"}}, "1.0.0") == {
        "cniVersion": "1.0.0",
        "dns": {"domain": "x"},
    }


def test_go_typed_drops_unknown_keys_and_empty_fields_and_sorts_100() -> None:
    """What libcni's Go types keep of a result and how encoding/json writes them again."""
    raw = {
        "extra": 1,
        "ips": [{"address": "fd00:0::05/64", "gateway": "", "interface": 0, "x": 1}],
        "interfaces": [{"sandbox": "/n", "name": "net1", "mtu": 0, "mac": ""}],
        "routes": [{"dst": "0.0.0.0/0", "mtu": 0, "table": 0}],
        "cniVersion": "1.0.0",
        "dns": {},
    }
    out = go_typed(raw, "1.0.0")
    assert json.dumps(out) == json.dumps(
        {
            "cniVersion": "1.0.0",
            "interfaces": [{"name": "net1", "sandbox": "/n"}],
            "ips": [{"address": "fd00::5/64", "interface": 0}],
            "routes": [{"dst": "0.0.0.0/0", "table": 0}],
        }
    )
    assert list(go_typed({**raw, "cniVersion": "0.4.0"}, "0.4.0")) == [
        "cniVersion",
        "interfaces",
        "ips",
        "routes",
        "dns",
    ]
    assert go_typed({**raw, "cniVersion": "0.4.0"}, "0.4.0")["ips"] == [
        {"version": "", "interface": 0, "address": "fd00::5/64"}
    ]


def test_down_to_020_without_ip_is_incompatible() -> None:
    with pytest.raises(IncompatibleVersion) as info:
        convert_result({"cniVersion": "1.0.0", "interfaces": [{"name": "eth0"}], "dns": {}}, "0.2.0")
    assert info.value.cni_code == 1
    assert info.value.msg == "cannot convert CNI result to version 0.2.0: no valid IP addresses"


@pytest.mark.parametrize("bad", ["0.5.0", "2.0.0", "", "banana"])
def test_unknown_target_version(bad: str) -> None:
    with pytest.raises(IncompatibleVersion, match="unsupported CNI target version"):
        convert_result(R10, bad)


def test_unknown_source_version() -> None:
    with pytest.raises(IncompatibleVersion, match=re.escape("unsupported CNI result version '9.0.0'")):
        convert_result({**R10, "cniVersion": "9.0.0"}, "1.0.0")


@pytest.mark.parametrize(
    "bad",
    [
        {"cniVersion": "1.0.0", "ips": "10.0.0.1"},
        {"cniVersion": "1.0.0", "routes": [1, 2]},
        {"cniVersion": "0.2.0", "ip4": "x"},
    ],
)
def test_malformed_results_are_decode_failures(bad: dict[str, Any]) -> None:
    with pytest.raises(DecodeFailure):
        convert_result(bad, "1.1.0" if bad["cniVersion"] != "1.1.0" else "1.0.0")


def test_result_without_version_uses_from_version_or_shape() -> None:
    assert convert_result({"ips": [{"address": "10.0.0.2/24"}]}, "0.4.0", from_version="1.0.0")["ips"] == [
        {"version": "4", "address": "10.0.0.2/24"}
    ]
    assert result_version({"ip4": {"ip": "10.0.0.2/24"}}) == "0.2.0"
    assert result_version({"ips": [{"version": "4", "address": "10.0.0.2/24"}]}) == "0.4.0"
    assert result_version({"ips": [{"address": "10.0.0.2/24"}]}) == "1.0.0"


@pytest.mark.parametrize(
    "v,key",
    [("0.1.0", (0, 1, 0)), ("1.0.0", (1, 0, 0)), ("1.1.0", (1, 1, 0)), ("0.4", (0, 4, 0)), ("10.2.3", (10, 2, 3))],
)
def test_version_key(v: str, key: tuple[int, int, int]) -> None:
    assert version_key(v) == key


@pytest.mark.parametrize("bad", ["", "1.x.0", "1.0.0.0", "v1.0.0", "-1.0.0"])
def test_version_key_rejects(bad: str) -> None:
    with pytest.raises(DecodeFailure):
        version_key(bad)


def test_version_order() -> None:
    assert sorted(reversed(ALL_VERSIONS), key=version_key) == list(ALL_VERSIONS)


def test_empty_result() -> None:
    assert empty_result("1.0.0") == {"cniVersion": "1.0.0", "dns": {}}
    assert empty_result("1.1.0", ifname="eth0", netns="/var/run/netns/p") == {
        "cniVersion": "1.1.0",
        "interfaces": [{"name": "eth0", "sandbox": "/var/run/netns/p"}],
        "dns": {},
    }


# --- hypothesis: round trips ---------------------------------------------------------

_mac = st.from_regex(r"\A[0-9a-f]{2}(:[0-9a-f]{2}){5}\Z")
_v4 = st.tuples(*[st.integers(0, 255)] * 4, st.integers(0, 32)).map(lambda t: f"{t[0]}.{t[1]}.{t[2]}.{t[3]}/{t[4]}")
# written as Go's net.IPNet writes them (libcni's typed results canonicalise addresses)
_v6 = st.tuples(st.integers(0, 0xFFFF), st.integers(0, 0xFFFF), st.integers(0, 128)).map(
    lambda t: str(ipaddress.ip_interface(f"fd00:{t[0]:x}::{t[1]:x}/{t[2]}"))
)
_gw4 = _v4.map(lambda c: c.split("/")[0])
_gw6 = _v6.map(lambda c: c.split("/")[0])
_name = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789", min_size=1, max_size=15)
_dns = st.one_of(
    st.just({}),
    st.fixed_dictionaries(
        {},
        optional={
            "nameservers": st.lists(_gw4, max_size=2),
            "domain": _name,
            "search": st.lists(_name, max_size=2),
            "options": st.lists(_name, max_size=2),
        },
    ),
)


@st.composite
def results_11(draw: st.DrawFn) -> dict[str, Any]:
    """A 1.1.0 result using every field 1.1.0 has."""
    n_if = draw(st.integers(0, 3))
    ifaces = []
    for _ in range(n_if):
        iface = {"name": draw(_name)}
        for key, strat in (
            ("mac", _mac),
            ("sandbox", st.just("/var/run/netns/t")),
            ("mtu", st.integers(68, 9000)),
            ("socketPath", st.just("/run/s.sock")),
            ("pciID", st.just("0000:00:01.0")),
        ):
            if draw(st.booleans()):
                iface[key] = draw(strat)
        ifaces.append(iface)
    ips = []
    for _ in range(draw(st.integers(0, 3))):
        v6 = draw(st.booleans())
        ip: dict[str, Any] = {"address": draw(_v6 if v6 else _v4)}
        if n_if and draw(st.booleans()):
            ip["interface"] = draw(st.integers(0, n_if - 1))
        if draw(st.booleans()):
            ip["gateway"] = draw(_gw6 if v6 else _gw4)
        ips.append(ip)
    routes = []
    for _ in range(draw(st.integers(0, 3))):
        v6 = draw(st.booleans())
        route: dict[str, Any] = {"dst": draw(_v6 if v6 else _v4)}
        if draw(st.booleans()):
            route["gw"] = draw(_gw6 if v6 else _gw4)
        for key in ("mtu", "advmss", "priority", "table", "scope"):
            if draw(st.booleans()):  # table and scope are pointers in Go (0 is kept), the others omitempty
                route[key] = draw(st.integers(0 if key in ("table", "scope") else 1, 1000))
        routes.append(route)
    out: dict[str, Any] = {"cniVersion": "1.1.0"}
    if ifaces:
        out["interfaces"] = ifaces
    if ips:
        out["ips"] = ips
    if routes:
        out["routes"] = routes
    if draw(st.booleans()):
        out["dns"] = draw(_dns)
    return out


def _strip_11(result: dict[str, Any]) -> dict[str, Any]:
    """What a 1.0.0 result keeps of a 1.1.0 one (the documented down-conversion)."""
    out = copy.deepcopy(result)
    for iface in out.get("interfaces", []):
        for k in ("mtu", "socketPath", "pciID"):
            iface.pop(k, None)
    for route in out.get("routes", []):
        for k in ("mtu", "advmss", "priority", "table", "scope"):
            route.pop(k, None)
    out.pop("cniVersion")
    dns = {k: v for k, v in out.pop("dns", {}).items() if v}
    if dns:  # Go's omitempty inside dns, and types100 leaves an empty dns out
        out["dns"] = dns
    return out


@NO_DEADLINE
@given(results_11(), st.sampled_from(["0.3.0", "0.3.1", "0.4.0", "1.0.0"]))
def test_down_then_up_keeps_the_shared_fields(result: dict[str, Any], low: str) -> None:
    """1.1.0 → 0.3.x/0.4.0/1.0.0 → 1.1.0 loses exactly the 1.1-only fields."""
    back = convert_result(convert_result(result, low), "1.1.0")
    assert back["cniVersion"] == "1.1.0"
    assert {k: v for k, v in back.items() if k != "cniVersion"} == _strip_11(result)


@NO_DEADLINE
@given(results_11(), st.sampled_from(["0.3.0", "0.3.1", "0.4.0", "1.0.0"]), st.sampled_from(["1.0.0", "1.1.0"]))
def test_up_then_down_is_identity(result: dict[str, Any], low: str, high: str) -> None:
    """A result in a lower version, taken up and back down, is unchanged."""
    lower = convert_result(result, low)
    assert convert_result(convert_result(lower, high), low) == lower


@NO_DEADLINE
@given(results_11())
def test_11_only_fields_never_reach_10(result: dict[str, Any]) -> None:
    out = convert_result(result, "1.0.0")
    assert all(set(i) <= {"name", "mac", "sandbox"} for i in out.get("interfaces", []))
    assert all(set(r) <= {"dst", "gw"} for r in out.get("routes", []))


@NO_DEADLINE
@given(results_11())
def test_040_ip_version_matches_address_family(result: dict[str, Any]) -> None:
    out = convert_result(result, "0.4.0")
    for ip in out.get("ips", []):
        assert ip["version"] == ("6" if ":" in ip["address"] else "4")


@NO_DEADLINE
@given(results_11(), st.sampled_from(["0.1.0", "0.2.0"]))
def test_020_keeps_first_address_per_family(result: dict[str, Any], old: str) -> None:
    ips = result.get("ips", [])
    if not ips:
        with pytest.raises(IncompatibleVersion):
            convert_result(result, old)
        return
    out = convert_result(result, old)
    first4 = next((ip for ip in ips if ":" not in ip["address"]), None)
    first6 = next((ip for ip in ips if ":" in ip["address"]), None)
    assert (out.get("ip4") or {}).get("ip") == (first4 or {}).get("address")
    assert (out.get("ip6") or {}).get("ip") == (first6 or {}).get("address")
    # and back up: the 0.2.0 result is a fixed point of up-then-down
    assert convert_result(convert_result(out, "1.1.0"), old) == out


_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=12,
)
_keys = st.sampled_from(["cniVersion", "interfaces", "ips", "routes", "dns", "ip4", "ip6", "other"])


@NO_DEADLINE
@given(st.dictionaries(_keys, _json | st.sampled_from(ALL_VERSIONS), max_size=6), st.sampled_from(ALL_VERSIONS))
def test_arbitrary_input_fails_only_with_kvnet_errors(result: dict[str, Any], to: str) -> None:
    """Garbage from a delegate becomes a CNI error (decode / version), never a crash."""
    from kvnet.core.errors import KvnetError

    try:
        out = convert_result(result, to)
    except KvnetError:
        return
    assert out["cniVersion"] == to
