"""The guest build and its formats, without root or network: kernel package choice,
vmlinux extraction, module order, the initramfs archive, the network-data command
line (tables + a hypothesis round trip) and the console parser."""

from __future__ import annotations

import gzip
import hashlib
import json
import lzma
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kvnet.core.errors import InvalidEnvironment, TranslationError
from kvnet.lab import console, guest

# --- kernel package choice -----------------------------------------------------------


@pytest.mark.parametrize(
    ("names", "want"),
    [
        (["linux-image-6.1.0-9-amd64", "linux-image-6.1.0-10-amd64"], "linux-image-6.1.0-10-amd64"),
        (["linux-image-6.1.0-56-cloud-amd64", "linux-image-6.1.0-55-amd64"], "linux-image-6.1.0-55-amd64"),
        (
            ["linux-image-6.1.0-56-rt-amd64", "linux-image-6.1.0-3-amd64", "linux-image-amd64"],
            "linux-image-6.1.0-3-amd64",
        ),
    ],
)
def test_newest_kernel_name(names: list[str], want: str) -> None:
    assert guest.newest_kernel_name(names) == want


def test_newest_kernel_name_none() -> None:
    with pytest.raises(InvalidEnvironment, match=re.escape("no linux-image-6.1.0")):
        guest.newest_kernel_name(["linux-image-amd64", "linux-image-6.1.0-5-cloud-amd64"])


# --- vmlinux and modules -------------------------------------------------------------

ELF = b"\x7fELF" + b"\x02\x01\x01" + bytes(200)


def fake_bzimage(payload: bytes) -> bytes:
    return b"MZ" + bytes(500) + lzma.compress(payload, format=lzma.FORMAT_XZ) + b"trailing junk"


def test_extract_vmlinux_finds_the_xz_stream() -> None:
    assert guest.extract_vmlinux(fake_bzimage(ELF)) == ELF


def test_extract_vmlinux_skips_a_false_magic() -> None:
    image = b"\xfd7zXZ\x00 not a stream" + fake_bzimage(ELF)
    assert guest.extract_vmlinux(image) == ELF


def test_extract_vmlinux_none_when_not_elf() -> None:
    assert guest.extract_vmlinux(fake_bzimage(b"not an elf")) is None
    assert guest.extract_vmlinux(b"MZ" + bytes(100)) is None


def fake_ko(depends: str) -> bytes:
    return b"\x7fELF junk\x00license=GPL\x00depends=" + depends.encode() + b"\x00intree=Y\x00"


@pytest.mark.parametrize(
    ("depends", "want"), [("tls", ("tls",)), ("", ()), ("virtio_ring,virtio", ("virtio_ring", "virtio"))]
)
def test_module_depends(depends: str, want: tuple[str, ...]) -> None:
    assert guest.module_depends(fake_ko(depends)) == want


def write_modules(tree: Path, deps: dict[str, str]) -> None:
    for name, dep in deps.items():
        path = tree / "kernel" / f"{name}.ko"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(fake_ko(dep))


def test_module_order_puts_dependencies_first(tmp_path: Path) -> None:
    write_modules(tmp_path, {"bonding": "tls", "tls": "", "virtio": "virtio_ring", "virtio_ring": ""})
    order = [n for n, _ in guest.module_order(tmp_path, ["virtio", "bonding"])]
    assert order == ["virtio_ring", "virtio", "tls", "bonding"]


def test_module_order_missing_module(tmp_path: Path) -> None:
    write_modules(tmp_path, {"bonding": "tls"})
    with pytest.raises(InvalidEnvironment, match=r"kernel module tls \(needed by bonding\) is not in the package"):
        guest.module_order(tmp_path, ["bonding"])


# --- initramfs -----------------------------------------------------------------------


def test_initramfs_is_a_cpio_newc_the_tools_read(tmp_path: Path) -> None:
    if not shutil.which("cpio"):
        pytest.skip("cpio not installed (apt-get install cpio): it reads the archive back")
    data = guest.make_initramfs(b"#!/bin/sh\n", b"busybox-bytes", [("virtio", b"ko1"), ("bonding", b"ko22")])
    listing = subprocess.run(["cpio", "-itv"], input=gzip.decompress(data), capture_output=True, check=True)
    lines = listing.stdout.decode().splitlines()
    names = [ln.split()[-1] for ln in lines]
    assert {
        "init",
        "bin/busybox",
        "dev/console",
        "lib/modules/virtio.ko",
        "lib/modules/bonding.ko",
        "lib/modules/order",
    } <= set(names)
    console_line = next(ln for ln in lines if ln.endswith("dev/console"))
    assert console_line.startswith("crw") and "5," in console_line
    init_line = next(ln for ln in lines if ln.endswith(" init"))
    assert init_line.startswith("-rwxr-xr-x")
    out = tmp_path / "x"
    out.mkdir()
    subprocess.run(
        ["cpio", "-id", "--no-absolute-filenames", "lib/modules/order"],
        input=gzip.decompress(data),
        cwd=out,
        capture_output=True,
        check=True,
    )
    assert (out / "lib/modules/order").read_text() == "virtio\nbonding\n"


def test_initramfs_carries_the_dhcpv6_client_with_its_libraries_and_passwd() -> None:
    if not shutil.which("cpio"):
        pytest.skip("cpio not installed (apt-get install cpio): it reads the archive back")
    extras = guest.dhcpcd_files()
    assert extras, "dhcpcd-base is a test dependency (Makefile apt list)"
    data = guest.make_initramfs(b"#!/bin/sh\n", b"bb", [], extras)
    listing = subprocess.run(["cpio", "-it"], input=gzip.decompress(data), capture_output=True, check=True)
    names = set(listing.stdout.decode().split())
    assert {"sbin/dhcpcd", "lib/x86_64-linux-gnu/libc.so.6", "lib64/ld-linux-x86-64.so.2", "etc/passwd"} <= names
    assert {"var/lib/dhcpcd", "usr/lib/dhcpcd", "run"} <= names  # its state and privsep folders
    assert b"\ndhcpcd:x:" in dict((n, d) for n, d, _ in extras)["etc/passwd"]


def test_init_has_the_udhcpc_script_for_dhcp_mode() -> None:
    script = guest.udhcpc_script()
    assert script.startswith("#!/bin/sh\n") and "KVNET dhcp4 " in script and "staticroutes" in script
    assert b"kvnet.dhcp=*" in guest.init_script()


def test_initramfs_is_reproducible() -> None:
    args = (b"init", b"bb", [("m", b"x")])
    assert guest.make_initramfs(*args) == guest.make_initramfs(*args)


# --- build and cache (a fake apt serving a real .deb made here) ------------------------


class FakeApt:
    def __init__(self, root: Path, version: str = "6.1.99-1") -> None:
        self.root = root
        self.version = version
        self.downloads = 0

    def newest_kernel(self) -> tuple[str, str]:
        return "linux-image-6.1.0-99-amd64", self.version

    def download(self, package: str, dest: Path) -> Path:
        self.downloads += 1
        pkg = dest / "pkg"
        (pkg / "DEBIAN").mkdir(parents=True)
        (pkg / "DEBIAN/control").write_text(
            f"Package: {package}\nVersion: {self.version}\nArchitecture: amd64\nMaintainer: t <t@example.org>\nDescription: fake\n"
        )
        (pkg / "boot").mkdir()
        (pkg / "boot/vmlinuz-6.1.0-99-amd64").write_bytes(fake_bzimage(ELF))
        mods = pkg / "lib/modules/6.1.0-99-amd64"
        deps = {name: "" for name in guest.VIRTIO_MODULES}
        deps.update({"virtio_net": "virtio_ring,virtio,net_failover", "bonding": "tls", "tls": ""})
        write_modules(mods, deps)
        deb = dest / f"{package}_{self.version}_amd64.deb"
        subprocess.run(["dpkg-deb", "-Znone", "--build", str(pkg), str(deb)], capture_output=True, check=True)
        return deb


def test_build_then_cache_then_rebuild_on_new_kernel(tmp_path: Path) -> None:
    if not shutil.which("dpkg-deb"):
        pytest.skip("dpkg-deb not installed (not a Debian machine)")
    busybox = tmp_path / "busybox"
    busybox.write_bytes(b"bb")
    apt = FakeApt(tmp_path)
    out = tmp_path / "guest"
    image = guest.build(out, apt=apt, busybox=busybox)
    assert image.uncompressed and image.kernel.read_bytes() == ELF
    stamp = json.loads((out / "stamp.json").read_text())
    assert stamp["module_order"][-2:] == ["tls", "bonding"]
    assert stamp["kernel_version"] == "6.1.99-1"
    assert guest.build(out, apt=apt, busybox=busybox) == image
    assert apt.downloads == 1
    apt.version = "6.1.99-2"
    assert guest.build(out, apt=apt, busybox=busybox).kernel_version == "6.1.99-2"
    assert apt.downloads == 2
    assert not list(out.glob(".build-*"))


def test_build_rebuilds_on_a_new_busybox_or_builder_version(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    if not shutil.which("dpkg-deb"):
        pytest.skip("dpkg-deb not installed (not a Debian machine)")
    busybox = tmp_path / "busybox"
    busybox.write_bytes(b"fake busybox 1.35")
    apt = FakeApt(tmp_path)
    out = tmp_path / "guest"
    guest.build(out, apt=apt, busybox=busybox)
    stamp = json.loads((out / "stamp.json").read_text())
    assert stamp["busybox_sha256"] == hashlib.sha256(b"fake busybox 1.35").hexdigest()
    assert stamp["builder_version"] == guest.BUILDER_VERSION
    guest.build(out, apt=apt, busybox=busybox)
    assert apt.downloads == 1  # same inputs: cached
    # a new busybox (same kernel, same /init) rebuilds, and the new one is in the initramfs
    busybox.write_bytes(b"fake busybox 1.36")
    guest.build(out, apt=apt, busybox=busybox)
    assert apt.downloads == 2
    assert b"fake busybox 1.36" in gzip.decompress((out / "initrd.gz").read_bytes())
    assert (
        json.loads((out / "stamp.json").read_text())["busybox_sha256"]
        == hashlib.sha256(b"fake busybox 1.36").hexdigest()
    )
    # a changed builder: the old image is refused by load() and rebuilt by build()
    monkeypatch.setattr(guest, "BUILDER_VERSION", guest.BUILDER_VERSION + 1)
    with pytest.raises(InvalidEnvironment, match="builder version"):
        guest.load(out)
    guest.build(out, apt=apt, busybox=busybox)
    assert apt.downloads == 3
    assert json.loads((out / "stamp.json").read_text())["builder_version"] == guest.BUILDER_VERSION
    guest.load(out)


def test_build_without_busybox(tmp_path: Path) -> None:
    with pytest.raises(InvalidEnvironment, match="busybox-static"):
        guest.build(tmp_path / "guest", apt=FakeApt(tmp_path), busybox=tmp_path / "no-busybox")


def test_load_without_a_build(tmp_path: Path) -> None:
    with pytest.raises(InvalidEnvironment, match="no guest image in"):
        guest.load(tmp_path)


def test_cmdline_too_long() -> None:
    image = guest.GuestImage(Path("k"), Path("i"), "p", "v", True)
    assert image.cmdline("kvnet.stay=5").endswith("quiet panic=-1 kvnet.stay=5")
    with pytest.raises(TranslationError, match="the kernel takes at most 2047"):
        image.cmdline("x" * 2100)


# --- network data → command line -------------------------------------------------------

V2: dict[str, Any] = {
    "version": 2,
    "ethernets": {
        "blue": {
            "match": {"macaddress": "02:00:00:00:00:0A"},
            "set-name": "blue",
            "addresses": ["10.1.0.5/24"],
            "gateway4": "10.1.0.1",
            "mtu": 1400,
        },
        "m1": {"match": {"macaddress": "02:00:00:00:00:b1"}, "set-name": "m1"},
        "m2": {"match": {"macaddress": "02:00:00:00:00:b2"}},
    },
    "bonds": {
        "bond0": {
            "interfaces": ["m1", "m2"],
            "parameters": {"mode": "active-backup", "mii-monitor-interval": 100, "fail-over-mac-policy": "active"},
            "addresses": ["10.4.0.5/24"],
            "routes": [{"to": "10.9.0.0/16", "via": "10.4.0.1"}],
        }
    },
}


def test_network_cmdline_exact() -> None:
    assert guest.network_cmdline(V2, peers=["10.1.0.1", "10.4.0.1"], stay=30) == (
        "kvnet.eth=blue,02:00:00:00:00:0a,blue,1400,10.1.0.5/24,10.1.0.1, "
        "kvnet.eth=m1,02:00:00:00:00:b1,m1,,,, "
        "kvnet.eth=m2,02:00:00:00:00:b2,,,,, "
        "kvnet.bond=bond0,m1+m2,active-backup,100,active,,10.4.0.5/24,,10.9.0.0/16@10.4.0.1 "
        "kvnet.ping=10.1.0.1+10.4.0.1 kvnet.stay=30"
    )


def test_network_cmdline_accepts_the_network_wrapper_and_default_route() -> None:
    data = {
        "network": {
            "version": 2,
            "ethernets": {
                "e": {"match": {"macaddress": "02:00:00:00:00:01"}, "routes": [{"to": "0.0.0.0/0", "via": "10.0.0.1"}]}
            },
        }
    }
    assert guest.network_cmdline(data) == "kvnet.eth=e,02:00:00:00:00:01,,,,10.0.0.1,"


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"version": 1}, "is not cloud-init network config version 2"),
        ({"version": 2, "ethernets": {"e": {"set-name": "x"}}}, "ethernets.e does not match by MAC address"),
        (
            {
                "version": 2,
                "ethernets": {"e": {"match": {"macaddress": "02:00:00:00:00:01"}, "addresses": ["10.0.0.1"]}},
            },
            "has no prefix length",
        ),
        (
            {
                "version": 2,
                "ethernets": {"e": {"match": {"macaddress": "02:00:00:00:00:01"}, "addresses": ["nope/24"]}},
            },
            "is not an address/prefix",
        ),
        (
            {"version": 2, "ethernets": {"e": {"match": {"macaddress": "02:00:00:00:00:01"}, "set-name": "a b"}}},
            "cannot go on a kernel command line",
        ),
        (
            {"version": 2, "ethernets": {"e": {"match": {"macaddress": "02:00:00:00:00:01"}, "mtu": 20}}},
            "is not an MTU",
        ),
        (
            {"version": 2, "ethernets": {"e": {"match": {"macaddress": "02:00:00:00:00:01"}, "gateway4": "x"}}},
            "gateway 'x' is not an IP address",
        ),
        (
            {"version": 2, "ethernets": {}, "bonds": {"b": {"interfaces": ["zz"]}}},
            "member 'zz' is not one of the ethernets",
        ),
        (
            {
                "version": 2,
                "ethernets": {
                    "e": {"match": {"macaddress": "02:00:00:00:00:01"}, "routes": [{"to": "x", "via": "10.0.0.1"}]}
                },
            },
            "route destination 'x' is not a CIDR",
        ),
        (
            {
                "version": 2,
                "ethernets": {
                    "e": {"match": {"macaddress": "02:00:00:00:00:01"}, "routes": [{"to": "10.2.0.0/16", "via": "y"}]}
                },
            },
            "route via 'y' is not an IP address",
        ),
        (
            {"version": 2, "ethernets": {"e": {"match": {"macaddress": "02:00:00:00:00:01"}, "routes": "x"}}},
            "routes is not a list",
        ),
        ({"version": 2, "ethernets": {}, "bonds": {"b": {"interfaces": []}}}, "bonds.b has no interfaces"),
        (
            {
                "version": 2,
                "ethernets": {"e": {"match": {"macaddress": "02:00:00:00:00:01"}}},
                "bonds": {"b": {"interfaces": ["e"], "parameters": {"mode": "lacp"}}},
            },
            "mode 'lacp' is not a bonding mode",
        ),
    ],
)
def test_network_cmdline_rejects(data: dict[str, Any], message: str) -> None:
    with pytest.raises(TranslationError, match=message):
        guest.network_cmdline(data)


def test_network_cmdline_rejects_bad_peer() -> None:
    with pytest.raises(TranslationError, match="guest peer 'x' is not an IP address"):
        guest.network_cmdline({"version": 2}, peers=["x"])


_ids = st.from_regex(r"[a-z][a-z0-9_-]{0,8}", fullmatch=True)
_macs = st.lists(st.integers(0, 255), min_size=5, max_size=5).map(lambda b: "02:" + ":".join(f"{x:02x}" for x in b))
_cidrs = st.tuples(st.integers(1, 223), st.integers(0, 255), st.integers(1, 254), st.integers(8, 30)).map(
    lambda t: f"{t[0]}.{t[1]}.0.{t[2]}/{t[3]}"
)
_eth = st.fixed_dictionaries(
    {"match": st.fixed_dictionaries({"macaddress": _macs})},
    optional={
        "set-name": _ids,
        "mtu": st.integers(68, 9000),
        "addresses": st.lists(_cidrs, min_size=1, max_size=3),
        "gateway4": st.just("10.0.0.1"),
        "routes": st.lists(
            st.fixed_dictionaries(
                {"to": _cidrs.map(lambda c: c.rsplit(".", 1)[0] + ".0/24"), "via": st.just("10.0.0.2")}
            ),
            min_size=1,
            max_size=2,
        ),
    },
)


@settings(max_examples=60, deadline=None)
@given(st.dictionaries(_ids, _eth, min_size=1, max_size=6), st.booleans())
def test_network_cmdline_round_trip(ethernets: dict[str, Any], with_bond: bool) -> None:
    data: dict[str, Any] = {"version": 2, "ethernets": ethernets}
    if with_bond:
        data["bonds"] = {
            "bond0": {
                "interfaces": sorted(ethernets),
                "parameters": {"mode": "active-backup", "mii-monitor-interval": 100},
            }
        }
    line = guest.network_cmdline(data)
    assert guest.parse_network_cmdline(line) == data
    assert "\n" not in line and "  " not in line


# --- console parser ------------------------------------------------------------------

CONSOLE = """\
[    0.000000] Linux version 6.1.0
KVNET boot uptime=2.91
KVNET nic name=eth0 mac=52:54:00:00:00:11
KVNET nic name=eth1 mac=52:54:00:00:00:12
KVNET nics count=2 uptime=2.98
ip: can't find device 'x'
KVNET link name=blue mac=52:54:00:00:00:11 mtu=1500 master=- addrs=10.9.0.5/24+10.9.1.5/24
KVNET link name=m1 mac=52:54:00:00:00:12 mtu=1500 master=bond0 addrs=-
KVNET bond name=bond0 mode=active-backup active=m1 slaves=m1+m2
KVNET ping dst=10.9.0.1 result=ok
KVNET error what=addr link=blue addr=1.2.3.4/8
[   10.0] some kernel line KVNET ping dst=10.9.0.1 result=fail
"""


def test_console_parse() -> None:
    report = console.parse(CONSOLE)
    assert report.nics == (console.GuestNic("eth0", "52:54:00:00:00:11"), console.GuestNic("eth1", "52:54:00:00:00:12"))
    assert report.links["blue"].addrs == ("10.9.0.5/24", "10.9.1.5/24")
    assert report.links["blue"].master is None and report.links["m1"].master == "bond0"
    assert report.bonds["bond0"] == console.GuestBondState("bond0", "active-backup", "m1", ("m1", "m2"))
    assert report.pings == (("10.9.0.1", True), ("10.9.0.1", False))
    assert report.last_ping("10.9.0.1") is False and report.last_ping("10.0.0.9") is None
    assert report.nics_reported_at() == 2.98
    assert [e.get("what") for e in report.errors] == ["addr"]
    assert report.link_by_mac("52:54:00:00:00:11") == report.links["blue"]


def test_console_wait_for_times_out(tmp_path: Path) -> None:
    log = tmp_path / "console.log"
    log.write_text("KVNET boot uptime=1\n")
    assert console.wait_for(log, lambda r: r.has("poweroff"), timeout=0.2) is None
    assert console.wait_for(log, lambda r: r.has("boot"), timeout=0.2) is not None
    assert console.wait_for(log, lambda r: r.has("poweroff"), timeout=30, alive=lambda: False) is None
    assert "KVNET boot" in console.tail(log)


_words = st.from_regex(r"[A-Za-z0-9_.:/+\-]{1,12}", fullmatch=True)


@settings(max_examples=100, deadline=None)
@given(
    st.from_regex(r"[a-z][a-z-]{0,10}", fullmatch=True),
    st.dictionaries(st.from_regex(r"[a-z]{1,6}", fullmatch=True), _words, max_size=5),
    st.text(max_size=20),
)
def test_console_line_round_trip(kind: str, fields: dict[str, str], noise: str) -> None:
    line = " ".join(["KVNET", kind, *(f"{k}={v}" for k, v in fields.items())])
    assert console.parse_line(line) == console.ConsoleEvent(kind, fields)
    # kernel timestamps or other text before the marker do not matter
    assert console.parse_line(f"[   1.234] {line}") == console.ConsoleEvent(kind, fields)
    if "KVNET " not in noise:
        assert console.parse_line(noise) is None
