"""Fake sysfs trees of SR-IOV PFs and VFs, for tests and the demo.

This machine has no SR-IOV hardware and no VFIO. ``make_fake_sysfs`` builds the part of
``/sys`` that :mod:`kvnet.binding.sriov` reads, under a root of the caller's choosing, with the
same relative links the kernel makes (``sys/devices/pci0000:00/<addr>`` plus the
``sys/bus/pci/devices/<addr>`` link, drivers under ``sys/bus/pci/drivers``, IOMMU groups
under ``sys/kernel/iommu_groups``, netdevs under ``<device>/net`` and ``sys/class/net``),
so the tree reads the same wherever it is.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from kvnet.binding.sriov import VFIO_DRIVER, pci_devices_dir
from kvnet.core.model import PciAddress


@dataclass(frozen=True)
class FakeVf:
    """One VF of a fake tree: ``driver=None`` leaves it unbound."""

    address: str
    driver: str | None = VFIO_DRIVER
    iommu_group: int | None = None
    netdev: str | None = None


@dataclass(frozen=True)
class FakePf:
    """A fake PF: its own driver and netdev, its VFs in index order."""

    vfs: Sequence[FakeVf] = ()
    driver: str = "ice"
    netdev: str | None = None
    total_vfs: int | None = None  # defaults to max(len(vfs), 8)
    iommu_group: int | None = None
    extra: Mapping[str, str] = field(default_factory=dict)  # more plain files in the PF folder


def _fake_device(root: str, address: str, driver: str | None, iommu_group: int | None, netdev: str | None) -> str:
    """Create ``sys/devices/pci0000:00/<addr>`` and its ``sys/bus/pci/devices`` link."""
    sys_dir = os.path.join(root, "sys")
    dev = os.path.join(sys_dir, "devices", "pci0000:00", address)
    os.makedirs(dev, exist_ok=True)
    os.makedirs(pci_devices_dir(root), exist_ok=True)
    bus_link = os.path.join(pci_devices_dir(root), address)
    if not os.path.lexists(bus_link):
        os.symlink(os.path.join("..", "..", "..", "devices", "pci0000:00", address), bus_link)
    if driver is not None:
        os.makedirs(os.path.join(sys_dir, "bus", "pci", "drivers", driver), exist_ok=True)
        os.symlink(os.path.join("..", "..", "..", "bus", "pci", "drivers", driver), os.path.join(dev, "driver"))
    if iommu_group is not None:
        os.makedirs(os.path.join(sys_dir, "kernel", "iommu_groups", str(iommu_group)), exist_ok=True)
        os.symlink(
            os.path.join("..", "..", "..", "kernel", "iommu_groups", str(iommu_group)), os.path.join(dev, "iommu_group")
        )
    if netdev is not None:
        net_dir = os.path.join(dev, "net", netdev)
        os.makedirs(net_dir, exist_ok=True)
        os.symlink(os.path.join("..", "..", "..", address), os.path.join(net_dir, "device"))
        class_net = os.path.join(sys_dir, "class", "net")
        os.makedirs(class_net, exist_ok=True)
        os.symlink(
            os.path.join("..", "..", "devices", "pci0000:00", address, "net", netdev), os.path.join(class_net, netdev)
        )
    return dev


def make_fake_sysfs(root: str, pfs: Mapping[str, FakePf]) -> None:
    """Build sysfs trees under ``root`` shaped like the kernel's (docs/design.md §6).

    ``pfs`` maps a PF address to its description. Links are relative, as the kernel
    makes them, so the tree reads the same wherever ``root`` is.
    """
    for pf_text, pf in pfs.items():
        pf_addr = str(PciAddress.parse(pf_text))
        pf_dev = _fake_device(root, pf_addr, pf.driver, pf.iommu_group, pf.netdev)
        total = pf.total_vfs if pf.total_vfs is not None else max(len(pf.vfs), 8)
        with open(os.path.join(pf_dev, "sriov_totalvfs"), "w", encoding="ascii") as f:
            f.write(f"{total}\n")
        with open(os.path.join(pf_dev, "sriov_numvfs"), "w", encoding="ascii") as f:
            f.write(f"{len(pf.vfs)}\n")
        for name, text in pf.extra.items():
            with open(os.path.join(pf_dev, name), "w", encoding="ascii") as f:
                f.write(text)
        for index, vf in enumerate(pf.vfs):
            vf_addr = str(PciAddress.parse(vf.address))
            vf_dev = _fake_device(root, vf_addr, vf.driver, vf.iommu_group, vf.netdev)
            os.symlink(os.path.join("..", pf_addr), os.path.join(vf_dev, "physfn"))
            os.symlink(os.path.join("..", vf_addr), os.path.join(pf_dev, f"virtfn{index}"))
