"""The lease a served NIC hands its guest, and the answers to each request. Pure.

A :class:`Lease` is built from the binding record (``kvnet.core.bindrecord``) of one pod
interface: the VM's MAC, the IPAM addresses, gateways and routes, the MTU. The decisions
(:func:`answer_v4`, :func:`answer_v6`) take a parsed request and return what to send, or
None: a request from any MAC other than the VM's own is never answered.
"""

from __future__ import annotations

import hashlib
import ipaddress
from dataclasses import dataclass

from kvnet.core.model import BindingRecord

DEFAULT_LEASE_SECONDS = 3600
ALL_ONES = 0xFFFFFFFF


@dataclass(frozen=True)
class Lease:
    """What one NIC's guest is told, on both families."""

    mac: str
    mtu: int
    hostname: str
    v4: ipaddress.IPv4Interface | None = None
    v4_gateway: ipaddress.IPv4Address | None = None
    v4_routes: tuple[tuple[ipaddress.IPv4Network, ipaddress.IPv4Address], ...] = ()
    v6: ipaddress.IPv6Interface | None = None
    v6_gateway: ipaddress.IPv6Address | None = None
    dns: tuple[ipaddress.IPv4Address | ipaddress.IPv6Address, ...] = ()
    search: tuple[str, ...] = ()
    lease_seconds: int = DEFAULT_LEASE_SECONDS

    @property
    def server_mac(self) -> str:
        """The MAC the server's frames come from: stable, locally administered, != the VM's."""
        return derived_mac(self.mac, "server")

    @property
    def server_v4(self) -> ipaddress.IPv4Address | None:
        """The DHCP server identifier: the gateway when IPAM gave one on the subnet, else the
        subnet's first host (or the last when that is the guest's own address)."""
        if self.v4 is None:
            return None
        if self.v4_gateway is not None and self.v4_gateway in self.v4.network:
            return self.v4_gateway
        hosts = list(_hosts(self.v4.network))
        for candidate in (hosts[0], hosts[-1]) if hosts else ():
            if candidate != self.v4.ip:
                return candidate
        return self.v4.ip

    @property
    def server_v6_link_local(self) -> ipaddress.IPv6Address:
        return link_local(self.server_mac)

    @property
    def served(self) -> bool:
        return self.v4 is not None or self.v6 is not None


def _hosts(net: ipaddress.IPv4Network) -> tuple[ipaddress.IPv4Address, ...]:
    if net.prefixlen >= 31:
        return tuple(net)
    return (net.network_address + 1, net.broadcast_address - 1)


def derived_mac(seed: str, salt: str) -> str:
    digest = hashlib.sha256(f"{salt}/{seed.lower()}".encode()).digest()
    octets = [(digest[0] & 0xFC) | 0x02, *digest[1:6]]
    return ":".join(f"{b:02x}" for b in octets)


def link_local(mac: str) -> ipaddress.IPv6Address:
    """The EUI-64 link-local address of a MAC (RFC 4291 appendix A)."""
    b = bytes.fromhex(mac.replace(":", ""))
    eui = bytes([b[0] ^ 0x02, b[1], b[2], 0xFF, 0xFE, b[3], b[4], b[5]])
    return ipaddress.IPv6Address(b"\xfe\x80" + b"\0" * 6 + eui)


def lease_from_record(
    record: BindingRecord,
    *,
    hostname: str,
    dns: tuple[str, ...] = (),
    search: tuple[str, ...] = (),
    lease_seconds: int = DEFAULT_LEASE_SECONDS,
) -> Lease:
    """The lease of one NIC: its first IPv4 and first IPv6 IPAM address, gateways, routes."""
    v4 = v6 = None
    for cidr in record.ip.addresses:
        iface = ipaddress.ip_interface(cidr)
        if isinstance(iface, ipaddress.IPv4Interface) and v4 is None:
            v4 = iface
        elif isinstance(iface, ipaddress.IPv6Interface) and v6 is None:
            v6 = iface
    gw4 = gw6 = None
    for text in record.ip.gateways:
        gw = ipaddress.ip_address(text)
        if isinstance(gw, ipaddress.IPv4Address) and gw4 is None:
            gw4 = gw
        elif isinstance(gw, ipaddress.IPv6Address) and gw6 is None:
            gw6 = gw
    routes4: list[tuple[ipaddress.IPv4Network, ipaddress.IPv4Address]] = []
    for dst, via in record.ip.routes:
        net = ipaddress.ip_network(dst, strict=False)
        if isinstance(net, ipaddress.IPv4Network):
            hop = ipaddress.IPv4Address(via) if via else ipaddress.IPv4Address(0)
            routes4.append((net, hop))
    return Lease(
        mac=record.original_mac.lower(),
        mtu=record.mtu,
        hostname=hostname,
        v4=v4,
        v4_gateway=gw4,
        v4_routes=tuple(routes4),
        v6=v6,
        v6_gateway=gw6,
        dns=tuple(ipaddress.ip_address(d) for d in dns),
        search=search,
        lease_seconds=lease_seconds,
    )


# ------------------------------------------------------------------------------------
# Option converters (RFC 3442 classless static routes, RFC 1035 search labels)
# ------------------------------------------------------------------------------------


def encode_classless_routes(routes: tuple[tuple[ipaddress.IPv4Network, ipaddress.IPv4Address], ...]) -> bytes:
    """Option 121's value: per route the prefix length, the significant octets, the router."""
    out = bytearray()
    for net, via in routes:
        width = (net.prefixlen + 7) // 8
        out.append(net.prefixlen)
        out += net.network_address.packed[:width]
        out += via.packed
    return bytes(out)


def decode_classless_routes(data: bytes) -> tuple[tuple[ipaddress.IPv4Network, ipaddress.IPv4Address], ...]:
    """The routes of an option 121 value; ValueError for a malformed one."""
    routes = []
    i = 0
    while i < len(data):
        plen = data[i]
        if plen > 32:
            raise ValueError(f"classless route prefix length {plen} over 32")
        width = (plen + 7) // 8
        if i + 1 + width + 4 > len(data):
            raise ValueError("classless route option truncated")
        dst = data[i + 1 : i + 1 + width] + b"\0" * (4 - width)
        via = data[i + 1 + width : i + 5 + width]
        routes.append((ipaddress.IPv4Network((ipaddress.IPv4Address(dst), plen)), ipaddress.IPv4Address(via)))
        i += 5 + width
    return tuple(routes)


def v4_routes_option(lease: Lease) -> tuple[tuple[ipaddress.IPv4Network, ipaddress.IPv4Address], ...]:
    """What option 121 carries: the IPAM routes, then the default route via the gateway.

    RFC 3442: a client that takes option 121 ignores option 3, so the default route is in it.
    """
    routes = list(lease.v4_routes)
    if lease.v4_gateway is not None and not any(net.prefixlen == 0 for net, _ in routes):
        routes.append((ipaddress.IPv4Network("0.0.0.0/0"), lease.v4_gateway))
    return tuple(routes)


def encode_search(domains: tuple[str, ...]) -> bytes:
    """Option 119 / DHCPv6 option 24: domains as uncompressed DNS labels."""
    out = bytearray()
    for domain in domains:
        for label in domain.strip(".").split("."):
            raw = label.encode("idna") if label else b""
            if not 0 < len(raw) < 64:
                raise ValueError(f"search domain {domain!r} has an empty or over-long label")
            out.append(len(raw))
            out += raw
        out.append(0)
    return bytes(out)


def decode_search(data: bytes) -> tuple[str, ...]:
    domains: list[str] = []
    labels: list[str] = []
    i = 0
    while i < len(data):
        n = data[i]
        if n == 0:
            domains.append(".".join(labels))
            labels = []
            i += 1
            continue
        if n >= 64 or i + 1 + n > len(data):
            raise ValueError("malformed domain label")
        labels.append(data[i + 1 : i + 1 + n].decode("idna"))
        i += 1 + n
    if labels:
        raise ValueError("domain list ends inside a name")
    return tuple(domains)


# ------------------------------------------------------------------------------------
# Requests and answers
# ------------------------------------------------------------------------------------

DISCOVER, OFFER, REQUEST, DECLINE, ACK, NAK, RELEASE, INFORM = 1, 2, 3, 4, 5, 6, 7, 8


@dataclass(frozen=True)
class Dhcp4Request:
    """A DHCPv4 client message, as the codec parsed it."""

    src_mac: str
    chaddr: str
    xid: int
    message_type: int
    ciaddr: ipaddress.IPv4Address
    requested: ipaddress.IPv4Address | None = None
    server_id: ipaddress.IPv4Address | None = None
    broadcast_flag: bool = False


@dataclass(frozen=True)
class Dhcp4Reply:
    message_type: int
    lease: Lease
    request: Dhcp4Request

    @property
    def unicast_ok(self) -> bool:
        """Send to the client's MAC and address (a renewal), else to broadcast."""
        return self.message_type != NAK and self.request.ciaddr != ipaddress.IPv4Address(0)


def answer_v4(lease: Lease, req: Dhcp4Request) -> Dhcp4Reply | None:
    """OFFER for DISCOVER; ACK (or NAK) for REQUEST; ACK for INFORM; nothing otherwise.

    Only the VM's own MAC, as frame source and as ``chaddr``, is answered.
    """
    if lease.v4 is None or req.src_mac.lower() != lease.mac or req.chaddr.lower() != lease.mac:
        return None
    if req.message_type == DISCOVER:
        return Dhcp4Reply(OFFER, lease, req)
    if req.message_type == INFORM:
        return Dhcp4Reply(ACK, lease, req)
    if req.message_type == REQUEST:
        if req.server_id is not None and req.server_id != lease.server_v4:
            return None  # the client chose another server's offer
        asked = req.requested or (req.ciaddr if req.ciaddr != ipaddress.IPv4Address(0) else None)
        return Dhcp4Reply(ACK if asked in (None, lease.v4.ip) else NAK, lease, req)
    return None


SOLICIT6, ADVERTISE6, REQUEST6, CONFIRM6, RENEW6, REBIND6, REPLY6, RELEASE6, DECLINE6, INFO6 = (
    1,
    2,
    3,
    4,
    5,
    6,
    7,
    8,
    9,
    11,
)


@dataclass(frozen=True)
class Dhcp6Request:
    src_mac: str
    src_ip: ipaddress.IPv6Address
    message_type: int
    trid: int
    client_duid: bytes
    iaid: int | None
    server_duid: bytes | None = None
    rapid_commit: bool = False


@dataclass(frozen=True)
class Dhcp6Reply:
    message_type: int
    lease: Lease
    request: Dhcp6Request
    with_address: bool


def server_duid(lease: Lease) -> bytes:
    """DUID-LL (type 3, hardware type 1) of the server MAC."""
    return b"\x00\x03\x00\x01" + bytes.fromhex(lease.server_mac.replace(":", ""))


def answer_v6(lease: Lease, req: Dhcp6Request) -> Dhcp6Reply | None:
    """ADVERTISE for SOLICIT (REPLY with rapid commit); REPLY for REQUEST, RENEW, REBIND,
    CONFIRM and INFORMATION-REQUEST; only from the VM's own MAC."""
    if lease.v6 is None or req.src_mac.lower() != lease.mac:
        return None
    if req.server_duid is not None and req.server_duid != server_duid(lease):
        return None
    if req.message_type == SOLICIT6:
        return Dhcp6Reply(REPLY6 if req.rapid_commit else ADVERTISE6, lease, req, req.iaid is not None)
    if req.message_type in (REQUEST6, RENEW6, REBIND6):
        return Dhcp6Reply(REPLY6, lease, req, req.iaid is not None)
    if req.message_type in (CONFIRM6, INFO6):
        return Dhcp6Reply(REPLY6, lease, req, False)
    return None


@dataclass(frozen=True)
class RouterSolicit:
    src_mac: str


def answers_rs(lease: Lease, rs: RouterSolicit) -> bool:
    return lease.v6 is not None and rs.src_mac.lower() == lease.mac
