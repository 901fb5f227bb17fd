"""kvnet.guestnet: the option converters (hypothesis), the answers, and the codec against
frames captured from real clients (busybox 1.35 udhcpc's DISCOVER, dhcpcd 9.4.1's SOLICIT,
both from MAC 02:aa:bb:cc:dd:01)."""

from __future__ import annotations

import ipaddress
import struct
from dataclasses import replace

from hypothesis import given
from hypothesis import strategies as st

from kvnet.core import bindrecord
from kvnet.core.model import BindingRecord, GuestIpConfig
from kvnet.domain.netdata import _l3
from kvnet.guestnet import codec, model

UDHCPC_DISCOVER = bytes.fromhex(
    "ffffffffffff02aabbccdd0108004500014800000000401179a600000000ffffffff004400430134ad65010106008187c24f000000000000000000000000000000000000000002aabbccdd0100000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000638253633501013902024037090103060c0f1a1c2a790c03766d313c0c756468637020312e33352e303d070102aabbccdd01ff00000000000000000000000000"
)
DHCPCD_SOLICIT = bytes.fromhex(
    "33330001000202aabbccdd0186dd6001734f007d1101fe8000000000000000aabbfffeccdd01ff02000000000000000000000001000202220223007d04e201bd5ded0001000e0001000132a45e3f2e40fa7d4a030003000c00000001000000000000000000060004005200530008000200000010003d00009f0800376468637063642d392e342e313a4c696e75782d362e31382e34342d66632d76313034353a7838365f36343a41757468656e746963414d44"
)
MAC = "02:aa:bb:cc:dd:01"
RECORD = BindingRecord(
    MAC,
    1400,
    GuestIpConfig(("10.77.0.2/24", "fd00:77::2/64"), ("10.77.0.1", "fd00:77::1"), (("10.88.0.0/16", "10.77.0.1"),)),
)
LEASE = model.lease_from_record(RECORD, hostname="vm1", dns=("10.96.0.10",), search=("default.svc.cluster.local",))


def options(frame: bytes) -> dict[int, bytes]:
    """DHCPv4 options read by hand (not by scapy): after the 240-byte BOOTP header + cookie."""
    body = frame[14 + 20 + 8 :]
    assert body[236:240] == b"\x63\x82\x53\x63"
    found, i = {}, 240
    while body[i] != 255:
        if body[i] == 0:
            i += 1
            continue
        found[body[i]] = body[i + 2 : i + 2 + body[i + 1]]
        i += 2 + body[i + 1]
    return found


def test_udhcpc_discover_parses() -> None:
    req = codec.parse(UDHCPC_DISCOVER)
    assert isinstance(req, model.Dhcp4Request)
    assert (req.src_mac, req.chaddr, req.message_type) == (MAC, MAC, model.DISCOVER)
    assert req.xid == struct.unpack("!I", UDHCPC_DISCOVER[46:50])[0]


def test_offer_for_the_captured_discover_carries_every_option() -> None:
    req = codec.parse(UDHCPC_DISCOVER)
    assert isinstance(req, model.Dhcp4Request)
    reply = model.answer_v4(LEASE, req)
    assert reply is not None and reply.message_type == model.OFFER
    frame = codec.build_dhcp4(reply)
    assert frame[0:6] == b"\xff" * 6 and frame[6:12] == bytes.fromhex(LEASE.server_mac.replace(":", ""))
    bootp = frame[42:]
    assert bootp[0] == 2 and bootp[4:8] == UDHCPC_DISCOVER[46:50]  # BOOTREPLY, same xid
    assert bootp[16:20] == ipaddress.IPv4Address("10.77.0.2").packed and bootp[28:34] == bytes.fromhex("02aabbccdd01")
    opts = options(frame)
    assert opts[53] == b"\x02" and opts[54] == ipaddress.IPv4Address("10.77.0.1").packed
    assert opts[1] == b"\xff\xff\xff\x00" and opts[3] == ipaddress.IPv4Address("10.77.0.1").packed
    assert opts[121] == bytes([16, 10, 88, 10, 77, 0, 1, 0, 10, 77, 0, 1])  # 10.88/16 and default, via .1
    assert opts[26] == struct.pack("!H", 1400) and opts[12] == b"vm1"
    assert opts[6] == bytes([10, 96, 0, 10]) and opts[15] == b"default.svc.cluster.local"
    assert opts[119] == b"\x07default\x03svc\x07cluster\x05local\x00"
    assert struct.unpack("!I", opts[51])[0] == model.DEFAULT_LEASE_SECONDS


def test_another_mac_is_never_answered() -> None:
    req = codec.parse(UDHCPC_DISCOVER)
    assert isinstance(req, model.Dhcp4Request)
    other = model.lease_from_record(replace(RECORD, original_mac="02:00:00:00:00:09"), hostname="vm2")
    assert model.answer_v4(other, req) is None
    assert model.answer_v6(other, model.Dhcp6Request(MAC, ipaddress.IPv6Address("fe80::1"), 1, 1, b"x", 1)) is None


def test_request_for_another_server_or_address() -> None:
    base = model.Dhcp4Request(MAC, MAC, 7, model.REQUEST, ipaddress.IPv4Address(0))
    assert model.answer_v4(LEASE, replace(base, server_id=ipaddress.IPv4Address("10.77.0.9"))) is None
    nak = model.answer_v4(LEASE, replace(base, requested=ipaddress.IPv4Address("10.77.0.3")))
    assert nak is not None and nak.message_type == model.NAK
    ack = model.answer_v4(LEASE, replace(base, ciaddr=ipaddress.IPv4Address("10.77.0.2")))  # a renewal: unicast
    assert ack is not None and ack.message_type == model.ACK and ack.unicast_ok


def test_dhcpcd_solicit_parses_and_is_advertised_the_address() -> None:
    req = codec.parse(DHCPCD_SOLICIT)
    assert isinstance(req, model.Dhcp6Request)
    assert (req.src_mac, req.message_type, req.iaid) == (MAC, model.SOLICIT6, 1)
    assert req.client_duid[:2] in (b"\x00\x01", b"\x00\x03", b"\x00\x04")
    reply = model.answer_v6(LEASE, req)
    assert reply is not None and reply.message_type == model.ADVERTISE6
    frame = codec.build_dhcp6(reply)
    assert frame[12:14] == b"\x86\xdd" and frame[20] == 17  # IPv6, UDP
    udp = frame[54:]
    assert struct.unpack("!HH", udp[:4]) == (547, 546)
    msg = udp[8:]
    assert msg[0] == model.ADVERTISE6 and msg[1:4] == DHCPCD_SOLICIT[63:66]  # the client's transaction id
    assert ipaddress.IPv6Address("fd00:77::2").packed in msg and req.client_duid in msg


def test_ra_prefix_managed_flag_and_router_only_with_its_mac() -> None:
    no_router = codec.build_ra(LEASE, router_mac=None)
    assert no_router[:6] == bytes.fromhex(LEASE.mac.replace(":", ""))  # to the VM's MAC only, not 33:33:00:00:00:01
    assert no_router[38:54] == ipaddress.IPv6Address("ff02::1").packed
    icmp = no_router[54:]
    assert icmp[0] == 134 and icmp[5] & 0xC0 == 0xC0 and icmp[6:8] == b"\0\0"  # M and O, lifetime 0
    assert ipaddress.IPv6Address("fd00:77::").packed in icmp
    routed = codec.build_ra(LEASE, router_mac="02:00:00:00:00:01")[54:]
    assert struct.unpack("!H", routed[6:8])[0] > 0 and bytes.fromhex("020000000001") in routed


def test_server_tap_names_fit() -> None:
    assert bindrecord.server_tap_name("pod16477688c0e") == "kvd16477688c0e"
    assert bindrecord.server_tap_name("eth0") == "kvdeth0"
    assert len(bindrecord.server_tap_name("pod" + "f" * 11)) <= 15


ROUTES = st.lists(
    st.tuples(
        st.builds(
            lambda a, p: ipaddress.IPv4Network((a, p), strict=False),
            st.integers(0, 2**32 - 1).map(ipaddress.IPv4Address),
            st.integers(0, 32),
        ),
        st.integers(0, 2**32 - 1).map(ipaddress.IPv4Address),
    ),
    max_size=8,
)


@given(ROUTES)
def test_classless_routes_round_trip(routes: list[tuple[ipaddress.IPv4Network, ipaddress.IPv4Address]]) -> None:
    data = model.encode_classless_routes(tuple(routes))
    assert model.decode_classless_routes(data) == tuple(routes)
    assert len(data) == sum(5 + (n.prefixlen + 7) // 8 for n, _ in routes)


LABEL = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789-", min_size=1, max_size=20)


@given(st.lists(st.lists(LABEL, min_size=1, max_size=4).map(".".join), max_size=4))
def test_search_list_round_trip(domains: list[str]) -> None:
    assert model.decode_search(model.encode_search(tuple(domains))) == tuple(domains)


@given(st.integers(0, 2**48 - 1))
def test_server_mac_is_local_unicast_and_not_the_vm(value: int) -> None:
    mac = ":".join(f"{b:02x}" for b in value.to_bytes(6, "big"))
    lease = model.Lease(mac=mac, mtu=1500, hostname="")
    server = bytes.fromhex(lease.server_mac.replace(":", ""))
    assert server[0] & 0x03 == 0x02 and lease.server_mac != mac
    assert str(model.link_local(lease.server_mac)).startswith("fe80::")


def test_dhcp_and_cloud_init_network_data_agree() -> None:
    """For one record, the address and routes DHCPv4/DHCPv6 hand out are cloud-init's."""
    data = _l3(RECORD.ip)
    v4_routes = {(r["to"], r["via"]) for r in data["routes"] if ":" not in r["to"]}
    served = {(str(net), str(via)) for net, via in model.v4_routes_option(LEASE)}
    assert served == v4_routes
    assert {str(LEASE.v4), str(LEASE.v6)} == set(data["addresses"])
    assert {(r["to"], r["via"]) for r in data["routes"] if ":" in r["to"]} == {("::/0", str(LEASE.v6_gateway))}
