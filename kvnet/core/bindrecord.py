"""The binding record: what ``kvnet-binding`` leaves in the pod netns for the sidecar.

The sidecar runs without capabilities or API access, so the facts the guest needs once
the binding has re-plumbed a pod interface (its original MAC, its MTU, the IPAM addresses,
gateways and routes the pod stopped using) are kept in the ``ifalias`` of the pod
interface itself, readable at ``/sys/class/net/<pod iface>/ifalias``. The kernel caps an
ifalias at 255 bytes, so the record is compact JSON, version-tagged by its first key::

    {"kvnet":1,"mac":"02:00:00:aa:bb:cc","mtu":1500,"ip":["10.1.0.5/24"],
     "gw":["10.1.0.1"],"rt":[["10.2.0.0/16","10.1.0.1"]]}

``ip``, ``gw`` and ``rt`` are left out when empty; a route's ``via`` is ``""`` for a
device route. A record that would not fit is refused, never truncated. Pure functions.
"""

from __future__ import annotations

import ipaddress
import json
from typing import Any

from kvnet.core.errors import DecodeFailure, InvalidConfig
from kvnet.core.model import BindingRecord, GuestIpConfig, is_mac

VERSION = 1
TAG = '{"kvnet":'
MAX_BYTES = 255  # IFALIASZ - 1: the kernel's limit for an interface alias
_MTU_RANGE = (68, 65535)


def encode(record: BindingRecord) -> str:
    """The record as the compact, versioned JSON written to an ifalias.

    Raises ``InvalidConfig`` for a record with malformed fields or one that would be
    longer than 255 bytes (say, many IPv6 routes): the alias is never truncated.
    """
    problem = _problem(record.original_mac, record.mtu, record.ip)
    if problem:
        raise InvalidConfig(f"cannot encode binding record: {problem}")
    body: dict[str, Any] = {"kvnet": VERSION, "mac": record.original_mac.lower(), "mtu": record.mtu}
    if record.ip.addresses:
        body["ip"] = list(record.ip.addresses)
    if record.ip.gateways:
        body["gw"] = list(record.ip.gateways)
    if record.ip.routes:
        body["rt"] = [[dst, via] for dst, via in record.ip.routes]
    text = json.dumps(body, separators=(",", ":"))
    if len(text.encode()) > MAX_BYTES:
        raise InvalidConfig(
            f"binding record for MAC {record.original_mac} is {len(text.encode())} bytes, over the"
            f" {MAX_BYTES}-byte ifalias limit ({len(record.ip.addresses)} addresses,"
            f" {len(record.ip.gateways)} gateways, {len(record.ip.routes)} routes);"
            " use fewer IPAM routes for this attachment"
        )
    return text


def is_tagged(text: str) -> bool:
    """True when an ifalias was written by kvnet (whatever its version)."""
    return text.strip().startswith(TAG)


def decode(text: str | None) -> BindingRecord | None:
    """The record in an ifalias; None for an empty or foreign alias.

    Raises ``DecodeFailure`` for a kvnet-tagged alias that is malformed or of a version
    this code does not know.
    """
    if text is None or not is_tagged(text):
        return None
    shown = text if len(text) <= MAX_BYTES else text[:MAX_BYTES] + "..."
    try:
        body = json.loads(text)
    except (ValueError, RecursionError) as err:
        raise DecodeFailure(f"malformed kvnet binding record {shown!r}: {err or type(err).__name__}") from None
    if not isinstance(body, dict):
        raise DecodeFailure(f"malformed kvnet binding record {shown!r}: not an object")
    version = body.get("kvnet")
    if version != VERSION or isinstance(version, bool):
        raise DecodeFailure(f"unsupported kvnet binding record version {version!r} (this kvnet reads {VERSION})")
    unknown = sorted(set(body) - {"kvnet", "mac", "mtu", "ip", "gw", "rt"})
    if unknown:
        raise DecodeFailure(f"malformed kvnet binding record {shown!r}: unknown keys {unknown}")
    mac, mtu = body.get("mac"), body.get("mtu")
    ips, gws, rts = body.get("ip", []), body.get("gw", []), body.get("rt", [])
    if not (_str_list(ips) and _str_list(gws) and isinstance(rts, list)):
        raise DecodeFailure(f"malformed kvnet binding record {shown!r}: ip, gw and rt must be lists of strings")
    if not all(isinstance(r, list) and len(r) == 2 and _str_list(r) for r in rts):
        raise DecodeFailure(f"malformed kvnet binding record {shown!r}: each rt entry must be [dst, via]")
    ip = GuestIpConfig(tuple(ips), tuple(gws), tuple((r[0], r[1]) for r in rts))
    problem = _problem(mac, mtu, ip)
    if problem:
        raise DecodeFailure(f"malformed kvnet binding record {shown!r}: {problem}")
    assert isinstance(mac, str) and isinstance(mtu, int)
    return BindingRecord(original_mac=mac, mtu=mtu, ip=ip, version=VERSION)


def _str_list(value: object) -> bool:
    return isinstance(value, list) and all(isinstance(v, str) for v in value)


def _problem(mac: object, mtu: object, ip: GuestIpConfig) -> str | None:
    """What is wrong with the fields of a record, or None."""
    if not is_mac(mac):
        return f"MAC {mac!r} is not a colon-separated 48-bit MAC address"
    if not isinstance(mtu, int) or isinstance(mtu, bool) or not _MTU_RANGE[0] <= mtu <= _MTU_RANGE[1]:
        return f"MTU {mtu!r} is not an integer in {_MTU_RANGE[0]}..{_MTU_RANGE[1]}"
    for addr in ip.addresses:
        if "/" not in addr or not _valid(ipaddress.ip_interface, addr):
            return f"address {addr!r} is not an address with a prefix length"
    for gw in ip.gateways:
        if not _valid(ipaddress.ip_address, gw):
            return f"gateway {gw!r} is not an IP address"
    for dst, via in ip.routes:
        if not _valid(lambda t: ipaddress.ip_network(t, strict=False), dst):
            return f"route destination {dst!r} is not a CIDR"
        if via and not _valid(ipaddress.ip_address, via):
            return f"route gateway {via!r} is not an IP address"
    return None


def _valid(parse: Any, text: str) -> bool:
    try:
        parse(text)
    except ValueError:
        return False
    return True


SERVER_TAP_PREFIX = "kvd"


def server_tap_name(pod_iface: str) -> str:
    """The tap the binding makes beside a served NIC's tap for the guest-address server
    (``kvnet.guestnet``): ``kvd`` + the pod interface without ``pod`` (``kvdeth0``)."""
    suffix = pod_iface[3:] if pod_iface.startswith("pod") else pod_iface
    return SERVER_TAP_PREFIX + suffix
