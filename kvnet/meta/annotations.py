"""The Multus pod annotations: parse and format them exactly as Multus 4.2 does.

``k8s.v1.cni.cncf.io/networks`` (what a pod asks for, short or JSON form),
``v1.multus-cni.io/default-network`` (a replacement for the cluster network) and
``k8s.v1.cni.cncf.io/network-status`` (what the pod got). Pure functions: every
malformed value raises :class:`~kvnet.core.errors.InvalidAnnotation` (CNI code 7) with the
message Multus prints for it, so a user reading kvnet's error can search Multus's docs.
Go's ``encoding/json`` semantics are kept where users can see them: keys match
case-insensitively, unknown keys are ignored, wrong types get Go's wording.
"""

from __future__ import annotations

import ipaddress
import json
import re
from collections.abc import Mapping, Sequence
from typing import Any

from kvnet.core.errors import InvalidAnnotation
from kvnet.core.model import DeviceInfo, NetworkSelection, NetworkStatus
from kvnet.core.naming import ifname_problem

NETWORKS = "k8s.v1.cni.cncf.io/networks"
NETWORK_STATUS = "k8s.v1.cni.cncf.io/network-status"
DEFAULT_NETWORK = "v1.multus-cni.io/default-network"
RESOURCE_NAME = "k8s.v1.cni.cncf.io/resourceName"

_DNS1123_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_DNS1123_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_IFNAMSIZ = 16
_JSON_HINT = re.compile(r'[\[{"]')
_BAD_IFNAME_CHARS = set(" \t\n\v\f\r/")

_PREFIX = "parsePodNetworkAnnotation: "
_OBJ_PREFIX = _PREFIX + "parsePodNetworkObjectName: "
_JSON_PREFIX = _PREFIX + "failed to parse pod Network Attachment Selection Annotation JSON format: "


# ------------------------------------------------------------------------------------
# Go-compatible value checks (net.ParseIP, net.ParseCIDR, net.ParseMAC)
# ------------------------------------------------------------------------------------


def go_quote(text: str) -> str:
    """Go's ``%q`` for the strings users write (close enough for ASCII and UTF-8)."""
    return json.dumps(text, ensure_ascii=False)


def parse_ip(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """Go's ``net.ParseIP``: dotted IPv4 or IPv6 without a zone; None when invalid."""
    if not isinstance(text, str) or "%" in text or not text.isascii():
        return None
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        return None


def parse_cidr(text: str) -> ipaddress.IPv4Interface | ipaddress.IPv6Interface | None:
    """Go's ``net.ParseCIDR``: ``addr/prefixlen`` with a decimal prefix; None when invalid."""
    addr, sep, plen = text.partition("/")
    if not sep or not plen.isdigit() or not plen.isascii() or (len(plen) > 1 and plen[0] == "0"):
        return None
    ip = parse_ip(addr)
    if ip is None or int(plen) > ip.max_prefixlen:
        return None
    return ipaddress.ip_interface(f"{ip}/{int(plen)}")


def go_ip_string(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> str:
    """``net.IP.String()``: IPv4-mapped IPv6 prints as dotted IPv4, IPv6 compressed."""
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return str(ip.ipv4_mapped)
    return ip.compressed


_MAC_SEP = re.compile(r"^[0-9a-fA-F]{2}([:-])[0-9a-fA-F]{2}(\1[0-9a-fA-F]{2})*$")
_MAC_DOT = re.compile(r"^[0-9a-fA-F]{4}(\.[0-9a-fA-F]{4})*$")


def parse_mac_ok(text: str) -> bool:
    """Go's ``net.ParseMAC``: 6, 8 or 20 bytes, ``:``/``-`` separated or dotted quads."""
    if _MAC_SEP.match(text):
        n = (len(text) + 1) // 3
    elif _MAC_DOT.match(text):
        n = (len(text) + 1) // 5 * 2
    else:
        return False
    return n in (6, 8, 20)


class GoNumber(float):
    """A JSON number written with a fraction or exponent, keeping its literal for Go-style errors."""

    literal: str

    def __new__(cls, literal: str | float) -> GoNumber:  # a float when copied or unpickled
        number = super().__new__(cls, literal)
        number.literal = literal if isinstance(literal, str) else repr(float(literal))
        return number


class GoJsonError(ValueError):
    """Text that Go's ``encoding/json`` would refuse, with Go's wording where it is fixed."""


def _no_constants(name: str) -> Any:
    if name.startswith("-"):
        raise GoJsonError(f"invalid character {name[1]!r} in numeric literal")
    raise GoJsonError(f"invalid character {name[0]!r} looking for beginning of value")


def go_loads(text: str) -> Any:
    """``json.loads`` that refuses what Go refuses (``NaN``, ``Infinity``) and words errors like Go.

    Truncated input is ``unexpected end of JSON input``; other syntax errors carry the
    offending character and offset with Python's detail.
    """
    try:
        return json.loads(text, parse_constant=_no_constants, parse_float=GoNumber)
    except json.JSONDecodeError as err:
        if err.pos >= len(text.rstrip()):
            raise GoJsonError("unexpected end of JSON input") from None
        raise GoJsonError(f"invalid character {text[err.pos]!r} at offset {err.pos + 1}: {err.msg}") from None


def _loads(text: str, prefix: str) -> Any:
    try:
        return go_loads(text)
    except GoJsonError as err:
        raise InvalidAnnotation(prefix + str(err)) from None


# ------------------------------------------------------------------------------------
# A small Go encoding/json look-alike for the selection element
# ------------------------------------------------------------------------------------


class GoTypeError(Exception):
    """``json: cannot unmarshal <json type> into Go struct field <path> of type <go type>``."""


def go_json_kind(value: object) -> str:
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    if isinstance(value, dict):
        return "object"
    return "null"


def go_type_error(value: object, path: str, go_type: str) -> GoTypeError:
    kind = go_json_kind(value)
    if kind == "number" and go_type == "int":
        kind = f"number {getattr(value, 'literal', None) or json.dumps(value)}"
    return GoTypeError(f"json: cannot unmarshal {kind} into Go struct field {path} of type {go_type}")


def _as_str(value: object, path: str) -> str:
    if value is None:
        return ""
    if not isinstance(value, str):
        raise go_type_error(value, path, "string")
    return value


_INT64 = range(-(2**63), 2**63)


def _as_int(value: object, path: str) -> int:
    """A Go ``int`` (64-bit): only an integer literal in range; ``1.0`` and ``1e3`` are refused, as in Go."""
    if value is None:
        return 0
    if isinstance(value, bool) or not isinstance(value, int) or value not in _INT64:
        raise go_type_error(value, path, "int")
    return value


def _as_list(value: object, path: str, go_type: str) -> list[Any]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise go_type_error(value, path, go_type)
    return value


def go_fields(obj: Mapping[str, Any], names: Sequence[str]) -> dict[str, Any]:
    """Go's key matching: each key goes to the field of that exact name, else of that name in
    any case; keys are taken in order, so a later key overwrites an earlier one for the same
    field (``{"name": "a", "Name": "b"}`` is ``b``, as in Go); unknown keys are ignored."""
    out: dict[str, Any] = {}
    lowered = {n.lower(): n for n in names}
    for key, value in obj.items():
        field = key if key in names else lowered.get(key.lower())
        if field is not None:
            out[field] = value
    return out


_PORT_FIELDS = ("hostPort", "containerPort", "protocol", "hostIP")
_BANDWIDTH_FIELDS = ("ingressRate", "ingressBurst", "egressRate", "egressBurst")
_ELEMENT_FIELDS = (
    "name",
    "namespace",
    "ips",
    "mac",
    "infiniband-guid",
    "interface",
    "interfaceRequest",
    "portMappings",
    "bandwidth",
    "deviceID",
    "cni-args",
    "default-route",
)
_ELEM = "NetworkSelectionElement"


def _port_mapping(value: object) -> dict[str, Any]:
    path = f"{_ELEM}.portMappings"
    if not isinstance(value, dict):
        raise go_type_error(value, path, "types.PortMapEntry")
    f = go_fields(value, _PORT_FIELDS)
    out: dict[str, Any] = {
        "hostPort": _as_int(f.get("hostPort"), f"{path}.hostPort"),
        "containerPort": _as_int(f.get("containerPort"), f"{path}.containerPort"),
    }
    for key in ("protocol", "hostIP"):
        text = _as_str(f.get(key), f"{path}.{key}")
        if text:
            out[key] = text
    return out


def _bandwidth(value: object) -> dict[str, int]:
    path = f"{_ELEM}.bandwidth"
    if not isinstance(value, dict):
        raise go_type_error(value, path, "types.BandwidthEntry")
    f = go_fields(value, _BANDWIDTH_FIELDS)
    return {key: _as_int(f.get(key), f"{path}.{key}") for key in _BANDWIDTH_FIELDS}


def _default_route(value: object) -> tuple[str, ...]:
    out = []
    for item in _as_list(value, f"{_ELEM}.default-route", "[]net.IP"):
        if item is None:
            continue
        if not isinstance(item, str):
            raise go_type_error(item, f"{_ELEM}.default-route", "net.IP")
        ip = parse_ip(item)
        if ip is None:
            raise InvalidAnnotation(f"{_JSON_PREFIX}invalid IP address: {item}")
        out.append(go_ip_string(ip))
    return tuple(out)


def _element(raw: object, index: int, pod_namespace: str) -> NetworkSelection:
    if raw is None:
        raise InvalidAnnotation(f"{_JSON_PREFIX}element {index} is null")
    if not isinstance(raw, dict):
        raise GoTypeError(f"json: cannot unmarshal {go_json_kind(raw)} into Go value of type types.{_ELEM}")
    f = go_fields(raw, _ELEMENT_FIELDS)
    name = _as_str(f.get("name"), f"{_ELEM}.name")
    namespace = _as_str(f.get("namespace"), f"{_ELEM}.namespace")
    interface = _as_str(f.get("interface"), f"{_ELEM}.interface") or _as_str(
        f.get("interfaceRequest"), f"{_ELEM}.interfaceRequest"
    )
    ips = tuple(_as_str(i, f"{_ELEM}.ips") for i in _as_list(f.get("ips"), f"{_ELEM}.ips", "[]string"))
    mac = _as_str(f.get("mac"), f"{_ELEM}.mac")
    guid = _as_str(f.get("infiniband-guid"), f"{_ELEM}.infiniband-guid")
    ports = tuple(
        _port_mapping(p)
        for p in _as_list(f.get("portMappings"), f"{_ELEM}.portMappings", "[]*types.PortMapEntry")
        if p is not None
    )
    bandwidth = _bandwidth(f["bandwidth"]) if f.get("bandwidth") is not None else None
    device_id = _as_str(f.get("deviceID"), f"{_ELEM}.deviceID")
    cni_args = f.get("cni-args")
    if cni_args is not None and not isinstance(cni_args, dict):
        raise go_type_error(cni_args, f"{_ELEM}.cni-args", "map[string]interface {}")
    gateways = _default_route(f.get("default-route"))

    where = f"element {index}"
    if not name:
        raise InvalidAnnotation(f"{_PREFIX}{where} has no network name")
    if not _DNS1123_SUBDOMAIN.match(name) or len(name) > 253:
        raise InvalidAnnotation(
            f"{_PREFIX}{where}: network name {name!r} is not a valid object name "
            "(lower case alphanumeric characters, '-' or '.', starting and ending with an alphanumeric character)"
        )
    if namespace and (not _DNS1123_LABEL.match(namespace) or len(namespace) > 63):
        raise InvalidAnnotation(
            f"{_PREFIX}{where}: namespace {namespace!r} is not a valid namespace name "
            "(lower case alphanumeric characters or '-', starting and ending with an alphanumeric character)"
        )
    if interface:
        problem = ifname_problem(interface)
        if problem is None and len(interface.encode()) >= _IFNAMSIZ:
            problem = f"interface name {interface!r} is longer than 15 bytes"
        if problem:
            raise InvalidAnnotation(f"{_PREFIX}{where}: {problem}")
    return NetworkSelection(
        name=name,
        namespace=namespace or pod_namespace,
        interface=interface or None,
        ips=ips,
        mac=mac or None,
        infiniband_guid=guid or None,
        port_mappings=ports,
        bandwidth=bandwidth,
        device_id=device_id or None,
        cni_args=cni_args,
        default_route=gateways,
    )


# ------------------------------------------------------------------------------------
# k8s.v1.cni.cncf.io/networks
# ------------------------------------------------------------------------------------


def _parse_short_item(item: str, pod_namespace: str) -> NetworkSelection:
    """``[namespace/]name[@ifname]`` as Multus's parsePodNetworkObjectName reads it."""
    slash = item.split("/")
    if len(slash) == 2:
        namespace, rest = slash[0].strip(), slash[1]
    elif len(slash) == 1:
        namespace, rest = "", slash[0]
    else:
        raise InvalidAnnotation(f"{_OBJ_PREFIX}Invalid network object (failed at '/')")
    at = rest.split("@")
    name = at[0].strip()
    ifname = ""
    if len(at) == 2:
        ifname = at[1].strip()
    elif len(at) != 1:
        raise InvalidAnnotation(f"{_OBJ_PREFIX}Invalid network object (failed at '@')")
    for part in (namespace, name):
        if part and not _DNS1123_LABEL.match(part):
            raise InvalidAnnotation(
                f"{_OBJ_PREFIX}Failed to parse: one or more items did not match comma-delimited format "
                "(must consist of lower case alphanumeric characters). Must start and end with an "
                f"alphanumeric character), mismatch @ '{part}'"
            )
    if ifname:
        if len(ifname.encode()) > _IFNAMSIZ - 1 or any(c in _BAD_IFNAME_CHARS for c in ifname):
            raise InvalidAnnotation(
                f"{_OBJ_PREFIX}Failed to parse interface name: must be less than 15 chars and not contain "
                f"'/' or spaces. interface name '{ifname}'"
            )
        problem = ifname_problem(ifname)
        if problem:
            raise InvalidAnnotation(f"{_OBJ_PREFIX}Failed to parse interface name: {problem}")
    if not name:
        raise InvalidAnnotation(f"{_OBJ_PREFIX}Failed to parse: empty network name in {item!r}")
    return NetworkSelection(name=name, namespace=namespace or pod_namespace, interface=ifname or None)


def _validate_requests(sel: NetworkSelection) -> None:
    """The checks Multus runs after decoding: mac, infiniband-guid, ips."""
    if sel.mac is not None and not parse_mac_ok(sel.mac):
        raise InvalidAnnotation(f"{_PREFIX}failed to mac: address {sel.mac}: invalid MAC address")
    if sel.infiniband_guid is not None and not parse_mac_ok(sel.infiniband_guid):
        raise InvalidAnnotation(
            f"{_PREFIX}failed to validate infiniband GUID: address {sel.infiniband_guid}: invalid MAC address"
        )
    for ip in sel.ips:
        if "/" in ip:
            if parse_cidr(ip) is None:
                raise InvalidAnnotation(f"failed to parse CIDR {go_quote(ip)}: invalid CIDR address: {ip}")
        elif parse_ip(ip) is None:
            raise InvalidAnnotation(f"failed to parse IP address {go_quote(ip)}")


def parse_networks(value: str, pod_namespace: str) -> tuple[NetworkSelection, ...]:
    """Parse the networks annotation (short or JSON form); namespaces default to ``pod_namespace``.

    JSON is used when the value contains ``[``, ``{`` or ``"`` (as Multus decides).
    """
    if value == "":
        raise InvalidAnnotation(f'{_PREFIX}pod annotation does not have "network" as key')
    if _JSON_HINT.search(value):
        data = _loads(value, _JSON_PREFIX)
        if data is None:
            return ()
        try:
            if not isinstance(data, list):
                raise GoTypeError(f"json: cannot unmarshal {go_json_kind(data)} into Go value of type []*types.{_ELEM}")
            selections = tuple(_element(raw, i, pod_namespace) for i, raw in enumerate(data))
        except GoTypeError as err:
            raise InvalidAnnotation(f"{_JSON_PREFIX}{err}") from None
    else:
        selections = tuple(_parse_short_item(item.strip(), pod_namespace) for item in value.split(","))
    for sel in selections:
        _validate_requests(sel)
    return selections


def parse_default_network(value: str, pod_namespace: str) -> NetworkSelection:
    """Parse ``v1.multus-cni.io/default-network``: exactly one network.

    Multus resolves a namespace-less entry in its ``multusNamespace``, so callers pass
    that namespace here (the parameter keeps the name of ``parse_networks``'s).
    """
    try:
        selections = parse_networks(value, pod_namespace)
    except InvalidAnnotation as err:
        raise InvalidAnnotation(f"tryLoadK8sPodDefaultNetwork: failed to parse CRD object: {err.msg}") from None
    if len(selections) > 1:
        raise InvalidAnnotation(f"tryLoadK8sPodDefaultNetwork: more than one default network is specified: {value}")
    if not selections:
        raise InvalidAnnotation(f"tryLoadK8sPodDefaultNetwork: no default network is specified: {value}")
    return selections[0]


def selection_to_json(sel: NetworkSelection, *, with_namespace: bool = True) -> dict[str, Any]:
    """One selection element as JSON, in Multus's field order, empty fields left out."""
    out: dict[str, Any] = {"name": sel.name}
    if with_namespace and sel.namespace:
        out["namespace"] = sel.namespace
    if sel.ips:
        out["ips"] = list(sel.ips)
    if sel.mac:
        out["mac"] = sel.mac
    if sel.infiniband_guid:
        out["infiniband-guid"] = sel.infiniband_guid
    if sel.interface:
        out["interface"] = sel.interface
    if sel.port_mappings:
        out["portMappings"] = [dict(p) for p in sel.port_mappings]
    if sel.bandwidth is not None:
        out["bandwidth"] = dict(sel.bandwidth)
    if sel.device_id:
        out["deviceID"] = sel.device_id
    if sel.cni_args is not None:
        out["cni-args"] = dict(sel.cni_args)
    if sel.default_route:
        out["default-route"] = list(sel.default_route)
    return out


def format_networks_json(selections: Sequence[NetworkSelection]) -> str:
    """The networks annotation in JSON form (every key kept)."""
    return json.dumps([selection_to_json(s) for s in selections], separators=(",", ":"))


def format_networks_short(selections: Sequence[NetworkSelection]) -> str:
    """The networks annotation in short form ``ns/name@if, ...``; only name, namespace, interface."""
    items = []
    for sel in selections:
        extra = selection_to_json(sel).keys() - {"name", "namespace", "interface"}
        if extra:
            raise InvalidAnnotation(f"network {sel.namespace}/{sel.name}: {sorted(extra)} need the JSON form")
        text = f"{sel.namespace}/{sel.name}" if sel.namespace else sel.name
        items.append(f"{text}@{sel.interface}" if sel.interface else text)
    return ",".join(items)


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
    ifname: str,
    default: bool,
    device_info: DeviceInfo | None = None,
) -> tuple[NetworkStatus, ...]:
    """The network-status entries for one delegate's result (nadutils ``CreateNetworkStatuses``).

    One interface: one entry with every IP and the default-route gateways. Several:
    one entry per interface with a sandbox, IPs placed by their ``interface`` index
    (unindexed IPs go to the last one), ``default`` on the interface whose IP has the
    gateway. A result with IPs but no interfaces (CNI 0.2.0) gives one entry named
    ``ifname``; a result with neither gives none (like Multus).
    """
    ifaces, ips, routes = _result_parts(result)
    dns = _dns(result.get("dns"))
    gateways = tuple(g for g in (_bare_ip(r.get("gw")) for r in routes if _is_default_route(r)) if g is not None)

    def mtu_of(iface: Mapping[str, Any]) -> int | None:
        mtu = iface.get("mtu")
        return mtu if isinstance(mtu, int) and not isinstance(mtu, bool) and mtu > 0 else None

    def all_ips() -> tuple[str, ...]:
        return tuple(ip for ip in (_bare_ip(c.get("address")) for c in ips) if ip is not None)

    if len(ifaces) <= 1:
        if not ifaces and not ips:
            return ()
        name: str | None = ifname if not ifaces else None
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


def _go_json(value: object) -> str:
    """``json.MarshalIndent(v, "", "    ")``: UTF-8 kept, ``<>&`` and U+2028/9 escaped as Go does."""
    text = json.dumps(value, indent=4, ensure_ascii=False)
    for char, esc in (
        ("<", "\\u003c"),
        (">", "\\u003e"),
        ("&", "\\u0026"),
        ("\u2028", "\\u2028"),
        ("\u2029", "\\u2029"),
    ):
        text = text.replace(char, esc)
    return text


def format_network_status(statuses: Sequence[NetworkStatus]) -> str:
    """The network-status annotation value, byte for byte as Multus writes it."""
    return "[" + ",".join(_go_json(status_to_json(s)) for s in statuses) + "]"


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
            type=_as_str(dev.get("type"), f"{path}.device-info.type"),
            version=_as_str(dev.get("version"), f"{path}.device-info.version"),
            raw=dev,
        )

    def as_strs(key: str) -> tuple[str, ...]:
        return tuple(_as_str(v, f"{path}.{key}") for v in _as_list(f.get(key), f"{path}.{key}", "[]string"))

    return NetworkStatus(
        name=_as_str(f.get("name"), f"{path}.name"),
        interface=_as_str(f.get("interface"), f"{path}.interface") or None,
        ips=as_strs("ips"),
        mac=_as_str(f.get("mac"), f"{path}.mac") or None,
        mtu=_as_int(f.get("mtu"), f"{path}.mtu") or None,
        default=bool(default),
        dns=_dns(dns),
        device_info=device_info,
        gateway=as_strs("gateway"),
    )


def parse_network_status(value: str) -> tuple[NetworkStatus, ...]:
    """Read a network-status annotation (written by Multus or kvnet)."""
    data = _loads(value, f"failed to parse {NETWORK_STATUS} annotation: ")
    if data is None:
        return ()
    try:
        if not isinstance(data, list):
            raise GoTypeError(f"json: cannot unmarshal {go_json_kind(data)} into Go value of type []v1.NetworkStatus")
        return tuple(_status_element(raw, i) for i, raw in enumerate(data))
    except GoTypeError as err:
        raise InvalidAnnotation(f"failed to parse {NETWORK_STATUS} annotation: {err}") from None
