"""``k8s.v1.cni.cncf.io/network-status``: what the pod got, byte for byte as Multus writes it.

Built from the delegates' CNI results (any result version), formatted with Go's
``json.MarshalIndent`` escapes, and read back from annotations Multus or kvnet wrote. Pure
functions.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from kvnet.core.errors import InvalidAnnotation
from kvnet.core.gojson import (
    GoTypeError,
    as_int,
    as_list,
    as_str,
    go_fields,
    go_ip_string,
    go_json_kind,
    go_marshal_indent,
    go_type_error,
    load_annotation,
    parse_ip,
)
from kvnet.core.model import DeviceInfo, NetworkStatus

NETWORK_STATUS = "k8s.v1.cni.cncf.io/network-status"

# ------------------------------------------------------------------------------------
# k8s.v1.cni.cncf.io/network-status
# ------------------------------------------------------------------------------------

_DNS_FIELDS = ("nameservers", "domain", "search", "options")
_DEVINFO_ORDER = ("type", "version", "pci", "vdpa", "vhost-user", "memif")


def _dns(raw: object) -> dict[str, Any]:
    """CNI result DNS → Multus's DNS struct: four keys, empty ones left out."""
    if not isinstance(raw, Mapping):
        return {}
    out: dict[str, Any] = {}
    for key in _DNS_FIELDS:
        value = raw.get(key)
        if key == "domain":
            if isinstance(value, str) and value:
                out[key] = value
        elif isinstance(value, list) and value:
            out[key] = [str(v) for v in value]
    return out


def _is_default_route(route: Mapping[str, Any]) -> bool:
    dst = route.get("dst")
    if not isinstance(dst, str):
        return False
    ip = parse_ip(dst.partition("/")[0])
    return ip is not None and int(ip) == 0


def _bare_ip(address: object) -> str | None:
    if not isinstance(address, str):
        return None
    ip = parse_ip(address.partition("/")[0])
    return go_ip_string(ip) if ip is not None else None


def _gateway(gw: object) -> str | None:
    """A default route's gateway as Multus writes it: Go's ``net.IP.String()``, which is
    ``<nil>`` for a route without one."""
    if gw is None or gw == "":
        return "<nil>"
    return _bare_ip(gw)


def _result_parts(
    result: Mapping[str, Any],
) -> tuple[list[Mapping[str, Any]], list[Mapping[str, Any]], list[Mapping[str, Any]]]:
    """Interfaces, ips and routes of any CNI result version (0.1.0/0.2.0 ``ip4``/``ip6`` too)."""

    def maps(value: object) -> list[Mapping[str, Any]]:
        return [i for i in value if isinstance(i, Mapping)] if isinstance(value, list) else []

    ifaces, ips, routes = maps(result.get("interfaces")), maps(result.get("ips")), maps(result.get("routes"))
    for key in ("ip4", "ip6"):
        old = result.get(key)
        if isinstance(old, Mapping):
            ips.append({"address": old.get("ip"), "gateway": old.get("gateway")})
            routes.extend(maps(old.get("routes")))
    return ifaces, ips, routes


def _text(value: object) -> str | None:
    return value if isinstance(value, str) and value else None


def status_from_result(
    network_name: str,
    result: Mapping[str, Any],
    *,
    default: bool,
    device_info: DeviceInfo | None = None,
) -> tuple[NetworkStatus, ...]:
    """The network-status entries for one delegate's result (nadutils ``CreateNetworkStatuses``).

    One interface: one entry with every IP and the default-route gateways (``<nil>`` for a
    default route without a gateway, as Go prints it). Several:
    one entry per interface with a sandbox, IPs placed by their ``interface`` index
    (unindexed IPs go to the last one), ``default`` on the interface whose IP has the
    gateway. A result without interfaces gives none, its IPs included (a 0.2.0 result,
    the KubeVirt binding's empty one), as Multus.
    """
    ifaces, ips, routes = _result_parts(result)
    dns = _dns(result.get("dns"))
    gateways = tuple(g for g in (_gateway(r.get("gw")) for r in routes if _is_default_route(r)) if g is not None)

    def mtu_of(iface: Mapping[str, Any]) -> int | None:
        mtu = iface.get("mtu")
        return mtu if isinstance(mtu, int) and not isinstance(mtu, bool) and mtu > 0 else None

    def all_ips() -> tuple[str, ...]:
        return tuple(ip for ip in (_bare_ip(c.get("address")) for c in ips) if ip is not None)

    if len(ifaces) <= 1:
        if not ifaces:
            return ()
        name: str | None = None
        mac: str | None = None
        mtu: int | None = None
        for iface in ifaces:
            if iface.get("sandbox"):
                name = _text(iface.get("name"))
                mac = _text(iface.get("mac"))
                mtu = mtu_of(iface)
        return (
            NetworkStatus(
                name=network_name,
                interface=name,
                ips=all_ips(),
                mac=mac,
                mtu=mtu,
                default=default,
                dns=dns,
                device_info=device_info,
                gateway=gateways,
            ),
        )

    gw_index = -1
    if default:
        for c in ips:
            idx = c.get("interface")
            if c.get("gateway") and isinstance(idx, int):
                gw_index = idx
                break
    entries: list[dict[str, Any]] = []
    index_map: dict[int, int] = {}
    did_default = found_first = False
    for i, iface in enumerate(ifaces):
        if not iface.get("sandbox"):
            continue
        is_default = False
        if default and i == gw_index and not did_default:
            is_default = did_default = True
        if default and gw_index == -1 and not found_first:
            is_default = found_first = True
        index_map[i] = len(entries)
        entries.append(
            {
                "interface": _text(iface.get("name")),
                "mac": _text(iface.get("mac")),
                "mtu": mtu_of(iface),
                "default": is_default,
                "ips": [],
            }
        )
    for c in ips:
        ip = _bare_ip(c.get("address"))
        if ip is None:
            continue
        idx = c.get("interface")
        if isinstance(idx, int) and not isinstance(idx, bool):
            if idx in index_map:
                entries[index_map[idx]]["ips"].append(ip)
        elif entries:
            entries[-1]["ips"].append(ip)
    return tuple(
        NetworkStatus(
            name=network_name,
            interface=e["interface"],
            ips=tuple(e["ips"]),
            mac=e["mac"],
            mtu=e["mtu"],
            default=e["default"],
            dns=dns,
            device_info=device_info,
            gateway=gateways,
        )
        for e in entries
    )


def device_info_to_json(info: DeviceInfo) -> dict[str, Any]:
    """A device-info object in the device-info spec's key order; unknown keys kept after."""
    out: dict[str, Any] = {}
    if info.type:
        out["type"] = info.type
    if info.version:
        out["version"] = info.version
    for key in _DEVINFO_ORDER[2:]:
        if info.raw.get(key):
            out[key] = info.raw[key]
    for key, value in info.raw.items():
        if key not in out and key not in ("type", "version"):
            out[key] = value
    return out


def status_to_json(status: NetworkStatus) -> dict[str, Any]:
    """One network-status element in Multus's key order and omission rules."""
    out: dict[str, Any] = {"name": status.name}
    if status.interface:
        out["interface"] = status.interface
    if status.ips:
        out["ips"] = list(status.ips)
    if status.mac:
        out["mac"] = status.mac
    if status.mtu:
        out["mtu"] = status.mtu
    if status.default:
        out["default"] = True
    out["dns"] = _dns(status.dns)
    if status.device_info is not None:
        out["device-info"] = device_info_to_json(status.device_info)
    if status.gateway:
        out["gateway"] = list(status.gateway)
    return out


def format_network_status(statuses: Sequence[NetworkStatus]) -> str:
    """The network-status annotation value, byte for byte as Multus writes it."""
    return "[" + ",".join(go_marshal_indent(status_to_json(s)) for s in statuses) + "]"


def _status_element(raw: object, index: int) -> NetworkStatus:
    path = "NetworkStatus"
    if not isinstance(raw, dict):
        raise GoTypeError(f"json: cannot unmarshal {go_json_kind(raw)} into Go value of type v1.{path}")
    f = go_fields(raw, ("name", "interface", "ips", "mac", "mtu", "default", "dns", "device-info", "gateway"))
    default = f.get("default")
    if default is not None and not isinstance(default, bool):
        raise go_type_error(default, f"{path}.default", "bool")
    dns = f.get("dns")
    if dns is not None and not isinstance(dns, dict):
        raise go_type_error(dns, f"{path}.dns", "v1.DNS")
    dev = f.get("device-info")
    if dev is not None and not isinstance(dev, dict):
        raise go_type_error(dev, f"{path}.device-info", "v1.DeviceInfo")
    device_info = None
    if dev is not None:
        device_info = DeviceInfo(
            type=as_str(dev.get("type"), f"{path}.device-info.type"),
            version=as_str(dev.get("version"), f"{path}.device-info.version"),
            raw=dev,
        )

    def as_strs(key: str) -> tuple[str, ...]:
        return tuple(as_str(v, f"{path}.{key}") for v in as_list(f.get(key), f"{path}.{key}", "[]string"))

    return NetworkStatus(
        name=as_str(f.get("name"), f"{path}.name"),
        interface=as_str(f.get("interface"), f"{path}.interface") or None,
        ips=as_strs("ips"),
        mac=as_str(f.get("mac"), f"{path}.mac") or None,
        mtu=as_int(f.get("mtu"), f"{path}.mtu") or None,
        default=bool(default),
        dns=_dns(dns),
        device_info=device_info,
        gateway=as_strs("gateway"),
    )


def parse_network_status(value: str) -> tuple[NetworkStatus, ...]:
    """Read a network-status annotation (written by Multus or kvnet)."""
    data = load_annotation(value, f"failed to parse {NETWORK_STATUS} annotation: ")
    if data is None:
        return ()
    try:
        if not isinstance(data, list):
            raise GoTypeError(f"json: cannot unmarshal {go_json_kind(data)} into Go value of type []v1.NetworkStatus")
        return tuple(_status_element(raw, i) for i, raw in enumerate(data))
    except GoTypeError as err:
        raise InvalidAnnotation(f"failed to parse {NETWORK_STATUS} annotation: {err}") from None
