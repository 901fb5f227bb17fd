"""CNI result objects in every spec version, and conversion between them.

Three result shapes exist: 0.1.0/0.2.0 (``ip4``/``ip6`` blocks with their own routes),
0.3.0/0.3.1/0.4.0 (``interfaces``, ``ips`` with a ``version`` field, ``routes``) and
1.0.0/1.1.0 (``ips`` without ``version``; 1.1.0 adds interface ``mtu``/``socketPath``/
``pciID`` and route ``mtu``/``advmss``/``priority``/``table``/``scope``). A meta-plugin
talks to delegates that stop at 1.0.0 while its own caller may speak 1.1.0, so every
result crosses versions both ways. The rules follow libcni's converters; where libcni
keeps a field a lower version cannot carry, this module drops it (see
docs/cni-protocol.md).

Stdlib only: this module is on the CNI hot path.
"""

from __future__ import annotations

import copy
import ipaddress
from collections.abc import Mapping
from typing import Any

from kvnet.core.errors import DecodeFailure, IncompatibleVersion

ALL_VERSIONS: tuple[str, ...] = ("0.1.0", "0.2.0", "0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0")

_FAMILY_020 = frozenset({"0.1.0", "0.2.0"})
_FAMILY_040 = frozenset({"0.3.0", "0.3.1", "0.4.0"})
_FAMILY_100 = frozenset({"1.0.0", "1.1.0"})

_IFACE_FIELDS = ("name", "mac", "sandbox")
_IFACE_FIELDS_11 = ("name", "mac", "mtu", "sandbox", "socketPath", "pciID")
_ROUTE_FIELDS = ("dst", "gw")
_ROUTE_FIELDS_11 = ("dst", "gw", "mtu", "advmss", "priority", "table", "scope")


def version_key(v: str) -> tuple[int, int, int]:
    """``"1.0.0"`` → ``(1, 0, 0)``; a missing patch counts as 0, like libcni's parser."""
    parts = v.split(".") if isinstance(v, str) else []
    if not 1 <= len(parts) <= 3 or not all(p.isdigit() for p in parts):
        raise DecodeFailure(f"invalid version {v!r}: expected MAJOR.MINOR.PATCH")
    nums = [int(p) for p in parts] + [0] * (3 - len(parts))
    return nums[0], nums[1], nums[2]


def empty_result(cni_version: str, *, ifname: str = "", netns: str = "") -> dict[str, Any]:
    """A result with no addresses in ``cni_version``.

    With ``ifname`` the one interface the runtime asked for is reported (sandbox =
    ``netns``); without it the result carries only the version. (The meta-plugin's
    answer for a pod that is gone is Multus's own shape: ``kvnet.meta.commands.empty_cni_result``.)
    """
    out: dict[str, Any] = {"cniVersion": cni_version}
    if ifname and cni_version not in _FAMILY_020:
        iface: dict[str, Any] = {"name": ifname}
        if netns:
            iface["sandbox"] = netns
        out["interfaces"] = [iface]
    out["dns"] = {}
    return out


def result_version(result: Mapping[str, Any]) -> str:
    """The version a result says it is in; without ``cniVersion`` it is guessed from its shape.

    libcni fills a missing version with the config's; callers that know it pass
    ``from_version`` to :func:`convert_result` instead of relying on the guess.
    """
    v = result.get("cniVersion")
    if isinstance(v, str) and v:
        return v
    if "ip4" in result or "ip6" in result:
        return "0.2.0"
    ips = result.get("ips")
    if isinstance(ips, list) and any(isinstance(ip, Mapping) and "version" in ip for ip in ips):
        return "0.4.0"
    return "1.0.0"


def convert_result(result: Mapping[str, Any], to_version: str, *, from_version: str | None = None) -> dict[str, Any]:
    """``result`` re-expressed in ``to_version`` (a new dict; the input is not changed).

    The source version is the result's own ``cniVersion`` (or ``from_version`` when the
    result has none). Raises :class:`IncompatibleVersion` for an unknown version and for
    a down-conversion to 0.1.0/0.2.0 of a result without any IP address (0.2.0 requires
    one, as libcni enforces).
    """
    if not isinstance(result, Mapping):
        raise DecodeFailure(f"CNI result must be a JSON object, got {type(result).__name__}")
    src = result.get("cniVersion") or from_version or result_version(result)
    for v, what in ((src, "result"), (to_version, "target")):
        if v not in ALL_VERSIONS:
            raise IncompatibleVersion(
                f"unsupported CNI {what} version {v!r}", f"supported versions: {', '.join(ALL_VERSIONS)}"
            )
    if src == to_version:
        out = copy.deepcopy(dict(result))
        out["cniVersion"] = to_version
        return go_typed(out, to_version)
    middle = _to_current(result, src)
    if to_version in _FAMILY_100:
        return go_typed(_from_current_100(middle, to_version), to_version)
    if to_version in _FAMILY_040:
        return go_typed(_from_current_040(middle, to_version), to_version)
    return _from_current_020(middle, to_version)


def go_typed(result: Mapping[str, Any], version: str) -> dict[str, Any]:
    """``result`` as libcni holds it: decoded into the Go type of ``version`` and written
    again by encoding/json, which is what libcni caches, hands on as ``prevResult`` and
    prints (containernetworking/cni pkg/types/100 and 040).

    Keys the type has no field for are dropped; empty strings, zero numbers and empty
    lists are left out (``omitempty``); addresses are written in Go's canonical form
    (``net.IPNet``/``net.IP``). 1.0.0/1.1.0: ``Result.MarshalJSON`` goes through a map, so
    the keys come out sorted at every level, and an empty ``dns`` is left out. 0.3.x/0.4.0:
    struct order, every ``ips`` entry has its ``version`` and ``dns`` is always written
    (``{}`` when empty). 0.1.0/0.2.0 results are returned unchanged.
    """
    if version in _FAMILY_100:
        out = {
            "cniVersion": result.get("cniVersion"),
            "dns": _go_dns(result.get("dns")) or None,
            "interfaces": [_go_sorted(_go_iface(i)) for i in _typed_list(result, "interfaces")] or None,
            "ips": [_go_sorted(_go_ip(ip, with_version=False)) for ip in _typed_list(result, "ips")] or None,
            "routes": [_go_sorted(_go_route(r)) for r in _typed_list(result, "routes")] or None,
        }
        return {k: v for k, v in out.items() if v}
    if version in _FAMILY_040:
        out = {
            "cniVersion": result.get("cniVersion"),
            "interfaces": [_go_iface(i) for i in _typed_list(result, "interfaces")] or None,
            "ips": [_go_ip(ip, with_version=True) for ip in _typed_list(result, "ips")] or None,
            "routes": [_go_route(r) for r in _typed_list(result, "routes")] or None,
        }
        typed = {k: v for k, v in out.items() if v}
        typed["dns"] = _go_dns(result.get("dns"))
        return typed
    return copy.deepcopy(dict(result))


def _typed_list(result: Mapping[str, Any], key: str) -> list[Mapping[str, Any]]:
    return [x for x in _objects(result.get(key), key)]


def _go_sorted(d: Mapping[str, Any]) -> dict[str, Any]:
    return {k: d[k] for k in sorted(d)}


def _go_omitempty(d: Mapping[str, Any], always: tuple[str, ...] = ()) -> dict[str, Any]:
    """Go's ``omitempty``: "", 0, false, null and empty lists/objects are left out."""
    return {k: v for k, v in d.items() if k in always or v not in (None, "", 0, False, [], {})}


def _go_canonical(text: Any, *, prefix: bool) -> Any:
    """An address as Go's ``net.IPNet.String``/``net.IP.String`` writes it (as given when
    it is not one: libcni would have refused it, and this module does not judge)."""
    if not isinstance(text, str):
        return text
    try:
        return str(ipaddress.ip_interface(text) if prefix else ipaddress.ip_address(text))
    except ValueError:
        return text


def _go_iface(i: Mapping[str, Any]) -> dict[str, Any]:
    fields = {k: i.get(k) for k in ("mac", "mtu", "sandbox", "socketPath", "pciID") if k in i}
    return {"name": i.get("name") or "", **_go_omitempty(fields)}


def _go_ip(ip: Mapping[str, Any], *, with_version: bool) -> dict[str, Any]:
    out: dict[str, Any] = {"version": ip.get("version") or ""} if with_version else {}
    if ip.get("interface") is not None:  # a pointer: 0 is kept
        out["interface"] = ip["interface"]
    out["address"] = _go_canonical(ip.get("address"), prefix=True) or ""
    if ip.get("gateway"):
        out["gateway"] = _go_canonical(ip["gateway"], prefix=False)
    return out


def _go_route(r: Mapping[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {"dst": _go_canonical(r.get("dst"), prefix=True) or ""}
    if r.get("gw"):
        out["gw"] = _go_canonical(r["gw"], prefix=False)
    out.update(_go_omitempty({k: r.get(k) for k in ("mtu", "advmss", "priority") if k in r}))
    out.update({k: r[k] for k in ("table", "scope") if r.get(k) is not None})  # pointers: 0 is kept
    return out


def _go_dns(dns: Any) -> dict[str, Any]:
    if not isinstance(dns, Mapping):
        return {}
    return _go_omitempty({k: dns.get(k) for k in ("nameservers", "domain", "search", "options") if k in dns})


# --- internal: every version goes through one 1.1.0-shaped dict ---------------------


def _pick(d: Mapping[str, Any], fields: tuple[str, ...]) -> dict[str, Any]:
    return {k: copy.deepcopy(d[k]) for k in fields if k in d and d[k] is not None}


def _objects(value: Any, what: str) -> list[Mapping[str, Any]]:
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(x, Mapping) for x in value):
        raise DecodeFailure(f"CNI result field {what!r} must be a list of objects")
    return value


def _is_v6(cidr_or_ip: Any) -> bool:
    return isinstance(cidr_or_ip, str) and ":" in cidr_or_ip


def _to_current(result: Mapping[str, Any], src: str) -> dict[str, Any]:
    """Any version → the 1.1.0 field set (nothing dropped that 1.1.0 can carry)."""
    cur: dict[str, Any] = {}
    if src in _FAMILY_020:
        ips: list[dict[str, Any]] = []
        routes: list[dict[str, Any]] = []
        for key in ("ip4", "ip6"):
            block = result.get(key)
            if block is None:
                continue
            if not isinstance(block, Mapping):
                raise DecodeFailure(f"CNI result field {key!r} must be an object")
            ip: dict[str, Any] = {"address": block.get("ip")}
            if block.get("gateway"):
                ip["gateway"] = block["gateway"]
            ips.append(ip)
            routes.extend(_pick(r, _ROUTE_FIELDS) for r in _objects(block.get("routes"), f"{key}.routes"))
        if ips:
            cur["ips"] = ips
        if routes:
            cur["routes"] = routes
    else:
        iface_fields = _IFACE_FIELDS_11 if src == "1.1.0" else _IFACE_FIELDS
        route_fields = _ROUTE_FIELDS_11 if src == "1.1.0" else _ROUTE_FIELDS
        ifaces = [_pick(i, iface_fields) for i in _objects(result.get("interfaces"), "interfaces")]
        ips = [_pick(ip, ("interface", "address", "gateway")) for ip in _objects(result.get("ips"), "ips")]
        routes = [_pick(r, route_fields) for r in _objects(result.get("routes"), "routes")]
        if ifaces:
            cur["interfaces"] = ifaces
        if ips:
            cur["ips"] = ips
        if routes:
            cur["routes"] = routes
    if "dns" in result and result["dns"] is not None:
        cur["dns"] = copy.deepcopy(result["dns"])
    return cur


def _from_current_100(cur: Mapping[str, Any], to_version: str) -> dict[str, Any]:
    out: dict[str, Any] = {"cniVersion": to_version}
    iface_fields = _IFACE_FIELDS_11 if to_version == "1.1.0" else _IFACE_FIELDS
    route_fields = _ROUTE_FIELDS_11 if to_version == "1.1.0" else _ROUTE_FIELDS
    if cur.get("interfaces"):
        out["interfaces"] = [_pick(i, iface_fields) for i in cur["interfaces"]]
    if cur.get("ips"):
        out["ips"] = [dict(ip) for ip in cur["ips"]]
    if cur.get("routes"):
        out["routes"] = [_pick(r, route_fields) for r in cur["routes"]]
    if "dns" in cur:
        out["dns"] = cur["dns"]
    return out


def _from_current_040(cur: Mapping[str, Any], to_version: str) -> dict[str, Any]:
    out: dict[str, Any] = {"cniVersion": to_version}
    if cur.get("interfaces"):
        out["interfaces"] = [_pick(i, _IFACE_FIELDS) for i in cur["interfaces"]]
    if cur.get("ips"):
        out["ips"] = [{"version": "6" if _is_v6(ip.get("address")) else "4", **ip} for ip in cur["ips"]]
    if cur.get("routes"):
        out["routes"] = [_pick(r, _ROUTE_FIELDS) for r in cur["routes"]]
    if "dns" in cur:
        out["dns"] = cur["dns"]
    return out


def _from_current_020(cur: Mapping[str, Any], to_version: str) -> dict[str, Any]:
    """Only the first address of each family survives, as in libcni (0.2.0 has one each)."""
    out: dict[str, Any] = {"cniVersion": to_version}
    blocks: dict[str, dict[str, Any]] = {}
    for ip in cur.get("ips") or ():
        key = "ip6" if _is_v6(ip.get("address")) else "ip4"
        if key not in blocks:
            block: dict[str, Any] = {"ip": ip.get("address")}
            if ip.get("gateway"):
                block["gateway"] = ip["gateway"]
            blocks[key] = block
    if not blocks:
        raise IncompatibleVersion(
            f"cannot convert CNI result to version {to_version}: no valid IP addresses",
            "0.1.0/0.2.0 results must carry at least one IP address",
        )
    for route in cur.get("routes") or ():
        key = "ip6" if _is_v6(route.get("dst")) else "ip4"
        if key in blocks:
            blocks[key].setdefault("routes", []).append(_pick(route, _ROUTE_FIELDS))
    for key in ("ip4", "ip6"):
        if key in blocks:
            out[key] = blocks[key]
    out["dns"] = _go_dns(cur.get("dns"))  # types020's DNS is a struct: always written
    return out
