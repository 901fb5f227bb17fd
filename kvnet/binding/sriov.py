"""SR-IOV discovery from sysfs, with an injectable root.

The SR-IOV device plugin hands out VFs by PCI address; before kvnet gives one to a VM it
wants to know what that address is: a VF of which PF, bound to ``vfio-pci`` (a guest can
take it whole, and it has an IOMMU group) or to a kernel driver (it has a netdev), and
its index among the PF's VFs. All of that is in ``/sys/bus/pci/devices/<addr>``:

    physfn        -> ../<pf address>                   (only VFs have it)
    driver        -> ../../../bus/pci/drivers/<name>   (absent when unbound)
    iommu_group   -> ../../../kernel/iommu_groups/<n>
    net/<ifname>/                                      (kernel drivers only)
    virtfn<N>     -> ../<vf address>                   (on the PF)
    sriov_numvfs, sriov_totalvfs                       (on the PF)

Everything here reads under ``root`` (``/`` in production, a temp folder in tests and
the demo, where ``kvnet.lab.fake_sysfs`` builds such trees with the same relative links
the kernel makes). Every failure is a ``DeviceError`` that names the address and the file.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass

from kvnet.core.errors import DeviceError
from kvnet.core.model import PciAddress

VFIO_DRIVER = "vfio-pci"
_VIRTFN_RE = re.compile(r"^virtfn(\d+)$")


@dataclass(frozen=True)
class VfInfo:
    """One SR-IOV virtual function as sysfs shows it.

    ``netdevs`` is empty for a VF bound to ``vfio-pci`` (nothing moves into the pod; the
    VM gets the PCI device) and for an unbound VF.
    """

    address: PciAddress
    pf_address: PciAddress | None
    vf_index: int | None
    driver: str | None
    iommu_group: int | None
    netdevs: tuple[str, ...] = ()

    @property
    def is_vfio(self) -> bool:
        """True when a guest can take this VF whole (bound to vfio-pci)."""
        return self.driver == VFIO_DRIVER


def pci_devices_dir(root: str = "/") -> str:
    """``<root>/sys/bus/pci/devices``."""
    return os.path.join(root, "sys", "bus", "pci", "devices")


def _device_dir(address: PciAddress, root: str) -> str:
    path = os.path.join(pci_devices_dir(root), str(address))
    if not os.path.lexists(path):
        raise DeviceError(f"PCI device {address}: no such device ({path} does not exist)")
    if not os.path.isdir(path):
        raise DeviceError(f"PCI device {address}: {path} is not a device folder (broken symlink?)")
    return path


def _link_target_name(dev: str, entry: str, address: PciAddress) -> str | None:
    """The last component of the symlink ``dev/entry``; None when there is no such entry.

    A link that exists but points nowhere is always an error: the kernel never leaves
    dangling links in a device folder, so the tree is broken.
    """
    path = os.path.join(dev, entry)
    if not os.path.lexists(path):
        return None
    if not os.path.islink(path):
        raise DeviceError(f"PCI device {address}: {entry} is not a symlink ({path})")
    try:
        target = os.readlink(path)
    except OSError as exc:
        raise DeviceError(f"PCI device {address}: cannot read link {entry}: {exc.strerror}") from exc
    if not os.path.exists(path):
        raise DeviceError(f"PCI device {address}: {entry} is a broken symlink (-> {target})")
    name = os.path.basename(os.path.normpath(target))
    if not name:
        raise DeviceError(f"PCI device {address}: {entry} points to an empty name (-> {target})")
    return name


def _read_int(path: str, what: str, address: PciAddress) -> int:
    try:
        with open(path, encoding="ascii") as f:
            text = f.read().strip()
    except FileNotFoundError as exc:
        raise DeviceError(f"PCI device {address}: {what} is missing ({path})") from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise DeviceError(f"PCI device {address}: cannot read {what} ({path}): {exc}") from exc
    if not text.isdigit():
        raise DeviceError(f"PCI device {address}: {what} is not a number: {text!r} ({path})")
    return int(text)


def _netdevs(dev: str, address: PciAddress) -> tuple[str, ...]:
    net = os.path.join(dev, "net")
    if not os.path.lexists(net):
        return ()
    try:
        return tuple(sorted(os.listdir(net)))
    except OSError as exc:
        raise DeviceError(f"PCI device {address}: cannot list {net}: {exc.strerror}") from exc


def _parse_address(text: str, what: str) -> PciAddress:
    try:
        return PciAddress.parse(text)
    except DeviceError as exc:
        raise DeviceError(f"{what}: {exc.msg}") from exc


def _virtfn_links(pf_dev: str, pf: PciAddress) -> dict[int, str]:
    """``{N: <vf address text>}`` from the PF's ``virtfnN`` links (broken ones are errors)."""
    try:
        entries = os.listdir(pf_dev)
    except OSError as exc:
        raise DeviceError(f"PCI device {pf}: cannot list {pf_dev}: {exc.strerror}") from exc
    found: dict[int, str] = {}
    for entry in entries:
        m = _VIRTFN_RE.match(entry)
        if m:
            name = _link_target_name(pf_dev, entry, pf)
            if name is not None:  # None only if the link vanished since listdir
                found[int(m[1])] = name
    return found


def discover_vf(pci_address: str, *, root: str = "/") -> VfInfo:
    """Read one VF's facts from sysfs; ``DeviceError`` when it is not a usable VF.

    Errors: malformed address, no such device, not a VF (no ``physfn``), broken
    ``physfn``/``driver``/``iommu_group`` links, a PF that does not list this VF among
    its ``virtfnN`` links, a ``vfio-pci`` VF without an IOMMU group.
    """
    address = _parse_address(pci_address, "SR-IOV VF")
    dev = _device_dir(address, root)
    pf_name = _link_target_name(dev, "physfn", address)
    if pf_name is None:
        raise DeviceError(f"PCI device {address} is not an SR-IOV VF (it has no physfn link)")
    pf = _parse_address(pf_name, f"PCI device {address}: physfn")
    driver = _link_target_name(dev, "driver", address)
    group_name = _link_target_name(dev, "iommu_group", address)
    iommu_group: int | None = None
    if group_name is not None:
        if not group_name.isdigit():
            raise DeviceError(f"PCI device {address}: iommu_group points to {group_name!r}, not a group number")
        iommu_group = int(group_name)
    if driver == VFIO_DRIVER and iommu_group is None:
        raise DeviceError(f"PCI device {address} is bound to vfio-pci but has no iommu_group (IOMMU off?)")
    pf_dev = _device_dir(pf, root)
    index = next((n for n, vf in _virtfn_links(pf_dev, pf).items() if vf == str(address)), None)
    if index is None:
        raise DeviceError(f"PCI device {address}: its PF {pf} has no virtfnN link to it")
    netdevs = () if driver == VFIO_DRIVER else _netdevs(dev, address)
    return VfInfo(address, pf, index, driver, iommu_group, netdevs)


def list_vfs(pf_address: str, *, root: str = "/") -> tuple[VfInfo, ...]:
    """All VFs of a PF in VF-index order, checked against ``sriov_numvfs``/``sriov_totalvfs``."""
    pf = _parse_address(pf_address, "SR-IOV PF")
    pf_dev = _device_dir(pf, root)
    numvfs = _read_int(os.path.join(pf_dev, "sriov_numvfs"), "sriov_numvfs", pf)
    total = _read_int(os.path.join(pf_dev, "sriov_totalvfs"), "sriov_totalvfs", pf)
    if numvfs > total:
        raise DeviceError(f"PCI device {pf}: sriov_numvfs {numvfs} is more than sriov_totalvfs {total}")
    links = _virtfn_links(pf_dev, pf)
    if sorted(links) != list(range(numvfs)):
        raise DeviceError(
            f"PCI device {pf}: sriov_numvfs is {numvfs} but the virtfn links are "
            f"{[f'virtfn{n}' for n in sorted(links)]}"
        )
    out = []
    for n in range(numvfs):
        vf = discover_vf(links[n], root=root)
        if vf.pf_address != pf:
            raise DeviceError(f"PCI device {pf}: virtfn{n} -> {vf.address}, whose physfn is {vf.pf_address}")
        out.append(vf)
    return tuple(out)


def netdev_pci_address(ifname: str, *, root: str = "/") -> PciAddress | None:
    """The PCI address behind a kernel netdev (``/sys/class/net/<ifname>/device``).

    None for a netdev with no PCI device (veth, bridge, tap, ...); ``DeviceError`` when
    there is no such netdev or its ``device`` link is broken. Reads the current network
    namespace's view of ``/sys/class/net`` when ``root`` is ``/``.
    """
    if not ifname or "/" in ifname or ifname in (".", ".."):
        raise DeviceError(f"netdev {ifname!r}: not an interface name")
    net = os.path.join(root, "sys", "class", "net", ifname)
    if not os.path.exists(net):
        raise DeviceError(f"netdev {ifname}: no such interface ({net} does not exist)")
    link = os.path.join(net, "device")
    if not os.path.lexists(link):
        return None
    if not os.path.exists(link):
        raise DeviceError(f"netdev {ifname}: device is a broken symlink (-> {os.readlink(link)})")
    name = os.path.basename(os.path.normpath(os.readlink(link)))
    try:
        return PciAddress.parse(name)
    except DeviceError:
        return None  # a device on another bus (usb, virtio, ...)
