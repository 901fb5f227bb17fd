"""KubeVirt's ``kubevirt.io/network-info`` (the downward-API file ``/etc/podinfo/network-info``).

Shape: ``{"interfaces": [{"network": <VMI network>, "deviceInfo": {...}, "mac", "mtu"}]}``;
``mac`` and ``mtu`` are optional (KubeVirt ≥ 1.6 writes them). This is the only place the
sidecar learns a VFIO VF's PCI address.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from kvnet.core.errors import DecodeFailure, DeviceError
from kvnet.core.model import DeviceInfo, NetworkInfoEntry, PciAddress, is_mac


def _device_info(raw: Any, network: str) -> DeviceInfo | None:
    if raw is None:
        return None
    if not isinstance(raw, Mapping):
        raise DecodeFailure(f"network-info: network {network!r}: deviceInfo must be an object")
    dtype = raw.get("type")
    version = raw.get("version", "")
    if not isinstance(dtype, str) or not isinstance(version, str):
        raise DecodeFailure(f"network-info: network {network!r}: deviceInfo needs string type and version")
    info = DeviceInfo(type=dtype, version=version, raw=dict(raw))
    if dtype == "pci":
        addr = info.pci_address
        if addr is None:
            raise DecodeFailure(f"network-info: network {network!r}: deviceInfo of type pci has no pci.pci-address")
        try:
            PciAddress.parse(addr)
        except DeviceError:
            raise DecodeFailure(
                f"network-info: network {network!r}: pci-address {addr!r} is not a PCI address (DDDD:BB:SS.F)"
            ) from None
    return info


def parse_network_info(text: str | bytes) -> dict[str, NetworkInfoEntry]:
    """Parse the network-info JSON into entries keyed by VMI network name."""
    try:
        doc = json.loads(text)
    except (ValueError, UnicodeDecodeError) as err:
        raise DecodeFailure(f"network-info is not JSON: {err}") from None
    if not isinstance(doc, Mapping):
        raise DecodeFailure("network-info must be a JSON object with an interfaces list")
    items = doc.get("interfaces", [])
    if items is None:
        items = []
    if not isinstance(items, list):
        raise DecodeFailure("network-info: interfaces must be a list")
    out: dict[str, NetworkInfoEntry] = {}
    for i, item in enumerate(items):
        if not isinstance(item, Mapping):
            raise DecodeFailure(f"network-info: interfaces[{i}] must be an object")
        network = item.get("network")
        if not isinstance(network, str) or not network:
            raise DecodeFailure(f"network-info: interfaces[{i}] has no network name")
        if network in out:
            raise DecodeFailure(f"network-info: network {network!r} appears twice")
        mac = item.get("mac")
        if mac is not None and (not is_mac(mac)):
            raise DecodeFailure(f"network-info: network {network!r}: mac {mac!r} is not a MAC address")
        mtu = item.get("mtu")
        if mtu is not None and (isinstance(mtu, bool) or not isinstance(mtu, int) or not 68 <= mtu <= 65535):
            raise DecodeFailure(f"network-info: network {network!r}: mtu {mtu!r} is not an integer in 68..65535")
        out[network] = NetworkInfoEntry(
            network=network,
            device_info=_device_info(item.get("deviceInfo"), network),
            mac=mac.lower() if isinstance(mac, str) else None,
            mtu=mtu,
        )
    return out


def format_network_info(entries: Mapping[str, NetworkInfoEntry]) -> str:
    """The inverse of :func:`parse_network_info` (sorted by network, as KubeVirt writes it)."""
    items: list[dict[str, Any]] = []
    for name in sorted(entries):
        e = entries[name]
        item: dict[str, Any] = {"network": e.network}
        if e.device_info is not None:
            item["deviceInfo"] = dict(e.device_info.raw) or {
                "type": e.device_info.type,
                "version": e.device_info.version,
            }
        if e.mac is not None:
            item["mac"] = e.mac
        if e.mtu is not None:
            item["mtu"] = e.mtu
        items.append(item)
    return json.dumps({"interfaces": items}, sort_keys=True)
