"""Device-info files (k8snetworkplumbingwg device-info-spec 1.1.0), as Multus handles them.

A device plugin writes one file per device it allocates, named from the resource and
the device ID, under ``devinfo/dp``. The meta-plugin copies it to ``devinfo/cni`` under
a name made from the network, the container ID and the interface (the name it also
passes to the delegate as ``runtimeConfig.CNIDeviceInfoFile``), and puts its content
into the pod's ``network-status`` as ``device-info``; KubeVirt copies that into
``kubevirt.io/network-info``, which is where the sidecar finds the VF's PCI address.

The file names follow network-attachment-definition-client's ``pkg/utils`` exactly
(``/`` becomes ``-`` in every component), so files written by the SR-IOV device plugin
and by Multus are found, and files kvnet writes are found by them.
"""

from __future__ import annotations

import errno
import json
import os
import re
import tempfile
from collections.abc import Mapping
from typing import Any

from kvnet.binding.sriov import VfInfo
from kvnet.core.errors import DecodeFailure, DeviceError, InvalidConfig, IOFailure
from kvnet.core.model import DeviceInfo, PciAddress

DEVINFO_ROOT = "/var/run/k8s.cni.cncf.io/devinfo"
DP_SUBDIR = "dp"
CNI_SUBDIR = "cni"

SPEC_VERSIONS = ("1.0.0", "1.1.0")
DEVICE_TYPES = ("pci", "vdpa", "vhost-user", "memif")
_VERSION_RE = re.compile(r"^1\.\d+\.\d+$")
_PCI_ADDRESS_KEYS = ("pci-address", "pf-pci-address")


def dp_path(resource_name: str, device_id: str, root: str = DEVINFO_ROOT) -> str:
    """``<root>/dp/<resource, / → ->-<device id, / → ->-device.json`` (nadutils' rule)."""
    name = f"{resource_name.replace('/', '-')}-{device_id.replace('/', '-')}-device.json"
    return os.path.join(root, DP_SUBDIR, name)


def cni_path(network_name: str, container_id: str, ifname: str, root: str = DEVINFO_ROOT) -> str:
    """``<root>/cni/<network>-<container id>_<ifname>`` with every ``/`` → ``-``.

    Multus names the file ``fmt.Sprintf("%s-%s_%s", delegate.Name, containerID,
    ifName)`` and nadutils' ``GetCNIDeviceInfoPath`` replaces ``/`` in the whole name.
    """
    name = f"{network_name}-{container_id}_{ifname}".replace("/", "-")
    return os.path.join(root, CNI_SUBDIR, name)


def pcidevice_env_name(resource_name: str) -> str:
    """The SR-IOV device plugin's env name: ``PCIDEVICE_`` + upper-case, ``/`` and ``.`` → ``_``."""
    return "PCIDEVICE_" + resource_name.upper().replace("/", "_").replace(".", "_")


def _check_pci_block(block: object, source: str) -> None:
    if not isinstance(block, Mapping):
        raise InvalidConfig(f"device-info {source}: type is 'pci' but 'pci' is not an object")
    if "pci-address" not in block:
        raise InvalidConfig(f"device-info {source}: type is 'pci' but pci.pci-address is missing")
    for key in _PCI_ADDRESS_KEYS:
        value = block.get(key)
        if key != "pci-address" and value in ("", None):
            continue  # optional: the PF address is empty for devices that are not VFs
        if not isinstance(value, str):
            raise InvalidConfig(f"device-info {source}: pci.{key} must be a string, got {value!r}")
        try:
            PciAddress.parse(value)
        except DeviceError as exc:
            raise InvalidConfig(f"device-info {source}: pci.{key}: {exc.msg}") from exc


def parse_device_info(data: bytes | str | Mapping[str, Any], *, source: str = "object") -> DeviceInfo:
    """Validate a device-info object and wrap it; unknown fields are kept in ``raw``.

    ``DecodeFailure`` when the bytes are not a JSON object; ``InvalidConfig`` when the
    object breaks the spec: ``type`` not one of pci/vdpa/vhost-user/memif, ``version``
    not 1.x.y, or a pci device without a valid ``pci.pci-address``. ``source`` (a file
    path, a network name) goes into the messages.
    """
    obj: object
    if isinstance(data, (bytes, str)):
        try:
            obj = json.loads(data)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise DecodeFailure(f"device-info {source}: not valid JSON: {exc}") from exc
    else:
        obj = data
    if not isinstance(obj, Mapping):
        raise DecodeFailure(f"device-info {source}: expected a JSON object, got {type(obj).__name__}")
    dtype = obj.get("type")
    version = obj.get("version")
    if dtype not in DEVICE_TYPES:
        raise InvalidConfig(f"device-info {source}: type {dtype!r} is not one of {', '.join(DEVICE_TYPES)}")
    if not isinstance(version, str) or not _VERSION_RE.match(version):
        raise InvalidConfig(f"device-info {source}: version {version!r} is not a 1.x.y spec version")
    if dtype == "pci":
        _check_pci_block(obj.get("pci"), source)
    return DeviceInfo(type=dtype, version=version, raw=dict(obj))


def vf_device_info(vf: VfInfo, version: str = "1.1.0") -> DeviceInfo:
    """The object the SR-IOV device plugin writes for a VF (empty fields left out, as Go's
    ``omitempty`` does); used by the stand-in device plugin of tests and the demo."""
    pci = {"pci-address": str(vf.address)}
    if vf.pf_address is not None:
        pci["pf-pci-address"] = str(vf.pf_address)
    return parse_device_info({"type": "pci", "version": version, "pci": pci}, source=f"VF {vf.address}")


def device_info_json(info: DeviceInfo) -> bytes:
    """The file content for ``info`` (its full raw object, compact as Go writes it)."""
    raw = dict(info.raw) or {"type": info.type, "version": info.version}
    return json.dumps(raw, separators=(",", ":")).encode()


def _load(path: str) -> DeviceInfo | None:
    try:
        with open(path, "rb") as f:
            data = f.read()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise IOFailure(f"device-info {path}: cannot read: {exc.strerror or exc}") from exc
    return parse_device_info(data, source=path)


def _save(path: str, info: DeviceInfo) -> None:
    """Write atomically (temp file + rename), mode 0444 as nadutils does."""
    folder = os.path.dirname(path)
    try:
        os.makedirs(folder, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=".devinfo-")
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(device_info_json(info))
            os.chmod(tmp, 0o444)
            os.replace(tmp, path)
        except BaseException:
            if os.path.lexists(tmp):
                os.unlink(tmp)
            raise
    except OSError as exc:
        raise IOFailure(f"device-info {path}: cannot write: {exc.strerror or exc}") from exc


def load_dp(resource_name: str, device_id: str, root: str = DEVINFO_ROOT) -> DeviceInfo | None:
    """The device plugin's file for that device; None when the plugin wrote none."""
    return _load(dp_path(resource_name, device_id, root))


def save_dp(resource_name: str, device_id: str, info: DeviceInfo, root: str = DEVINFO_ROOT) -> str:
    """Write a device plugin's file (the stand-in device plugin of tests and the demo)."""
    path = dp_path(resource_name, device_id, root)
    _save(path, info)
    return path


def copy_dp_to_cni(
    resource_name: str,
    device_id: str,
    network_name: str,
    container_id: str,
    ifname: str,
    root: str = DEVINFO_ROOT,
) -> DeviceInfo | None:
    """Copy the device plugin's file to the CNI file of this attachment and return it.

    None (and nothing written) when the device plugin wrote no file: not every device
    plugin does, and Multus then simply leaves ``device-info`` out. An existing CNI file
    (a repeated ADD) is replaced.
    """
    info = load_dp(resource_name, device_id, root)
    if info is None:
        return None
    _save(cni_path(network_name, container_id, ifname, root), info)
    return info


def load_cni(network_name: str, container_id: str, ifname: str, root: str = DEVINFO_ROOT) -> DeviceInfo | None:
    """The attachment's CNI file (written by kvnet, Multus or the delegate); None if absent."""
    return _load(cni_path(network_name, container_id, ifname, root))


def remove_cni(network_name: str, container_id: str, ifname: str, root: str = DEVINFO_ROOT) -> None:
    """Remove the attachment's CNI file; nothing to do when it is already gone (DEL)."""
    path = cni_path(network_name, container_id, ifname, root)
    try:
        os.unlink(path)
    except FileNotFoundError:
        return
    except OSError as exc:
        if exc.errno == errno.ENOENT:
            return
        raise IOFailure(f"device-info {path}: cannot remove: {exc.strerror or exc}") from exc
