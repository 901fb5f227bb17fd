"""``kvnet-guestnet``: serve every kvnet NIC of this pod whose binding record has addresses.

Started by the sidecar (uid 107, no capabilities) for the VM's lifetime. It reads the
binding records from ``/sys/class/net/<pod iface>/ifalias`` and serves each on the tap the
binding CNI made for it (``kvnet.core.bindrecord.server_tap_name``); a NIC without IPAM,
or without a server tap, is left alone.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import socket
import sys
import threading
from pathlib import Path
from types import FrameType

from kvnet.core import bindrecord
from kvnet.core.errors import KvnetError
from kvnet.guestnet.model import DEFAULT_LEASE_SECONDS, lease_from_record
from kvnet.guestnet.tapio import ServedNic, serve

log = logging.getLogger("kvnet.guestnet")


def read_resolv_conf(path: str) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(nameservers, search domains) of a resolv.conf; empty when it is missing."""
    servers: list[str] = []
    search: list[str] = []
    try:
        text = Path(path).read_text()
    except OSError:
        return (), ()
    for line in text.splitlines():
        words = line.split()
        if len(words) >= 2 and words[0] == "nameserver":
            servers.append(words[1])
        elif words and words[0] == "search":
            search = words[1:]
    return tuple(servers), tuple(search)


def served_nics(sys_class_net: str, *, hostname: str, resolv_conf: str, lease_seconds: int) -> list[ServedNic]:
    """The NICs to serve: a record with addresses and a server tap beside it."""
    dns, search = read_resolv_conf(resolv_conf)
    nics = []
    root = Path(sys_class_net)
    for link in sorted(p.name for p in root.iterdir()) if root.is_dir() else []:
        try:
            alias = (root / link / "ifalias").read_text().strip()
        except OSError:
            continue
        record = bindrecord.decode(alias) if bindrecord.is_tagged(alias) else None
        if record is None or not record.ip.addresses:
            continue
        tap = bindrecord.server_tap_name(link)
        if not (root / tap).exists():
            log.info("%s: no server tap %s; not served", link, tap)
            continue
        lease = lease_from_record(record, hostname=hostname, dns=dns, search=search, lease_seconds=lease_seconds)
        nics.append(ServedNic(tap, lease))
    return nics


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="kvnet-guestnet", description="DHCPv4, RA and DHCPv6 for the VM's kvnet NICs")
    p.add_argument("--sys-class-net", default="/sys/class/net")
    p.add_argument("--hostname", default=socket.gethostname())
    p.add_argument("--resolv-conf", default="/etc/resolv.conf")
    p.add_argument("--lease-seconds", type=int, default=DEFAULT_LEASE_SECONDS)
    p.add_argument("-v", "--verbose", action="store_true")
    args = p.parse_args(sys.argv[1:] if argv is None else argv)
    logging.basicConfig(
        stream=sys.stderr,
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, on_signal)
    try:
        nics = served_nics(
            args.sys_class_net, hostname=args.hostname, resolv_conf=args.resolv_conf, lease_seconds=args.lease_seconds
        )
        if not nics:
            log.info("no NIC to serve (uid %d)", os.getuid())
            return 0
        serve(nics, stop)
    except KvnetError as err:
        print(f"kvnet-guestnet: {err.msg}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
