"""``default-route`` in libcni's results cache, as Multus's ``netutils`` edits it.

After a delegate's ADD, Multus rewrites the delegate's cached result
(``<cniDir>/results/<network>-<containerID>-<ifname>``) so that a later DEL gets the
routes the pod was left with as its ``prevResult``: ``DeleteDefaultGWCache`` drops the
default routes of the filtered families, ``AddDefaultGWCache`` appends the requested
gateways. The rules are Multus's, quirks included: routes are matched by their exact
``dst`` text (``0.0.0.0/0``, ``::0/0``), a 0.1.0/0.2.0 result is edited in ``ip4``/``ip6``,
and the file is written back as Go's ``json.Marshal`` of a map writes it (keys sorted,
compact, ``<>&`` escaped).
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from typing import Any

from kvnet.core.errors import IOFailure
from kvnet.core.gojson import go_ip_string, go_marshal_map, parse_ip

V4_DEFAULT = "0.0.0.0/0"
V6_DEFAULT = "::0/0"  # Multus's spelling; a result's "::/0" is not matched by it
_SUPPORTED = ("0.3.0", "0.3.1", "0.4.0")


class GatewayCacheError(IOFailure):
    """A cached result Multus's netutils could not edit."""


def _edit(path: str, edit: Any) -> None:
    """Read the cache file, apply ``edit`` to its ``result`` map, write it back (0600)."""
    try:
        with open(path, "rb") as f:
            cached = json.loads(f.read())
    except FileNotFoundError:
        raise GatewayCacheError(f"open {path}: no such file or directory") from None
    except (OSError, ValueError) as err:
        raise GatewayCacheError(f"{path}: {err}") from None
    if not isinstance(cached, dict) or "result" not in cached:
        raise GatewayCacheError("cannot get result from cache")
    if not isinstance(cached["result"], dict):
        raise GatewayCacheError(f"wrong result type: {cached['result']}")
    cached["result"] = edit(cached["result"])
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(go_marshal_map(cached))
    except OSError as err:
        raise GatewayCacheError(f"open {path}: {err.strerror or err}") from None


def _old_format(result: dict[str, Any]) -> bool:
    """No ``cniVersion``, or 0.1.0/0.2.0: the ``ip4``/``ip6`` form."""
    if "cniVersion" not in result:
        return True
    version = result["cniVersion"]
    if not isinstance(version, str):
        raise GatewayCacheError(f"wrong cniVersion format: {version}")
    if version in ("0.1.0", "0.2.0"):
        return True
    if version not in _SUPPORTED and not _at_least_100(version):
        raise GatewayCacheError(f"not supported version: {version}")
    return False


def _at_least_100(version: str) -> bool:
    try:
        return tuple(int(p) for p in version.split(".")) >= (1, 0, 0)
    except ValueError:
        return False


def _without(routes: list[Any], dst: str) -> list[Any] | None:
    """``deleteDefaultGWResultRoutes``: the routes whose ``dst`` is there and is not ``dst``
    (a route without ``dst`` is dropped too); None (Go's nil slice) when none is left."""
    kept = []
    for route in routes:
        if not isinstance(route, dict):
            raise GatewayCacheError(f"wrong route format: {route}")
        if "dst" in route:
            if not isinstance(route["dst"], str):
                raise GatewayCacheError(f"wrong dst format: {route['dst']}")
            if route["dst"] != dst:
                kept.append(route)
    return kept or None


def delete_default_routes(result: dict[str, Any], ipv4: bool, ipv6: bool) -> dict[str, Any]:
    """``deleteDefaultGWResult``."""
    if _old_format(result):
        for on, key, dst in ((ipv4, "ip4", V4_DEFAULT), (ipv6, "ip6", V6_DEFAULT)):
            if not on or key not in result:
                continue
            ipc = result[key]
            if not isinstance(ipc, dict):
                raise GatewayCacheError(f"wrong {key} format: {ipc}")
            if "routes" in ipc:
                if not isinstance(ipc["routes"], list):
                    raise GatewayCacheError(f"wrong {key} routes format: {ipc['routes']}")
                ipc["routes"] = _without(ipc["routes"], dst)
        return result
    if "routes" not in result:
        return result
    routes = result["routes"]
    if not isinstance(routes, list):
        raise GatewayCacheError(f"wrong routes format: {routes}")
    kept: list[Any] | None = routes
    if ipv4:
        kept = _without(kept or [], V4_DEFAULT)
    if ipv6:
        kept = _without(kept or [], V6_DEFAULT)
    if kept:
        result["routes"] = kept
    else:
        del result["routes"]
    return result


def add_default_routes(result: dict[str, Any], gateways: Sequence[str]) -> dict[str, Any]:
    """``addDefaultGWResult``."""
    ips = [parse_ip(g) for g in gateways]
    if _old_format(result):
        for ip in ips:
            if ip is None:
                continue
            key, dst = ("ip4", "0.0.0.0/0") if ip.version == 4 else ("ip6", "::/0")
            if key not in result:
                continue
            ipc = result[key]
            if not isinstance(ipc, dict):
                raise GatewayCacheError(f"wrong {key} format: {ipc}")
            routes = ipc.get("routes", [])
            if not isinstance(routes, list):
                raise GatewayCacheError(f"wrong {key} routes format: {routes}")
            ipc["routes"] = [*routes, {"dst": dst, "gw": go_ip_string(ip)}]
        return result
    routes = result.get("routes", [])
    if not isinstance(routes, list):
        raise GatewayCacheError(f"wrong routes format: {routes}")
    for ip in ips:
        if ip is not None:
            routes = [*routes, {"dst": V4_DEFAULT if ip.version == 4 else V6_DEFAULT, "gw": go_ip_string(ip)}]
    result["routes"] = routes
    return result


def delete_default_gw_cache(path: str, ipv4: bool, ipv6: bool) -> None:
    """``DeleteDefaultGWCache``."""
    _edit(path, lambda r: delete_default_routes(r, ipv4, ipv6))


def add_default_gw_cache(path: str, gateways: Sequence[str]) -> None:
    """``AddDefaultGWCache``."""
    _edit(path, lambda r: add_default_routes(r, gateways))
