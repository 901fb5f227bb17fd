"""SR-IOV discovery on fake sysfs trees shaped like the kernel's (no hardware, no root)."""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kvnet.binding.sriov import VfInfo, discover_vf, list_vfs, netdev_pci_address
from kvnet.core.errors import DeviceError
from kvnet.core.model import PciAddress
from kvnet.lab.fake_sysfs import FakePf, FakeVf, make_fake_sysfs

PF = "0000:81:00.0"
VFS = (
    FakeVf("0000:81:00.2", driver="vfio-pci", iommu_group=60),
    FakeVf("0000:81:00.3", driver="vfio-pci", iommu_group=61),
    FakeVf("0000:81:00.4", driver="iavf", iommu_group=62, netdev="ens1f0v2"),
    FakeVf("0000:81:00.5", driver="iavf", iommu_group=63, netdev="ens1f0v3"),
)


@pytest.fixture
def root(tmp_path: Path) -> str:
    """A PF with 4 VFs: two on vfio-pci, two on a kernel driver with a netdev."""
    make_fake_sysfs(str(tmp_path), {PF: FakePf(vfs=VFS, driver="ice", netdev="ens1f0", iommu_group=59)})
    return str(tmp_path)


def dev(root: str, addr: str) -> Path:
    return Path(root, "sys/bus/pci/devices", addr)


def test_tree_has_the_kernel_shape(root: str) -> None:
    vf = dev(root, "0000:81:00.2")
    assert os.readlink(vf) == "../../../devices/pci0000:00/0000:81:00.2"
    assert os.readlink(vf / "physfn") == "../0000:81:00.0"
    assert os.readlink(vf / "driver") == "../../../bus/pci/drivers/vfio-pci"
    assert os.readlink(vf / "iommu_group") == "../../../kernel/iommu_groups/60"
    assert os.readlink(dev(root, PF) / "virtfn3") == "../0000:81:00.5"
    assert (dev(root, PF) / "sriov_numvfs").read_text() == "4\n"
    assert (dev(root, PF) / "sriov_totalvfs").read_text() == "8\n"
    assert (dev(root, "0000:81:00.4") / "net" / "ens1f0v2").is_dir()


def test_vfio_vf(root: str) -> None:
    assert discover_vf("0000:81:00.3", root=root) == VfInfo(
        address=PciAddress(0, 0x81, 0, 3),
        pf_address=PciAddress(0, 0x81, 0, 0),
        vf_index=1,
        driver="vfio-pci",
        iommu_group=61,
        netdevs=(),
    )
    assert discover_vf("0000:81:00.3", root=root).is_vfio


def test_kernel_driver_vf(root: str) -> None:
    vf = discover_vf("0000:81:00.5", root=root)
    assert (vf.driver, vf.vf_index, vf.netdevs, vf.iommu_group) == ("iavf", 3, ("ens1f0v3",), 63)
    assert not vf.is_vfio


def test_unbound_vf_and_address_spelling(tmp_path: Path) -> None:
    make_fake_sysfs(str(tmp_path), {"0000:3B:00.0": FakePf(vfs=[FakeVf("0000:3b:02.0", driver=None)])})
    vf = discover_vf("0000:3B:02.0", root=str(tmp_path))
    assert discover_vf(" 0000:3b:02.0\n", root=str(tmp_path)) == vf
    assert str(vf.address) == "0000:3b:02.0" and str(vf.pf_address) == "0000:3b:00.0"
    assert (vf.driver, vf.iommu_group, vf.netdevs, vf.vf_index, vf.is_vfio) == (None, None, (), 0, False)


def test_list_vfs_in_index_order(root: str) -> None:
    vfs = list_vfs(PF, root=root)
    assert [str(v.address) for v in vfs] == [v.address for v in VFS]
    assert [v.vf_index for v in vfs] == [0, 1, 2, 3]
    assert [v.is_vfio for v in vfs] == [True, True, False, False]


def test_list_vfs_of_a_pf_with_no_vfs(tmp_path: Path) -> None:
    make_fake_sysfs(str(tmp_path), {PF: FakePf(vfs=())})
    assert list_vfs(PF, root=str(tmp_path)) == ()


def test_two_pfs_do_not_mix(tmp_path: Path) -> None:
    make_fake_sysfs(
        str(tmp_path),
        {
            "0000:81:00.0": FakePf(vfs=[FakeVf("0000:81:00.2", iommu_group=1)]),
            "0000:81:00.1": FakePf(vfs=[FakeVf("0000:81:0a.0", iommu_group=2), FakeVf("0000:81:0a.1", iommu_group=3)]),
        },
    )
    assert [str(v.address) for v in list_vfs("0000:81:00.1", root=str(tmp_path))] == ["0000:81:0a.0", "0000:81:0a.1"]
    assert discover_vf("0000:81:0a.1", root=str(tmp_path)).pf_address == PciAddress(0, 0x81, 0, 1)


# --- broken trees: each gets its own specific message ---------------------------------


def _rm(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        path.unlink()


def _relink(path: Path, target: str) -> None:
    path.unlink()
    path.symlink_to(target)


Breakage = Callable[[str], None]

BROKEN: list[tuple[str, Breakage, str, str]] = [
    (
        "missing-physfn",
        lambda r: _rm(dev(r, "0000:81:00.2") / "physfn"),
        "0000:81:00.2",
        r"PCI device 0000:81:00\.2 is not an SR-IOV VF \(it has no physfn link\)",
    ),
    ("pf-is-not-a-vf", lambda r: None, PF, r"PCI device 0000:81:00\.0 is not an SR-IOV VF"),
    ("no-such-device", lambda r: None, "0000:82:00.2", r"PCI device 0000:82:00\.2: no such device"),
    (
        "dangling-driver",
        lambda r: _rm(Path(r, "sys/bus/pci/drivers/iavf")),
        "0000:81:00.4",
        r"PCI device 0000:81:00\.4: driver is a broken symlink \(-> \.\./\.\./\.\./bus/pci/drivers/iavf\)",
    ),
    (
        "dangling-physfn",
        lambda r: _relink(dev(r, "0000:81:00.2") / "physfn", "../0000:81:00.7"),
        "0000:81:00.2",
        r"PCI device 0000:81:00\.2: physfn is a broken symlink",
    ),
    (
        "physfn-not-an-address",
        lambda r: _relink(dev(r, "0000:81:00.2") / "physfn", "../../pci0000:00"),
        "0000:81:00.2",
        r"PCI device 0000:81:00\.2: physfn: invalid PCI address 'pci0000:00'",
    ),
    (
        "physfn-not-a-link",
        lambda r: (_rm(dev(r, "0000:81:00.2") / "physfn"), (dev(r, "0000:81:00.2") / "physfn").mkdir()),
        "0000:81:00.2",
        r"PCI device 0000:81:00\.2: physfn is not a symlink",
    ),
    (
        "vfio-without-iommu-group",
        lambda r: _rm(dev(r, "0000:81:00.3") / "iommu_group"),
        "0000:81:00.3",
        r"PCI device 0000:81:00\.3 is bound to vfio-pci but has no iommu_group",
    ),
    (
        "dangling-iommu-group",
        lambda r: _rm(Path(r, "sys/kernel/iommu_groups/61")),
        "0000:81:00.3",
        r"PCI device 0000:81:00\.3: iommu_group is a broken symlink",
    ),
    (
        "iommu-group-not-a-number",
        lambda r: _relink(dev(r, "0000:81:00.3") / "iommu_group", "../0000:81:00.0"),
        "0000:81:00.3",
        r"PCI device 0000:81:00\.3: iommu_group points to '0000:81:00\.0', not a group number",
    ),
    (
        "pf-forgot-the-vf",
        lambda r: _rm(dev(r, PF) / "virtfn1"),
        "0000:81:00.3",
        r"PCI device 0000:81:00\.3: its PF 0000:81:00\.0 has no virtfnN link to it",
    ),
    (
        "dangling-virtfn",
        lambda r: _relink(dev(r, PF) / "virtfn2", "../0000:81:0f.7"),
        "0000:81:00.3",
        r"PCI device 0000:81:00\.0: virtfn2 is a broken symlink",
    ),
    (
        "dangling-bus-link",
        lambda r: _rm(Path(r, "sys/devices/pci0000:00/0000:81:00.5")),
        "0000:81:00.5",
        r"PCI device 0000:81:00\.5: .* is not a device folder \(broken symlink\?\)",
    ),
    ("pf-gone", lambda r: _rm(dev(r, PF)), "0000:81:00.2", r"PCI device 0000:81:00\.0: no such device"),
    ("malformed-address", lambda r: None, "81:00.2", r"SR-IOV VF: invalid PCI address '81:00\.2'"),
    ("slot-out-of-range", lambda r: None, "0000:81:20.2", r"SR-IOV VF: invalid PCI address '0000:81:20\.2'"),
    ("path-traversal", lambda r: None, "../../../etc", r"SR-IOV VF: invalid PCI address"),
]


@pytest.mark.parametrize(("case", "breakage", "address", "message"), BROKEN, ids=[b[0] for b in BROKEN])
def test_broken_trees(root: str, case: str, breakage: Breakage, address: str, message: str) -> None:
    breakage(root)
    with pytest.raises(DeviceError, match=message) as info:
        discover_vf(address, root=root)
    assert info.value.cni_code == 107


BROKEN_PF: list[tuple[str, Breakage, str]] = [
    (
        "garbage-numvfs",
        lambda r: (dev(r, PF) / "sriov_numvfs").write_text("four\n"),
        r"PCI device 0000:81:00\.0: sriov_numvfs is not a number: 'four'",
    ),
    (
        "empty-numvfs",
        lambda r: (dev(r, PF) / "sriov_numvfs").write_text(""),
        r"PCI device 0000:81:00\.0: sriov_numvfs is not a number: ''",
    ),
    (
        "negative-numvfs",
        lambda r: (dev(r, PF) / "sriov_numvfs").write_text("-1\n"),
        r"sriov_numvfs is not a number: '-1'",
    ),
    (
        "missing-numvfs",
        lambda r: _rm(dev(r, PF) / "sriov_numvfs"),
        r"PCI device 0000:81:00\.0: sriov_numvfs is missing",
    ),
    (
        "unreadable-numvfs",
        lambda r: (_rm(dev(r, PF) / "sriov_numvfs"), (dev(r, PF) / "sriov_numvfs").mkdir()),
        r"PCI device 0000:81:00\.0: cannot read sriov_numvfs",
    ),
    (
        "numvfs-over-total",
        lambda r: (dev(r, PF) / "sriov_totalvfs").write_text("2\n"),
        r"PCI device 0000:81:00\.0: sriov_numvfs 4 is more than sriov_totalvfs 2",
    ),
    (
        "missing-totalvfs",
        lambda r: _rm(dev(r, PF) / "sriov_totalvfs"),
        r"PCI device 0000:81:00\.0: sriov_totalvfs is missing",
    ),
    (
        "numvfs-disagrees",
        lambda r: (dev(r, PF) / "sriov_numvfs").write_text("6\n"),
        r"sriov_numvfs is 6 but the virtfn links are \['virtfn0', 'virtfn1', 'virtfn2', 'virtfn3'\]",
    ),
    (
        "hole-in-virtfn",
        lambda r: _rm(dev(r, PF) / "virtfn1"),
        r"sriov_numvfs is 4 but the virtfn links are \['virtfn0', 'virtfn2', 'virtfn3'\]",
    ),
    (
        "virtfn-of-another-pf",
        lambda r: _relink(dev(r, "0000:81:00.4") / "physfn", "../0000:81:00.2"),
        r"PCI device 0000:81:00\.4: its PF 0000:81:00\.2 has no virtfnN link to it",
    ),
]


@pytest.mark.parametrize(("case", "breakage", "message"), BROKEN_PF, ids=[b[0] for b in BROKEN_PF])
def test_broken_pf(root: str, case: str, breakage: Breakage, message: str) -> None:
    breakage(root)
    with pytest.raises(DeviceError, match=message):
        list_vfs(PF, root=root)


def test_list_vfs_of_a_missing_pf(tmp_path: Path) -> None:
    with pytest.raises(DeviceError, match=r"PCI device 0000:81:00\.0: no such device"):
        list_vfs(PF, root=str(tmp_path))


def test_list_vfs_rejects_malformed_pf_address(root: str) -> None:
    with pytest.raises(DeviceError, match=r"SR-IOV PF: invalid PCI address '0000:81:00'"):
        list_vfs("0000:81:00", root=root)


# --- properties -----------------------------------------------------------------------

addresses = st.builds(PciAddress, st.integers(0, 0xFFFF), st.integers(0, 0xFF), st.integers(0, 0x1F), st.integers(0, 7))


@given(pf=addresses, vfs=st.lists(addresses, min_size=0, max_size=6, unique=True), data=st.data())
def test_any_tree_round_trips(
    tmp_path_factory: pytest.TempPathFactory, pf: PciAddress, vfs: list[PciAddress], data: st.DataObject
) -> None:
    vfs = [v for v in vfs if v != pf]
    drivers = data.draw(
        st.lists(st.sampled_from(["vfio-pci", "iavf", "mlx5_core", None]), min_size=len(vfs), max_size=len(vfs))
    )
    fakes = [
        FakeVf(str(a), driver=d, iommu_group=i if d else None, netdev=f"v{i}" if d not in (None, "vfio-pci") else None)
        for i, (a, d) in enumerate(zip(vfs, drivers, strict=False))
    ]
    root = str(tmp_path_factory.mktemp("sysfs"))
    make_fake_sysfs(root, {str(pf).upper(): FakePf(vfs=fakes)})
    found = list_vfs(str(pf), root=root)
    assert [v.address for v in found] == vfs
    assert [v.driver for v in found] == drivers
    assert all(v.pf_address == pf for v in found)
    assert [v.netdevs for v in found] == [
        ((f"v{i}",) if d not in (None, "vfio-pci") else ()) for i, d in enumerate(drivers)
    ]
    for v in found:
        assert discover_vf(str(v.address).upper(), root=root) == v


# --- netdev → PCI address ---------------------------------------------------------------


def test_netdev_pci_address(root: str) -> None:
    assert os.readlink(Path(root, "sys/class/net/ens1f0v2")) == "../../devices/pci0000:00/0000:81:00.4/net/ens1f0v2"
    assert netdev_pci_address("ens1f0v2", root=root) == PciAddress(0, 0x81, 0, 4)
    assert netdev_pci_address("ens1f0", root=root) == PciAddress(0, 0x81, 0, 0)
    veth = Path(root, "sys/class/net/veth0")
    veth.mkdir(parents=True)
    assert netdev_pci_address("veth0", root=root) is None
    virtio = Path(root, "sys/devices/virtio0")
    virtio.mkdir()
    (veth.parent / "eth0").mkdir()
    (veth.parent / "eth0" / "device").symlink_to("../../../devices/virtio0")
    assert netdev_pci_address("eth0", root=root) is None


@pytest.mark.parametrize(
    ("ifname", "message"),
    [
        ("nope0", r"netdev nope0: no such interface"),
        ("../x", r"netdev '\.\./x': not an interface name"),
        ("", r"netdev '': not an interface name"),
        ("ens1f0v3", r"netdev ens1f0v3: device is a broken symlink"),
    ],
)
def test_netdev_pci_address_errors(root: str, ifname: str, message: str) -> None:
    _relink(dev(root, "0000:81:00.5") / "net" / "ens1f0v3" / "device", "../../../0000:81:1f.7")
    with pytest.raises(DeviceError, match=message):
        netdev_pci_address(ifname, root=root)
