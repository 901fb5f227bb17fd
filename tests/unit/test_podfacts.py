"""read_pod_links on fake /sys/class/net trees shaped like this kernel's (see sidecar/podfacts.py),
and the lab's fake pod (kvnet.lab.fake_pod) read back as the binding's model of it."""

from __future__ import annotations

import os
import tempfile
from dataclasses import replace
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kvnet.core import bindrecord
from kvnet.core.errors import DecodeFailure
from kvnet.core.model import BindingRecord, GuestIpConfig, PodLink
from kvnet.core.plumbing import BridgedTap, Macvtap, Plumbing, RedirectedTap, VfioVf
from kvnet.lab.fake_pod import add_bridge_binding, write_plumbing
from kvnet.sidecar.podfacts import read_pod_links

RECORD = BindingRecord("0a:58:0a:01:00:05", 1450, GuestIpConfig(("10.1.0.5/24",), ("10.1.0.1",)))


def make_link(
    root: Path,
    name: str,
    *,
    mac: str = "02:00:00:00:00:01",
    mtu: int = 1500,
    flags: str = "0x1003",
    type_: int = 1,
    uevent: str = "",
    alias: str = "",
    tun_flags: str | None = None,
    dirs: tuple[str, ...] = (),
    master: str | None = None,
) -> Path:
    """A folder like /sys/class/net/<name> (sysfs writes a newline after each value)."""
    d = root / name
    d.mkdir(parents=True)
    (d / "address").write_text(mac + "\n")
    (d / "mtu").write_text(f"{mtu}\n")
    (d / "flags").write_text(flags + "\n")
    (d / "type").write_text(f"{type_}\n")
    (d / "uevent").write_text(f"{uevent}INTERFACE={name}\nIFINDEX=7\n")
    (d / "ifalias").write_text(alias + "\n")
    if tun_flags is not None:
        (d / "tun_flags").write_text(tun_flags + "\n")
        (d / "owner").write_text("107\n")
        (d / "group").write_text("107\n")
    for sub in dirs:
        (d / sub).mkdir(parents=True)
    if master is not None:
        os.symlink(f"../{master}", d / "master")
    return d


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    root = tmp_path / "class-net"
    make_link(root, "lo", mac="00:00:00:00:00:00", mtu=65536, type_=772, flags="0x9")
    make_link(root, "eth0", mac="0A:58:0A:F4:00:07", mtu=1450)
    make_link(root, "k6t-16477688c0e", mac="02:aa:00:00:00:01", uevent="DEVTYPE=bridge\n", dirs=("bridge",))
    make_link(
        root,
        "pod16477688c0e",
        mac="02:fe:00:00:00:02",
        mtu=1450,
        alias=bindrecord.encode(RECORD),
        master="k6t-16477688c0e",
        dirs=("brport",),
    )
    make_link(root, "tap16477688c0e", mtu=1450, tun_flags="0x5902", master="k6t-16477688c0e", dirs=("brport",))
    make_link(root, "tapb1f51a511f1", tun_flags="0x5802", flags="0x1002")
    make_link(root, "podaaaaaaaaaaa", mac="66:00:00:00:00:09", dirs=("macvtap/tap12",))
    make_link(root, "podbbbbbbbbbbb", mac="66:00:00:00:00:10", alias="uplink to rack 3")
    return root


def fake_drivers(name: str) -> str | None:
    return {"eth0": "veth", "podbbbbbbbbbbb": "macvlan"}.get(name)


def test_reads_every_kind(tree: Path) -> None:
    links = read_pod_links(str(tree), driver_of=fake_drivers)
    assert "lo" not in links
    assert links["eth0"] == PodLink("eth0", "0a:58:0a:f4:00:07", 1450, kind="veth", up=True)
    assert links["k6t-16477688c0e"].kind == "bridge"
    pod = links["pod16477688c0e"]
    assert (pod.kind, pod.master, pod.mtu, pod.record) == ("", "k6t-16477688c0e", 1450, RECORD)
    tap = links["tap16477688c0e"]
    assert (tap.kind, tap.multi_queue, tap.master, tap.up) == ("tun", True, "k6t-16477688c0e", True)
    single = links["tapb1f51a511f1"]
    assert (single.kind, single.multi_queue, single.up) == ("tun", False, False)
    assert links["podaaaaaaaaaaa"].kind == "macvtap"
    assert links["podbbbbbbbbbbb"].kind == "macvlan"
    assert links["podbbbbbbbbbbb"].record is None  # a foreign alias is not a record


def test_no_driver_lookup_on_a_fake_tree_by_default(tree: Path) -> None:
    links = read_pod_links(str(tree))
    assert links["eth0"].kind == ""  # veth is only known through the ethtool ioctl
    assert links["tap16477688c0e"].kind == "tun"


@pytest.mark.parametrize(
    ("tun_flags", "multi_queue"),
    [("0x1802", False), ("0x1902", True), ("0x5902", True), ("0x5802", False), ("0x0100", True), ("garbage", False)],
)
def test_tap_multi_queue_flag(tmp_path: Path, tun_flags: str, multi_queue: bool) -> None:
    make_link(tmp_path, "tap0", tun_flags=tun_flags)
    link = read_pod_links(str(tmp_path))["tap0"]
    assert link.multi_queue is multi_queue
    assert link.kind == "tun"


def test_malformed_record_names_the_link(tmp_path: Path) -> None:
    make_link(tmp_path, "pod16477688c0e", alias='{"kvnet":1,"mac":"zz"}')
    with pytest.raises(DecodeFailure, match="link pod16477688c0e in the pod netns: malformed kvnet binding record"):
        read_pod_links(str(tmp_path))


def test_alias_with_bytes_that_are_not_utf8(tmp_path: Path) -> None:
    d = make_link(tmp_path, "eth0")
    (d / "ifalias").write_bytes(b"\xff\xfe rack\n")
    assert read_pod_links(str(tmp_path))["eth0"].record is None


def test_a_link_that_vanished_is_left_out(tmp_path: Path) -> None:
    make_link(tmp_path, "eth0")
    (tmp_path / "gone").mkdir()  # the folder is there, its files are not (link deleted mid-read)
    assert list(read_pod_links(str(tmp_path))) == ["eth0"]


def test_missing_root_gives_no_links(tmp_path: Path) -> None:
    assert read_pod_links(str(tmp_path / "nothing")) == {}


def test_real_sysfs_has_loopback_left_out() -> None:
    """The default root works for any user and never lists lo."""
    links = read_pod_links()
    assert "lo" not in links
    assert all(link.mtu > 0 for link in links.values())


_files = st.fixed_dictionaries(
    {},
    optional={n: st.text(max_size=40) for n in ("address", "mtu", "flags", "type", "uevent", "ifalias", "tun_flags")},
)


@given(_files, st.booleans())
def test_any_file_contents_give_a_link_or_nothing(files: dict[str, str], macvtap: bool) -> None:
    """Whatever sysfs holds, the reader returns links or raises DecodeFailure for a bad record."""
    with tempfile.TemporaryDirectory() as root:
        d = Path(root, "x0")
        d.mkdir()
        for name, text in files.items():
            (d / name).write_text(text, errors="surrogateescape")
        if macvtap:
            (d / "macvtap").mkdir()
        try:
            links = read_pod_links(root)
        except DecodeFailure:
            assert bindrecord.is_tagged(files.get("ifalias", "").strip())
            return
        assert set(links) <= {"x0"}
        for link in links.values():
            assert link.mtu >= 0 and link.kind in ("", "tun", "macvtap", "bridge", "vlan", "bond", "vxlan")


_KINDS_SYSFS_SHOWS = ("bridge", "tun", "macvtap", "vlan", "bond", "vxlan")


@pytest.mark.parametrize(
    "plumbing",
    [
        BridgedTap("pod16477688c0e", RECORD),
        BridgedTap("pod16477688c0e", RECORD, "vxlan", multi_queue=True),
        RedirectedTap("pod16477688c0e", RECORD),
        RedirectedTap("net1", BindingRecord("0a:58:0a:01:00:09", 9000), "veth", multi_queue=True),
        Macvtap("podaaaaaaaaaaa", "66:00:00:00:00:09", 1500),
        VfioVf("podc70d6cef7d4"),
    ],
    ids=lambda p: type(p).__name__,
)
def test_the_fake_pod_reads_back_as_the_binding_model(tmp_path: Path, plumbing: Plumbing) -> None:
    """kvnet.lab.fake_pod writes a plumbing kind's links; the sidecar's reader gets them back
    (a kind sysfs shows only through the ethtool ioctl reads as "" on a fake tree)."""
    write_plumbing(tmp_path, plumbing)
    expected = {
        link.name: replace(link, kind=link.kind if link.kind in _KINDS_SYSFS_SHOWS else "") for link in plumbing.links()
    }
    assert read_pod_links(str(tmp_path)) == expected


def test_add_bridge_binding_is_a_bridged_tap(tmp_path: Path) -> None:
    ip = GuestIpConfig(("10.1.0.5/24",))
    add_bridge_binding(tmp_path / "a", "blue", original_mac="02:00:00:00:00:0a", mtu=1450, ip=ip)
    write_plumbing(tmp_path / "b", BridgedTap("pod16477688c0e", BindingRecord("02:00:00:00:00:0a", 1450, ip)))
    assert read_pod_links(str(tmp_path / "a")) == read_pod_links(str(tmp_path / "b"))
