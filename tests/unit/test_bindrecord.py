"""The binding record's wire format (docs/binding.md): exact text, round trip, limits."""

from __future__ import annotations

import ipaddress
import json
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kvnet.core import bindrecord
from kvnet.core.errors import DecodeFailure, InvalidConfig
from kvnet.core.model import BindingRecord, GuestIpConfig

MAC = "0a:58:0a:01:00:05"


@pytest.mark.parametrize(
    ("record", "text"),
    [
        (BindingRecord(MAC, 1500), '{"kvnet":1,"mac":"0a:58:0a:01:00:05","mtu":1500}'),
        (
            BindingRecord(MAC, 1450, GuestIpConfig(("10.1.0.5/24",), ("10.1.0.1",), (("10.2.0.0/16", "10.1.0.1"),))),
            '{"kvnet":1,"mac":"0a:58:0a:01:00:05","mtu":1450,"ip":["10.1.0.5/24"],'
            '"gw":["10.1.0.1"],"rt":[["10.2.0.0/16","10.1.0.1"]]}',
        ),
        (
            BindingRecord(MAC, 9000, GuestIpConfig(("fd00::5/64", "10.1.0.5/24"), (), (("10.9.0.0/16", ""),))),
            '{"kvnet":1,"mac":"0a:58:0a:01:00:05","mtu":9000,"ip":["fd00::5/64","10.1.0.5/24"],'
            '"rt":[["10.9.0.0/16",""]]}',
        ),
    ],
    ids=["l2-only", "ipv4-gw-route", "dual-stack-device-route"],
)
def test_encode_exact_text_and_back(record: BindingRecord, text: str) -> None:
    assert bindrecord.encode(record) == text
    assert bindrecord.decode(text) == record


def test_encode_lowercases_the_mac() -> None:
    text = bindrecord.encode(BindingRecord("0A:58:0A:01:00:05", 1500))
    assert '"mac":"0a:58:0a:01:00:05"' in text


@pytest.mark.parametrize("text", [None, "", "   ", "uplink to rack 3", '{"other":1}', "[1,2]", '{ "kvnet": 1}'])
def test_decode_foreign_or_empty_alias_is_none(text: str | None) -> None:
    assert bindrecord.decode(text) is None


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('{"kvnet":1,"mac":', "malformed kvnet binding record"),
        ('{"kvnet":2,"mac":"0a:58:0a:01:00:05","mtu":1500}', "unsupported kvnet binding record version 2"),
        ('{"kvnet":true,"mac":"0a:58:0a:01:00:05","mtu":1500}', "unsupported kvnet binding record version True"),
        ('{"kvnet":1,"mac":"0a:58","mtu":1500}', "MAC '0a:58' is not"),
        ('{"kvnet":1,"mac":"0a:58:0a:01:00:05","mtu":"1500"}', "MTU '1500' is not"),
        ('{"kvnet":1,"mac":"0a:58:0a:01:00:05","mtu":1500,"ip":["10.1.0.5"]}', "address '10.1.0.5' is not"),
        ('{"kvnet":1,"mac":"0a:58:0a:01:00:05","mtu":1500,"gw":["x"]}', "gateway 'x' is not"),
        ('{"kvnet":1,"mac":"0a:58:0a:01:00:05","mtu":1500,"rt":[["10.0.0.0/8"]]}', "each rt entry must be [dst, via]"),
        (
            '{"kvnet":1,"mac":"0a:58:0a:01:00:05","mtu":1500,"rt":[["nowhere","10.0.0.1"]]}',
            "route destination 'nowhere'",
        ),
        ('{"kvnet":1,"mac":"0a:58:0a:01:00:05","mtu":1500,"ip":"10.1.0.5/24"}', "must be lists of strings"),
        ('{"kvnet":1,"mac":"0a:58:0a:01:00:05","mtu":1500,"x":1}', "unknown keys ['x']"),
    ],
)
def test_decode_malformed_kvnet_record(text: str, message: str) -> None:
    with pytest.raises(DecodeFailure) as err:
        bindrecord.decode(text)
    assert message in err.value.msg
    assert err.value.cni_code == 6


def test_decode_deeply_nested_input_is_a_decode_failure() -> None:
    with pytest.raises(DecodeFailure, match="malformed kvnet binding record"):
        bindrecord.decode(bindrecord.TAG + "[" * 100_000)


@pytest.mark.parametrize(
    ("record", "message"),
    [
        (BindingRecord("nope", 1500), "MAC 'nope' is not"),
        (BindingRecord(MAC, 0), "MTU 0 is not"),
        (BindingRecord(MAC, 1500, GuestIpConfig(("10.1.0.300/24",))), "address '10.1.0.300/24'"),
    ],
)
def test_encode_refuses_bad_fields(record: BindingRecord, message: str) -> None:
    with pytest.raises(InvalidConfig, match="cannot encode binding record") as err:
        bindrecord.encode(record)
    assert message in err.value.msg


def test_encode_refuses_a_record_over_255_bytes() -> None:
    routes = tuple((f"fd00:{i:x}::/64", "fd00::1") for i in range(8))
    record = BindingRecord(MAC, 1500, GuestIpConfig(("fd00::5/64",), ("fd00::1",), routes))
    with pytest.raises(InvalidConfig) as err:
        bindrecord.encode(record)
    assert "over the 255-byte ifalias limit (1 addresses, 1 gateways, 8 routes)" in err.value.msg


def test_largest_typical_record_fits() -> None:
    """Dual stack, both gateways and two routes: the common worst case fits."""
    ip = GuestIpConfig(
        ("10.100.200.250/24", "fd12:3456:789a:1::250/64"),
        ("10.100.200.1", "fd12:3456:789a:1::1"),
        (("10.200.0.0/16", "10.100.200.1"), ("192.168.128.0/17", "10.100.200.1")),
    )
    text = bindrecord.encode(BindingRecord(MAC, 9000, ip))
    assert len(text.encode()) <= 255


_macs = st.lists(st.integers(0, 255), min_size=6, max_size=6).map(lambda b: ":".join(f"{x:02x}" for x in b))
_v4 = st.builds(ipaddress.IPv4Address, st.integers(0, 2**32 - 1))
_v6 = st.builds(ipaddress.IPv6Address, st.integers(0, 2**128 - 1))
_addr = st.one_of(_v4, _v6)
_iface = st.one_of(
    st.builds(lambda a, p: f"{a}/{p}", _v4, st.integers(0, 32)),
    st.builds(lambda a, p: f"{a}/{p}", _v6, st.integers(0, 128)),
)
_net = st.one_of(
    st.builds(lambda a, p: str(ipaddress.ip_network(f"{a}/{p}", strict=False)), _v4, st.integers(0, 32)),
    st.builds(lambda a, p: str(ipaddress.ip_network(f"{a}/{p}", strict=False)), _v6, st.integers(0, 128)),
)
_records = st.builds(
    BindingRecord,
    original_mac=_macs,
    mtu=st.integers(68, 65535),
    ip=st.builds(
        GuestIpConfig,
        addresses=st.lists(_iface, max_size=3).map(tuple),
        gateways=st.lists(_addr.map(str), max_size=2).map(tuple),
        routes=st.lists(st.tuples(_net, st.one_of(st.just(""), _addr.map(str))), max_size=3).map(tuple),
    ),
)


@given(_records)
def test_round_trip_or_refused(record: BindingRecord) -> None:
    """Every record either round-trips exactly within 255 bytes or is refused; never cut."""
    try:
        text = bindrecord.encode(record)
    except InvalidConfig as err:
        assert "255-byte ifalias limit" in err.msg
        return
    assert len(text.encode()) <= 255
    assert bindrecord.decode(text) == record


@given(st.text(max_size=300))
def test_decode_never_raises_anything_but_decode_failure(text: str) -> None:
    try:
        bindrecord.decode(text)
    except DecodeFailure:
        assert bindrecord.is_tagged(text)


@given(st.text(max_size=200))
def test_decode_of_a_tagged_prefix_never_crashes(tail: str) -> None:
    try:
        result = bindrecord.decode(bindrecord.TAG + tail)
    except DecodeFailure:
        return
    assert result is None or result.version == 1


def test_shipped_example_alias_is_exactly_what_encode_writes() -> None:
    """examples/pod-links-kvnet.json (used by `kvnet render` and the sidecar's tests) holds
    ifalias text in the very form this module writes: decode then encode gives it back."""
    example = Path(__file__).resolve().parents[2] / "examples" / "pod-links-kvnet.json"
    aliases = [link["ifalias"] for link in json.loads(example.read_text()) if link.get("ifalias")]
    assert aliases
    for text in aliases:
        record = bindrecord.decode(text)
        assert record is not None and bindrecord.encode(record) == text
