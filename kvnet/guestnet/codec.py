"""Frames in and out, with scapy (the one module that imports it).

:func:`parse` turns one Ethernet frame read from the server tap into a request of
``kvnet.guestnet.model`` (or None for anything else); the ``build_*`` functions turn an
answer into the frame written back.
"""

from __future__ import annotations

import ipaddress
import logging

logging.getLogger("scapy.runtime").setLevel(logging.ERROR)
logging.getLogger("scapy.loading").setLevel(logging.ERROR)

from scapy.layers.dhcp import BOOTP, DHCP  # noqa: E402
from scapy.layers.dhcp6 import (  # noqa: E402
    DHCP6,
    DHCP6_Advertise,
    DHCP6_Reply,
    DHCP6OptClientId,
    DHCP6OptDNSDomains,
    DHCP6OptDNSServers,
    DHCP6OptIA_NA,
    DHCP6OptIAAddress,
    DHCP6OptRapidCommit,
    DHCP6OptServerId,
)
from scapy.layers.inet import IP, UDP  # noqa: E402
from scapy.layers.inet6 import (  # noqa: E402
    ICMPv6ND_NA,
    ICMPv6ND_NS,
    ICMPv6ND_RA,
    ICMPv6ND_RS,
    ICMPv6NDOptDstLLAddr,
    ICMPv6NDOptMTU,
    ICMPv6NDOptPrefixInfo,
    ICMPv6NDOptSrcLLAddr,
    IPv6,
)
from scapy.layers.l2 import Ether  # noqa: E402
from scapy.packet import Packet  # noqa: E402

from kvnet.guestnet import model  # noqa: E402
from kvnet.guestnet.model import Dhcp4Reply, Dhcp4Request, Dhcp6Reply, Dhcp6Request, Lease, RouterSolicit  # noqa: E402

BROADCAST = "ff:ff:ff:ff:ff:ff"
ALL_NODES = "ff02::1"


def _mac(raw: bytes) -> str:
    return ":".join(f"{b:02x}" for b in raw[:6])


def _options(dhcp: Packet) -> dict[str, object]:
    found: dict[str, object] = {}
    for opt in dhcp.options:
        if isinstance(opt, tuple) and len(opt) >= 2:
            found[str(opt[0])] = opt[1]
    return found


def parse(frame: bytes) -> Dhcp4Request | Dhcp6Request | RouterSolicit | tuple[str, ipaddress.IPv6Address, str] | None:
    """The request in a frame, or None. A neighbor solicitation is ``("ns", target, src_mac)``."""
    try:
        pkt = Ether(frame)
    except Exception:  # scapy raises anything on garbage: a frame it cannot read is not for us
        return None
    src = str(pkt.src).lower()
    if DHCP in pkt and BOOTP in pkt and pkt[BOOTP].op == 1:
        opts = _options(pkt[DHCP])
        mtype = opts.get("message-type")
        if not isinstance(mtype, int):
            return None
        requested = opts.get("requested_addr")
        server_id = opts.get("server_id")
        return Dhcp4Request(
            src_mac=src,
            chaddr=_mac(bytes(pkt[BOOTP].chaddr)),
            xid=int(pkt[BOOTP].xid),
            message_type=mtype,
            ciaddr=ipaddress.IPv4Address(str(pkt[BOOTP].ciaddr)),
            requested=ipaddress.IPv4Address(str(requested)) if requested else None,
            server_id=ipaddress.IPv4Address(str(server_id)) if server_id else None,
            broadcast_flag=bool(int(pkt[BOOTP].flags) & 0x8000),
        )
    msg = pkt[UDP].payload if IPv6 in pkt and UDP in pkt and pkt[UDP].dport == 547 else None
    if isinstance(msg, DHCP6):  # DHCP6_Solicit, DHCP6_Request, ...: subclasses, not one layer
        client = msg.getlayer(DHCP6OptClientId)
        if client is None:
            return None
        server = msg.getlayer(DHCP6OptServerId)
        ia = msg.getlayer(DHCP6OptIA_NA)
        return Dhcp6Request(
            src_mac=src,
            src_ip=ipaddress.IPv6Address(str(pkt[IPv6].src)),
            message_type=int(msg.msgtype),
            trid=int(msg.trid),
            client_duid=bytes(client.duid),
            iaid=int(ia.iaid) if ia is not None else None,
            server_duid=bytes(server.duid) if server is not None else None,
            rapid_commit=msg.getlayer(DHCP6OptRapidCommit) is not None,
        )
    if ICMPv6ND_RS in pkt:
        return RouterSolicit(src)
    if ICMPv6ND_NS in pkt:
        return ("ns", ipaddress.IPv6Address(str(pkt[ICMPv6ND_NS].tgt)), src)
    return None


def build_dhcp4(reply: Dhcp4Reply) -> bytes:
    """The OFFER/ACK/NAK frame: address, mask, router, option 121, DNS, search, MTU, hostname."""
    lease, req = reply.lease, reply.request
    assert lease.v4 is not None and lease.server_v4 is not None
    server = str(lease.server_v4)
    opts: list[object] = [("message-type", reply.message_type), ("server_id", server)]
    yiaddr = "0.0.0.0"
    if reply.message_type != model.NAK:
        if reply.message_type != model.ACK or req.message_type != model.INFORM:
            yiaddr = str(lease.v4.ip)
            opts += [
                ("lease_time", lease.lease_seconds),
                ("renewal_time", lease.lease_seconds // 2),
                ("rebinding_time", lease.lease_seconds * 7 // 8),
            ]
        opts.append(("subnet_mask", str(lease.v4.netmask)))
        if lease.v4_gateway is not None:
            opts.append(("router", str(lease.v4_gateway)))
        routes = model.v4_routes_option(lease)
        if routes:
            opts.append((121, model.encode_classless_routes(routes)))
        dns4 = [str(d) for d in lease.dns if d.version == 4]
        if dns4:
            opts.append(("name_server", *dns4))
        if lease.search:
            opts.append(("domain", lease.search[0]))
            opts.append((119, model.encode_search(lease.search)))
        opts.append(("interface-mtu", lease.mtu))
        if lease.hostname:
            opts.append(("hostname", lease.hostname))
    opts.append("end")
    if reply.unicast_ok:
        dst_mac, dst_ip = lease.mac, str(req.ciaddr)
    else:
        dst_mac, dst_ip = BROADCAST, "255.255.255.255"
    frame = (
        Ether(src=lease.server_mac, dst=dst_mac)
        / IP(src=server, dst=dst_ip)
        / UDP(sport=67, dport=68)
        / BOOTP(
            op=2,
            xid=req.xid,
            flags=0x8000 if req.broadcast_flag else 0,
            ciaddr=str(req.ciaddr),
            yiaddr=yiaddr,
            siaddr="0.0.0.0",
            chaddr=bytes.fromhex(lease.mac.replace(":", "")) + b"\0" * 10,
        )
        / DHCP(options=opts)
    )
    return bytes(frame)


def build_dhcp6(reply: Dhcp6Reply) -> bytes:
    """ADVERTISE/REPLY: the IA_NA with the address, DNS servers and search list."""
    lease, req = reply.lease, reply.request
    assert lease.v6 is not None
    msg = (DHCP6_Advertise if reply.message_type == model.ADVERTISE6 else DHCP6_Reply)(trid=req.trid)
    body: Packet = msg / DHCP6OptServerId(duid=model.server_duid(lease)) / DHCP6OptClientId(duid=req.client_duid)
    if reply.with_address and req.iaid is not None:
        addr = DHCP6OptIAAddress(addr=str(lease.v6.ip), preflft=lease.lease_seconds, validlft=lease.lease_seconds)
        body = body / DHCP6OptIA_NA(
            iaid=req.iaid, T1=lease.lease_seconds // 2, T2=lease.lease_seconds * 4 // 5, ianaopts=[addr]
        )
    if req.rapid_commit and reply.message_type == model.REPLY6 and req.message_type == model.SOLICIT6:
        body = body / DHCP6OptRapidCommit()
    dns6 = [str(d) for d in lease.dns if d.version == 6]
    if dns6:
        body = body / DHCP6OptDNSServers(dnsservers=dns6)
    if lease.search:
        body = body / DHCP6OptDNSDomains(dnsdomains=list(lease.search))
    frame = (
        Ether(src=lease.server_mac, dst=lease.mac)
        / IPv6(src=str(lease.server_v6_link_local), dst=str(req.src_ip), hlim=255)
        / UDP(sport=547, dport=546)
        / body
    )
    return bytes(frame)


def build_ra(lease: Lease, *, router_mac: str | None) -> bytes:
    """A router advertisement to all nodes (IPv6 ``ff02::1``) in a frame to the VM's MAC only,
    so other VMs and NICs on the attachment's L2 never hear it: the prefix on-link (addresses
    by DHCPv6, the M and O flags), the MTU, and a default router only when the gateway's MAC is
    known (``router_mac``, carried as the source link-layer address so the guest's traffic
    goes to the gateway itself)."""
    assert lease.v6 is not None
    net = lease.v6.network
    frame = (
        Ether(src=lease.server_mac, dst=lease.mac)
        / IPv6(src=str(lease.server_v6_link_local), dst=ALL_NODES, hlim=255)
        / ICMPv6ND_RA(M=1, O=1, routerlifetime=1800 if router_mac else 0, chlim=64)
        / ICMPv6NDOptSrcLLAddr(lladdr=router_mac or lease.server_mac)
        / ICMPv6NDOptMTU(mtu=lease.mtu)
        / ICMPv6NDOptPrefixInfo(
            prefix=str(net.network_address),
            prefixlen=net.prefixlen,
            L=1,
            A=0,
            validlifetime=lease.lease_seconds,
            preferredlifetime=lease.lease_seconds,
        )
    )
    return bytes(frame)


def build_na(lease: Lease, target: ipaddress.IPv6Address, *, lladdr: str, to_mac: str) -> bytes:
    """A solicited neighbor advertisement for the server's link-local router address."""
    frame = (
        Ether(src=lease.server_mac, dst=to_mac)
        / IPv6(src=str(target), dst=str(model.link_local(to_mac)), hlim=255)
        / ICMPv6ND_NA(tgt=str(target), R=1, S=1, O=1)
        / ICMPv6NDOptDstLLAddr(lladdr=lladdr)
    )
    return bytes(frame)


def build_gateway_ns(lease: Lease) -> bytes:
    """A neighbor solicitation for the IPv6 gateway, to learn its MAC."""
    assert lease.v6_gateway is not None
    gw = lease.v6_gateway.packed
    sol = ipaddress.IPv6Address(b"\xff\x02" + b"\0" * 9 + b"\x01\xff" + gw[13:])
    frame = (
        Ether(src=lease.server_mac, dst="33:33:" + ":".join(f"{b:02x}" for b in sol.packed[12:]))
        / IPv6(src=str(lease.server_v6_link_local), dst=str(sol), hlim=255)
        / ICMPv6ND_NS(tgt=str(lease.v6_gateway))
        / ICMPv6NDOptSrcLLAddr(lladdr=lease.server_mac)
    )
    return bytes(frame)


def neighbor_advert(frame: bytes) -> tuple[ipaddress.IPv6Address, str] | None:
    """(target, MAC) of a neighbor advertisement, or None."""
    try:
        pkt = Ether(frame)
    except Exception:  # as in parse
        return None
    if ICMPv6ND_NA not in pkt:
        return None
    ll = pkt.getlayer(ICMPv6NDOptDstLLAddr)
    mac = str(ll.lladdr) if ll is not None else str(pkt.src)
    return ipaddress.IPv6Address(str(pkt[ICMPv6ND_NA].tgt)), mac.lower()
