"""The meta-plugin's delegate cache, byte-compatible with Multus's scratch cache.

Before the first delegate runs, ADD saves the full delegate list to
``<cniDir>/<containerID>``; DEL reads it back, so a pod can be torn down when the pod
object or the API server is gone. The file is Multus's: a JSON array of Go
``DelegateNetConf`` values as ``encoding/json`` writes them (exported fields without
tags keep their Go names, ``Bytes`` is base64). Writing the same shape lets a node
switch between Multus and kvnet with pods running: each can DEL what the other added.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kvnet.cni import libcni_cache
from kvnet.cni.protocol import validate_container_id
from kvnet.core.errors import DecodeFailure, IOFailure
from kvnet.core.naming import NAME_MAX, file_name_fits

# Go's zero value of libcni.NetworkConfigList (libcni v1.3, as Multus 4.3 links it),
# which Multus 4.x marshals for every delegate (only older 4.x releases filled it, for
# conflists).
_ZERO_NETWORK_CONFIG_LIST: dict[str, Any] = {
    "Name": "",
    "CNIVersion": "",
    "DisableCheck": False,
    "DisableGC": False,
    "LoadOnlyInlinedPlugins": False,
    "Plugins": None,
    "Bytes": None,
}


def conflist_plugins(conf: Mapping[str, Any]) -> list[Any] | None:
    """The ``plugins`` of a conflist, None for a single conf: Multus treats a config with no
    ``type`` and a ``plugins`` list as a conflist (the one home of that rule)."""
    plugins = conf.get("plugins")
    return plugins if not conf.get("type") and isinstance(plugins, list) else None


@dataclass(frozen=True)
class CachedDelegate:
    """One delegate of a pod: Multus's ``DelegateNetConf``.

    ``conf`` is the exact configuration (conf or conflist) the delegate plugin gets
    on stdin, with ``args.cni`` and ``deviceID`` already injected; it is what Multus
    keeps in ``Bytes``. The runtime requests (``port_mappings``, ``bandwidth``) and
    ``master`` are not cached (``json:"-"`` in Go): after a reload the first delegate
    is the master.
    """

    name: str
    conf: Mapping[str, Any]
    ifname_request: str = ""
    mac_request: str = ""
    infiniband_guid_request: str = ""
    ip_request: tuple[str, ...] = ()
    gateway_request: tuple[str, ...] | None = None
    is_filter_v4_gateway: bool = False
    is_filter_v6_gateway: bool = False
    device_id: str = ""
    resource_name: str = ""
    port_mappings: tuple[Mapping[str, Any], ...] = ()
    bandwidth: Mapping[str, Any] | None = None
    master: bool = False

    @property
    def is_conflist(self) -> bool:
        """Multus treats a config without ``type`` as a conflist (:func:`conflist_plugins`)."""
        return conflist_plugins(self.conf) is not None

    @property
    def plugins(self) -> list[Mapping[str, Any]]:
        """The plugin configs it runs: a conflist's plugins (those that are objects), else the conf."""
        plugins = conflist_plugins(self.conf)
        return [self.conf] if plugins is None else [p for p in plugins if isinstance(p, Mapping)]

    @property
    def network_name(self) -> str:
        """The CNI network name (``name`` of the conf or conflist)."""
        name = self.conf.get("name")
        return name if isinstance(name, str) else ""

    @property
    def plugin_type(self) -> str:
        """The plugin type, or the first plugin's type for a conflist."""
        plugins = conflist_plugins(self.conf)
        if plugins is None:
            return str(self.conf.get("type", ""))
        first = plugins[0] if plugins and isinstance(plugins[0], Mapping) else {}
        return str(first.get("type", ""))


# ------------------------------------------------------------------------------------
# Go encoding/json shapes
# ------------------------------------------------------------------------------------


def _go_netconf(conf: Mapping[str, Any]) -> dict[str, Any]:
    """``types.NetConf`` as libcni v1.3's ``PluginConf.MarshalJSON`` writes it: omitempty
    fields dropped, ``ipam`` always, ``dns`` only when not empty, keys sorted (it
    re-marshals a map)."""
    out: dict[str, Any] = {}
    for key in ("cniVersion", "name", "type"):
        value = conf.get(key)
        if isinstance(value, str) and value:
            out[key] = value
    caps = conf.get("capabilities")
    if isinstance(caps, Mapping) and caps:
        out["capabilities"] = {str(k): bool(v) for k, v in caps.items()}
    ipam = conf.get("ipam")
    ipam_type = ipam.get("type") if isinstance(ipam, Mapping) else None
    out["ipam"] = {"type": ipam_type} if isinstance(ipam_type, str) and ipam_type else {}
    dns = conf.get("dns")
    go_dns: dict[str, Any] = {}
    if isinstance(dns, Mapping):
        for key in ("nameservers", "domain", "search", "options"):
            if dns.get(key):
                go_dns[key] = dns[key]
    if go_dns:
        out["dns"] = go_dns
    return dict(sorted(out.items()))


def _go_netconflist(conf: Mapping[str, Any]) -> dict[str, Any]:
    """``types.NetConfList`` as Go marshals it (every field omitempty)."""
    out: dict[str, Any] = {}
    for key in ("cniVersion", "name"):
        value = conf.get(key)
        if isinstance(value, str) and value:
            out[key] = value
    for key in ("disableCheck", "disableGC"):
        if conf.get(key) is True:
            out[key] = True
    plugins = conf.get("plugins")
    if isinstance(plugins, list) and plugins:
        out["plugins"] = [_go_netconf(p if isinstance(p, Mapping) else {}) for p in plugins]
    return out


def conf_bytes(conf: Mapping[str, Any]) -> bytes:
    """The config as the bytes a delegate receives (compact JSON)."""
    return json.dumps(conf, separators=(",", ":")).encode()


def encode_delegate(d: CachedDelegate) -> dict[str, Any]:
    """One ``DelegateNetConf`` in Go field order and with Go's JSON tags."""
    conflist = d.is_conflist
    out: dict[str, Any] = {
        # LoadDelegateNetConf unmarshals a conflist into Conf too: its cniVersion and name
        "Conf": _go_netconf(d.conf),
        "ConfList": _go_netconflist(d.conf) if conflist else {},
        "CNINetworkConfigList": dict(_ZERO_NETWORK_CONFIG_LIST),
        "Name": d.name,
    }
    if d.ifname_request:
        out["ifnameRequest"] = d.ifname_request
    if d.mac_request:
        out["macRequest"] = d.mac_request
    if d.infiniband_guid_request:
        out["infinibandGUIDRequest"] = d.infiniband_guid_request
    if d.ip_request:
        out["ipRequest"] = list(d.ip_request)
    if d.gateway_request is not None:
        out["default-route"] = list(d.gateway_request)
    out["IsFilterV4Gateway"] = d.is_filter_v4_gateway
    out["IsFilterV6Gateway"] = d.is_filter_v6_gateway
    if d.device_id:
        out["deviceID"] = d.device_id
    if d.resource_name:
        out["resourceName"] = d.resource_name
    out["Bytes"] = base64.b64encode(conf_bytes(d.conf)).decode()
    return out


def encode(delegates: Sequence[CachedDelegate]) -> bytes:
    """The cache file's content (Go's ``json.Marshal([]*DelegateNetConf)``)."""
    return json.dumps([encode_delegate(d) for d in delegates], separators=(",", ":")).encode()


def _get(obj: Mapping[str, Any], key: str) -> Any:
    """Go's encoding/json matches keys case-insensitively (exact match first)."""
    if key in obj:
        return obj[key]
    low = key.lower()
    for k, v in obj.items():
        if isinstance(k, str) and k.lower() == low:
            return v
    return None


def _b64json(value: Any, what: str) -> Any:
    if not isinstance(value, str):
        raise DecodeFailure(f"failed to load netconf: {what} is not a base64 string")
    try:
        return json.loads(base64.b64decode(value, validate=True))
    except (binascii.Error, ValueError) as err:
        raise DecodeFailure(f"failed to load netconf: {what} is not base64 JSON: {err}") from err


def _legacy_conflist(ncl: Mapping[str, Any], housekeeping: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """Older Multus 4.x kept the lossless conflist in ``CNINetworkConfigList``.

    Rebuild it from the list bytes and each plugin's bytes, then carry over what ADD
    injected into ``Bytes`` (``deviceID``, ``pciBusID``, ``args.cni``), as Multus does.
    """
    plugins = _get(ncl, "Plugins")
    list_bytes = _get(ncl, "Bytes")
    if not plugins and not list_bytes:
        return None
    rebuilt = _b64json(list_bytes, "CNINetworkConfigList.Bytes") if list_bytes else {}
    if not isinstance(rebuilt, dict):
        raise DecodeFailure("failed to load netconf: CNINetworkConfigList.Bytes is not an object")
    raw_plugins = []
    for idx, plugin in enumerate(plugins or []):
        if not isinstance(plugin, Mapping):
            raise DecodeFailure(f"failed to load netconf: CNINetworkConfigList plugin #{idx} is not an object")
        raw_plugins.append(_b64json(_get(plugin, "Bytes"), f"CNINetworkConfigList plugin #{idx}"))
    rebuilt["plugins"] = raw_plugins
    hk_plugins = housekeeping.get("plugins") if isinstance(housekeeping, Mapping) else None
    if isinstance(hk_plugins, list) and len(hk_plugins) == len(raw_plugins):
        for mine, theirs in zip(raw_plugins, hk_plugins, strict=False):
            if not isinstance(mine, dict) or not isinstance(theirs, Mapping):
                continue
            for key in ("deviceID", "pciBusID"):
                if key in theirs:
                    mine[key] = theirs[key]
            cni_args = theirs.get("args", {}).get("cni") if isinstance(theirs.get("args"), Mapping) else None
            if isinstance(cni_args, Mapping):
                args = mine.setdefault("args", {})
                if isinstance(args, dict):
                    cni = args.setdefault("cni", {})
                    if isinstance(cni, dict):
                        cni.update(cni_args)
    return rebuilt


def decode_delegate(obj: Any, idx: int = 0) -> CachedDelegate:
    """One cached ``DelegateNetConf`` (Multus- or kvnet-written)."""
    if not isinstance(obj, Mapping):
        raise DecodeFailure(f"failed to load netconf: delegate #{idx} is not an object")
    conf = _b64json(_get(obj, "Bytes"), f"delegate #{idx} Bytes")
    if not isinstance(conf, dict):
        raise DecodeFailure(f"failed to load netconf: delegate #{idx} Bytes is not a JSON object")
    ncl = _get(obj, "CNINetworkConfigList")
    if isinstance(ncl, Mapping):
        legacy = _legacy_conflist(ncl, conf)
        if legacy is not None:
            conf = legacy

    def text(key: str) -> str:
        value = _get(obj, key)
        return value if isinstance(value, str) else ""

    ips = _get(obj, "ipRequest")
    gws = _get(obj, "default-route")
    name = text("Name")
    if not name:
        inner = _get(obj, "Conf") or {}
        inner_list = _get(obj, "ConfList") or {}
        name = str(
            (inner.get("name") if isinstance(inner, Mapping) else "")
            or (inner_list.get("name") if isinstance(inner_list, Mapping) else "")
            or ""
        )
    return CachedDelegate(
        name=name,
        conf=conf,
        ifname_request=text("ifnameRequest"),
        mac_request=text("macRequest"),
        infiniband_guid_request=text("infinibandGUIDRequest"),
        ip_request=tuple(str(i) for i in ips) if isinstance(ips, list) else (),
        gateway_request=tuple(str(g) for g in gws) if isinstance(gws, list) else None,
        is_filter_v4_gateway=_get(obj, "IsFilterV4Gateway") is True,
        is_filter_v6_gateway=_get(obj, "IsFilterV6Gateway") is True,
        device_id=text("deviceID"),
        resource_name=text("resourceName"),
        master=idx == 0,
    )


def decode(data: bytes) -> tuple[CachedDelegate, ...]:
    """The delegate list of a cache file; the first one is the master plugin."""
    try:
        items = json.loads(data)
    except ValueError as err:
        raise DecodeFailure(f"failed to load netconf: {err}") from err
    if not isinstance(items, list) or not items:
        raise DecodeFailure("failed to load netconf: the cache is not a non-empty JSON array")
    return tuple(decode_delegate(obj, idx) for idx, obj in enumerate(items))


# ------------------------------------------------------------------------------------
# Files
# ------------------------------------------------------------------------------------


def cache_path(cni_dir: str | os.PathLike[str], container_id: str) -> Path:
    """``<cniDir>/<containerID>``. The container ID must pass the CNI spec's rule
    (libcni's ``ValidateContainerID``), which keeps it a plain file name in cniDir: it
    starts with a letter or digit (so never ``.`` or ``..``) and has no ``/``."""
    validate_container_id(container_id)
    return Path(cni_dir) / container_id


def _fits(path: Path) -> bool:
    """A container ID longer than NAME_MAX names no file: ADD refuses it (CNI_CONTAINERID,
    code 4), so DEL and CHECK find no cache for it instead of failing on the file name."""
    return file_name_fits(path.name)


def save(cni_dir: str | os.PathLike[str], container_id: str, delegates: Sequence[CachedDelegate]) -> Path:
    """Write the cache atomically (0600 in a 0700 folder, as Multus does)."""
    path = cache_path(cni_dir, container_id)
    data = encode(delegates)
    import tempfile  # only ADD writes; DEL and CHECK do not pay for it

    try:
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{container_id[: NAME_MAX - 32]}.", dir=path.parent)
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
            os.chmod(tmp, 0o600)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
    except OSError as err:
        raise IOFailure(f"saveDelegates: failed to write container data in the path({str(path)!r}): {err}") from err
    return path


def load(cni_dir: str | os.PathLike[str], container_id: str) -> tuple[CachedDelegate, ...] | None:
    """The cached delegates, or None when there is no cache for this container."""
    path = cache_path(cni_dir, container_id)
    if not _fits(path):
        return None
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as err:
        raise IOFailure(f"failed to read the cached delegates file {str(path)!r}: {err}") from err
    return decode(data)


def remove(cni_dir: str | os.PathLike[str], container_id: str) -> None:
    """Drop the cache (missing is fine: DEL is idempotent)."""
    path = cache_path(cni_dir, container_id)
    if not _fits(path):
        return
    try:
        path.unlink(missing_ok=True)
    except OSError as err:
        raise IOFailure(f"deleteDelegates: error in deleting the delegates {str(path)!r}: {err}") from err


# The CNI codes of a delegate that could not read its call (incompatible version,
# unsupported field, bad env, undecodable or invalid config; a plugin that is not there is
# InvalidConfig too): asking again gets the same answer.
UNREADABLE_CALL_CODES = frozenset({1, 2, 4, 6, 7})


def rebuilt_del_is_moot(cni_dir: str | os.PathLike[str], container_id: str, codes: Sequence[int]) -> bool:
    """The rule for a DEL without a delegate cache, whose delegates were rebuilt from the
    pod: their failures are no reason for the runtime to retry (the DEL is reported as a
    success, with a log line) when every one is a call the delegate could not read
    (:data:`UNREADABLE_CALL_CODES`) and nothing of the container exists: no delegate cache
    and no libcni result of it in ``cni_dir`` (nothing recorded an ADD). A DEL from the
    cache, and any other failure, still reports the error: something may be left to undo."""
    if not codes or any(code not in UNREADABLE_CALL_CODES for code in codes):
        return False
    if file_name_fits(container_id) and (Path(cni_dir) / container_id).exists():
        return False
    return not libcni_cache.list_attachments(cni_dir, container_id)
