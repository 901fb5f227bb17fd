"""The server loop: one persistent tap per served NIC, opened without any capability.

The binding CNI creates the tap owned by the server's uid/gid (``TUNSETOWNER``), so
``TUNSETIFF`` on its name is allowed to that user without ``CAP_NET_ADMIN``; frames read
are the bridge's, frames written go onto it. No sockets, no privileged ports.
"""

from __future__ import annotations

import fcntl
import logging
import os
import select
import struct
import sys
import threading
import time
from dataclasses import dataclass, field

from kvnet.core.errors import DeviceError
from kvnet.guestnet import codec, model
from kvnet.guestnet.model import Dhcp4Request, Dhcp6Request, Lease, RouterSolicit

log = logging.getLogger("kvnet.guestnet")

TUNSETIFF = 0x400454CA
IFF_TAP = 0x0002
IFF_NO_PI = 0x1000
RA_INTERVAL = 10.0  # seconds between unsolicited router advertisements
NS_INTERVAL = 2.0


def open_tap(name: str) -> int:
    """A file descriptor on the persistent tap ``name`` (which must be ours)."""
    try:
        fd = os.open("/dev/net/tun", os.O_RDWR | os.O_NONBLOCK)
    except OSError as err:
        raise DeviceError(f"cannot open /dev/net/tun: {err.strerror}") from None
    try:
        fcntl.ioctl(fd, TUNSETIFF, struct.pack("16sH", name.encode(), IFF_TAP | IFF_NO_PI))
    except OSError as err:
        os.close(fd)
        raise DeviceError(
            f"cannot attach to tap {name}: {err.strerror} (it must exist and be owned by uid {os.getuid()})"
        ) from None
    return fd


@dataclass
class ServedNic:
    """One tap and its lease, with what was learned on the wire."""

    tap: str
    lease: Lease
    fd: int = -1
    router_mac: str | None = None
    counts: dict[str, int] = field(default_factory=dict)

    def count(self, what: str) -> None:
        self.counts[what] = self.counts.get(what, 0) + 1


def handle(nic: ServedNic, frame: bytes) -> list[bytes]:
    """The frames to write back for one frame read (pure but for the learned router MAC)."""
    lease = nic.lease
    if lease.v6_gateway is not None and nic.router_mac is None:
        na = codec.neighbor_advert(frame)
        if na is not None and na[0] == lease.v6_gateway:
            nic.router_mac = na[1]
            log.info("%s: IPv6 gateway %s is at %s", nic.tap, lease.v6_gateway, na[1])
            return [codec.build_ra(lease, router_mac=nic.router_mac)]
    req = codec.parse(frame)
    if isinstance(req, Dhcp4Request):
        reply4 = model.answer_v4(lease, req)
        if reply4 is None:
            if req.src_mac != lease.server_mac:
                nic.count("dhcp4-ignored")
            return []
        nic.count(f"dhcp4-{reply4.message_type}")
        log.info(
            "%s: DHCPv4 type %d from %s -> type %d %s",
            nic.tap,
            req.message_type,
            req.src_mac,
            reply4.message_type,
            lease.v4,
        )
        return [codec.build_dhcp4(reply4)]
    if isinstance(req, Dhcp6Request):
        reply6 = model.answer_v6(lease, req)
        if reply6 is None:
            nic.count("dhcp6-ignored")
            return []
        nic.count(f"dhcp6-{reply6.message_type}")
        log.info(
            "%s: DHCPv6 type %d from %s -> type %d %s",
            nic.tap,
            req.message_type,
            req.src_mac,
            reply6.message_type,
            lease.v6,
        )
        return [codec.build_dhcp6(reply6)]
    if isinstance(req, RouterSolicit):
        if not model.answers_rs(lease, req):
            return []
        nic.count("ra")
        return [codec.build_ra(lease, router_mac=nic.router_mac)]
    if isinstance(req, tuple) and nic.router_mac and req == ("ns", lease.server_v6_link_local, lease.mac):
        return [codec.build_na(lease, req[1], lladdr=nic.router_mac, to_mac=lease.mac)]
    return []


def serve(nics: list[ServedNic], stop: threading.Event) -> None:
    """Answer on every tap until ``stop`` is set; router advertisements every few seconds."""
    for nic in nics:
        nic.fd = open_tap(nic.tap)
        log.info(
            "%s: serving %s (v4 %s, v6 %s, mtu %d)", nic.tap, nic.lease.mac, nic.lease.v4, nic.lease.v6, nic.lease.mtu
        )
    print("serving " + " ".join(n.tap for n in nics), file=sys.stderr, flush=True)  # the ready line
    by_fd = {nic.fd: nic for nic in nics}
    next_ra = 0.0
    next_ns = 0.0
    try:
        while not stop.is_set():
            now = time.monotonic()
            if now >= next_ns:
                next_ns = now + NS_INTERVAL
                for nic in nics:
                    if nic.lease.v6 is not None and nic.lease.v6_gateway is not None and nic.router_mac is None:
                        _write(nic, codec.build_gateway_ns(nic.lease))
            if now >= next_ra:
                next_ra = now + RA_INTERVAL
                for nic in nics:
                    if nic.lease.v6 is not None:
                        _write(nic, codec.build_ra(nic.lease, router_mac=nic.router_mac))
            ready, _, _ = select.select(list(by_fd), [], [], 0.5)
            for fd in ready:
                nic = by_fd[fd]
                while True:
                    try:
                        frame = os.read(fd, 65536)
                    except BlockingIOError:
                        break
                    for out in handle(nic, frame):
                        _write(nic, out)
    finally:
        for nic in nics:
            os.close(nic.fd)


def _write(nic: ServedNic, frame: bytes) -> None:
    try:
        os.write(nic.fd, frame)
    except OSError as err:  # the tap's carrier is down until read; a lost frame is retried by the client
        log.debug("%s: write failed: %s", nic.tap, err.strerror)
