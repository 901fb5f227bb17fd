"""The tiny test guest: a Debian kernel and a busybox initramfs that reports its NICs.

The guest proves what a VM really sees: its /init (``kvnet/lab/data/init``) prints each
NIC's name and MAC on the serial console, applies kvnet's guest network data the way
cloud-init would and pings the peers it is given. The network data reaches it on the
kernel command line in a compact form made by :func:`network_cmdline` from the
cloud-init v2 dict kvnet's sidecar returns (format in docs/vm-demo.md).

Building downloads one Debian kernel package (``apt-get download``), takes the virtio
and bonding modules and, when it can, the uncompressed ``vmlinux`` (QEMU boots it
directly; it saves about 2 s under TCG). The build is cached in its folder with a stamp of
its inputs and redone only when they change.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import ipaddress
import json
import logging
import lzma
import re
import shutil
import subprocess
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, Protocol

from kvnet.core.errors import InvalidEnvironment, IOFailure, TranslationError
from kvnet.core.model import is_mac

log = logging.getLogger(__name__)

# virtio-net and its dependencies, in load order (the package ships no modules.dep).
VIRTIO_MODULES = (
    "virtio_ring",
    "virtio",
    "virtio_pci_modern_dev",
    "virtio_pci_legacy_dev",
    "virtio_pci",
    "failover",
    "net_failover",
    "virtio_net",
)
# Guest bonds; their dependencies (bonding needs tls) are read from the modules themselves.
EXTRA_MODULES = ("bonding",)
BUSYBOX = Path("/bin/busybox")
# The guest's DHCPv6 client (Debian's dhcpcd-base; busybox-static has no udhcpc6) and the
# only libraries it links: copied into the initramfs with a passwd naming its privsep user.
DHCPCD = Path("/usr/sbin/dhcpcd")
DHCPCD_LIBS = (Path("/lib/x86_64-linux-gnu/libc.so.6"), Path("/lib64/ld-linux-x86-64.so.2"))
DHCPCD_DIRS = (
    "sbin",
    "etc",
    "lib/x86_64-linux-gnu",
    "lib64",
    "var",
    "var/lib",
    "var/lib/dhcpcd",
    "run",
    "usr",
    "usr/lib",
    "usr/lib/dhcpcd",
)
PASSWD = b"root:x:0:0:root:/:/bin/sh\ndhcpcd:x:102:65534:dhcpcd:/usr/lib/dhcpcd:/bin/false\n"
GROUP = b"root:x:0:\nnogroup:x:65534:\n"
BASE_CMDLINE = "console=ttyS0 quiet panic=-1"
# x86 COMMAND_LINE_SIZE is 2048 bytes including the terminating NUL.
MAX_CMDLINE = 2047
STAMP = "stamp.json"
# The builder's version, in the stamp: bump it whenever a change here alters what a build
# writes (the initramfs layout, the module handling, the kernel extraction), so every
# guest built by the older code is rebuilt and refused by load().
BUILDER_VERSION = 2
_KERNEL_PKG_RE = re.compile(r"^linux-image-6\.1\.0-(\d+)-amd64$")
_XZ_MAGIC = b"\xfd7zXZ\x00"
_ELF_MAGIC = b"\x7fELF"


@dataclass(frozen=True)
class GuestImage:
    """A built guest: what libvirt's ``<os><kernel>``, ``<initrd>`` and ``<cmdline>`` take."""

    kernel: Path
    initrd: Path
    kernel_package: str
    kernel_version: str
    uncompressed: bool  # True when ``kernel`` is the ELF vmlinux, False for the bzImage

    def cmdline(self, extra: str = "") -> str:
        """The full kernel command line; ``extra`` is the guest network data and options."""
        line = f"{BASE_CMDLINE} {extra}".strip()
        if len(line) > MAX_CMDLINE:
            raise TranslationError(
                f"guest kernel command line is {len(line)} bytes; the kernel takes at most {MAX_CMDLINE}"
            )
        return line


class Apt(Protocol):
    """The two apt operations the build needs (tests pass a fake)."""

    def newest_kernel(self) -> tuple[str, str]:
        """(package name, version) of the newest ``linux-image-6.1.0-N-amd64``."""
        ...

    def download(self, package: str, dest: Path) -> Path:
        """Download the package's .deb into ``dest`` and return its path."""
        ...


class AptCli:
    """``apt-cache`` and ``apt-get download`` as a Debian 12 machine has them."""

    def _run(self, cmd: Sequence[str], cwd: Path | None = None) -> str:
        try:
            done = subprocess.run(list(cmd), cwd=cwd, capture_output=True, text=True, check=False)
        except OSError as err:
            raise InvalidEnvironment(f"cannot run {cmd[0]}: {err} (is this a Debian machine?)") from err
        if done.returncode != 0:
            raise IOFailure(f"{' '.join(cmd)} failed with status {done.returncode}", done.stderr.strip())
        return done.stdout

    def newest_kernel(self) -> tuple[str, str]:
        names = self._run(["apt-cache", "pkgnames", "linux-image-6.1.0-"]).split()
        if not any(_KERNEL_PKG_RE.match(n) for n in names):
            self._run(["apt-get", "update", "-q"])
            names = self._run(["apt-cache", "pkgnames", "linux-image-6.1.0-"]).split()
        package = newest_kernel_name(names)
        show = self._run(["apt-cache", "show", "--no-all-versions", package])
        version = next((ln.split(":", 1)[1].strip() for ln in show.splitlines() if ln.startswith("Version:")), "")
        if not version:
            raise IOFailure(f"apt-cache show {package} printed no Version")
        return package, version

    def download(self, package: str, dest: Path) -> Path:
        self._run(["apt-get", "download", "-q", package], cwd=dest)
        debs = sorted(dest.glob(f"{package}_*.deb"))
        if not debs:
            raise IOFailure(f"apt-get download {package} left no .deb in the build folder")
        return debs[-1]


def newest_kernel_name(names: Iterable[str]) -> str:
    """The ``linux-image-6.1.0-N-amd64`` with the highest ABI number N."""
    found = [(int(m.group(1)), n) for n in names if (m := _KERNEL_PKG_RE.match(n.strip()))]
    if not found:
        raise InvalidEnvironment("apt knows no linux-image-6.1.0-*-amd64 package (run apt-get update)")
    return max(found)[1]


# ------------------------------------------------------------------------------------
# Kernel and modules
# ------------------------------------------------------------------------------------


def extract_vmlinux(bzimage: bytes) -> bytes | None:
    """The uncompressed ELF kernel inside an xz-compressed bzImage, or None.

    The same idea as the kernel's scripts/extract-vmlinux, for the one compression
    Debian uses: find the xz stream and decompress it (trailing bytes are ignored).
    """
    start = bzimage.find(_XZ_MAGIC)
    while start != -1:
        try:
            out = lzma.LZMADecompressor(format=lzma.FORMAT_XZ).decompress(bzimage[start:])
        except lzma.LZMAError:
            out = b""
        if out.startswith(_ELF_MAGIC):
            return out
        start = bzimage.find(_XZ_MAGIC, start + 1)
    return None


def module_depends(ko: bytes) -> tuple[str, ...]:
    """The ``depends=`` list in a module's .modinfo section (what modinfo -F depends prints)."""
    m = re.search(rb"(?:^|\x00)depends=([^\x00]*)", ko)
    if not m or not m.group(1):
        return ()
    return tuple(d.decode() for d in m.group(1).split(b",") if d)


def module_order(tree: Path, wanted: Sequence[str]) -> list[tuple[str, Path]]:
    """``wanted`` modules and their dependencies, each after what it depends on."""
    files = {p.name.split(".ko")[0].replace("-", "_"): p for p in tree.rglob("*.ko*")}
    order: list[tuple[str, Path]] = []
    seen: set[str] = set()

    def visit(name: str, chain: tuple[str, ...]) -> None:
        if name in seen:
            return
        if name not in files:
            raise InvalidEnvironment(
                f"kernel module {name} (needed by {' → '.join(chain) or 'the guest'}) is not in the package"
            )
        for dep in module_depends(_read_module(files[name])):
            visit(dep, (*chain, name))
        seen.add(name)
        order.append((name, files[name]))

    for name in wanted:
        visit(name, ())
    return order


def _read_module(path: Path) -> bytes:
    data = path.read_bytes()
    if path.name.endswith(".xz"):
        return lzma.decompress(data)
    return data


# ------------------------------------------------------------------------------------
# initramfs (cpio "newc", written here so device nodes need no root and builds are
# byte-for-byte reproducible)
# ------------------------------------------------------------------------------------

_S_IFDIR, _S_IFREG, _S_IFCHR = 0o040000, 0o100000, 0o020000


class CpioWriter:
    """A minimal cpio newc archive (the format the kernel unpacks as initramfs)."""

    def __init__(self) -> None:
        self._buf = io.BytesIO()
        self._ino = 0

    def _entry(self, name: str, mode: int, data: bytes = b"", rdev: tuple[int, int] = (0, 0)) -> None:
        self._ino += 1
        encoded = name.encode() + b"\x00"
        fields = (
            self._ino,
            mode,
            0,
            0,
            2 if mode & _S_IFDIR else 1,
            0,
            len(data),
            0,
            0,
            rdev[0],
            rdev[1],
            len(encoded),
            0,
        )
        header = b"070701" + b"".join(f"{f:08x}".encode() for f in fields)
        self._buf.write(header + encoded)
        self._buf.write(b"\x00" * (-(len(header) + len(encoded)) % 4))
        self._buf.write(data)
        self._buf.write(b"\x00" * (-len(data) % 4))

    def directory(self, name: str) -> None:
        self._entry(name, _S_IFDIR | 0o755)

    def file(self, name: str, data: bytes, mode: int = 0o644) -> None:
        self._entry(name, _S_IFREG | mode, data)

    def char_device(self, name: str, major: int, minor: int) -> None:
        self._entry(name, _S_IFCHR | 0o600, rdev=(major, minor))

    def finish(self) -> bytes:
        self._entry("TRAILER!!!", 0)
        return self._buf.getvalue()


def init_script() -> bytes:
    return resources.files("kvnet.lab").joinpath("data/init").read_bytes()


def udhcpc_script() -> str:
    """The udhcpc script /init writes in DHCP mode (``kvnet.dhcp=1``), as it is in /init."""
    text = init_script().decode()
    start = text.index("<<'UDHCPC'\n") + len("<<'UDHCPC'\n")
    return text[start : text.index("\nUDHCPC\n", start) + 1]


def dhcpcd_files() -> tuple[tuple[str, bytes, int], ...]:
    """dhcpcd and its libraries as (path in the initramfs, bytes, mode); () when not installed."""
    if not DHCPCD.is_file() or not all(p.is_file() for p in DHCPCD_LIBS):
        return ()
    files = [("sbin/dhcpcd", DHCPCD.read_bytes(), 0o755)]
    files += [(str(p).lstrip("/"), p.read_bytes(), 0o755) for p in DHCPCD_LIBS]
    return (*files, ("etc/passwd", PASSWD, 0o644), ("etc/group", GROUP, 0o644))


def make_initramfs(
    init: bytes,
    busybox: bytes,
    modules: Sequence[tuple[str, bytes]],
    extras: Sequence[tuple[str, bytes, int]] = (),
) -> bytes:
    """The gzip-compressed initramfs: /init, busybox, the modules and their load order, and
    ``extras`` (the DHCPv6 client, :func:`dhcpcd_files`) with the folders they need."""
    cpio = CpioWriter()
    for d in (".", "bin", "dev", "proc", "sys", "tmp", "lib", "lib/modules", *(DHCPCD_DIRS if extras else ())):
        cpio.directory(d)
    for name, data, mode in extras:
        cpio.file(name, data, mode)
    cpio.char_device("dev/console", 5, 1)
    cpio.file("init", init, 0o755)
    cpio.file("bin/busybox", busybox, 0o755)
    for name, data in modules:
        cpio.file(f"lib/modules/{name}.ko", data)
    cpio.file("lib/modules/order", "".join(f"{n}\n" for n, _ in modules).encode())
    return gzip.compress(cpio.finish(), mtime=0)


# ------------------------------------------------------------------------------------
# Build with a cache stamp
# ------------------------------------------------------------------------------------


def _stamp(
    package: str, version: str, init: bytes, busybox: bytes, extras: Sequence[tuple[str, bytes, int]] = ()
) -> dict[str, Any]:
    """Every input of a build: a change in any of them rebuilds the guest."""
    return {
        "builder_version": BUILDER_VERSION,
        "kernel_package": package,
        "kernel_version": version,
        "init_sha256": hashlib.sha256(init).hexdigest(),
        "busybox_sha256": hashlib.sha256(busybox).hexdigest(),
        "extras_sha256": hashlib.sha256(b"".join(n.encode() + d for n, d, _ in extras)).hexdigest(),
        "modules": [*VIRTIO_MODULES, *EXTRA_MODULES],
    }


def load(out: Path) -> GuestImage:
    """The guest already built in ``out`` (raises InvalidEnvironment when there is none)."""
    out = Path(out).resolve()
    try:
        stamp = json.loads((out / STAMP).read_text())
    except (OSError, ValueError) as err:
        raise InvalidEnvironment(f"no guest image in {out} (run: kvnet guest build --out {out})") from err
    image = GuestImage(
        kernel=out / stamp["kernel_file"],
        initrd=out / "initrd.gz",
        kernel_package=stamp["kernel_package"],
        kernel_version=stamp["kernel_version"],
        uncompressed=stamp["kernel_file"] == "vmlinux",
    )
    if not image.kernel.is_file() or not image.initrd.is_file():
        raise InvalidEnvironment(f"guest image in {out} is incomplete (run: kvnet guest build --out {out})")
    if stamp.get("init_sha256") != hashlib.sha256(init_script()).hexdigest():
        raise InvalidEnvironment(
            f"guest image in {out} is older than its init script (run: kvnet guest build --out {out})"
        )
    if stamp.get("builder_version") != BUILDER_VERSION:
        raise InvalidEnvironment(
            f"guest image in {out} was made by builder version {stamp.get('builder_version')}, not {BUILDER_VERSION} "
            f"(run: kvnet guest build --out {out})"
        )
    return image


def build(out: Path, *, apt: Apt | None = None, busybox: Path = BUSYBOX, force: bool = False) -> GuestImage:
    """Build the guest into ``out``, or return the cached one when its inputs are unchanged."""
    out = Path(out)
    apt = apt or AptCli()
    init = init_script()
    if not busybox.is_file():
        raise InvalidEnvironment(f"{busybox} not found (apt-get install busybox-static)")
    busybox_bytes = busybox.read_bytes()
    package, version = apt.newest_kernel()
    extras = dhcpcd_files()
    want = _stamp(package, version, init, busybox_bytes, extras)
    if not force:
        try:
            have = json.loads((out / STAMP).read_text())
        except (OSError, ValueError):
            have = None
        if have is not None and {k: have.get(k) for k in want} == want:
            try:
                image = load(out)
            except InvalidEnvironment:
                image = None
            if image is not None:
                log.info("guest in %s is up to date (%s %s)", out, package, version)
                return image
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out, prefix=".build-") as tmp_name:
        tmp = Path(tmp_name)
        log.info("downloading %s %s", package, version)
        deb = apt.download(package, tmp)
        root = tmp / "root"
        _dpkg_extract(deb, root)
        abi = package.removeprefix("linux-image-")
        vmlinuz = root / "boot" / f"vmlinuz-{abi}"
        if not vmlinuz.is_file():
            raise IOFailure(f"{deb.name} has no boot/vmlinuz-{abi}")
        vmlinux = extract_vmlinux(vmlinuz.read_bytes())
        kernel_file = "vmlinux" if vmlinux is not None else "vmlinuz"
        mods = module_order(root / "lib" / "modules" / abi, [*VIRTIO_MODULES, *EXTRA_MODULES])
        initrd = make_initramfs(init, busybox_bytes, [(n, _read_module(p)) for n, p in mods], extras)
        for stale in ("vmlinux", "vmlinuz", "initrd.gz", STAMP):
            (out / stale).unlink(missing_ok=True)
        if vmlinux is not None:
            (out / "vmlinux").write_bytes(vmlinux)
        else:
            shutil.copyfile(vmlinuz, out / "vmlinuz")
        (out / "initrd.gz").write_bytes(initrd)
        stamp = {**want, "kernel_file": kernel_file, "module_order": [n for n, _ in mods]}
        (out / STAMP).write_text(json.dumps(stamp, indent=2) + "\n")
    log.info("guest built in %s: %s, %d modules", out, kernel_file, len(mods))
    return load(out)


def _dpkg_extract(deb: Path, dest: Path) -> None:
    try:
        done = subprocess.run(["dpkg", "-x", str(deb), str(dest)], capture_output=True, text=True, check=False)
    except OSError as err:
        raise InvalidEnvironment(f"cannot run dpkg: {err}") from err
    if done.returncode != 0:
        raise IOFailure(f"dpkg -x {deb.name} failed with status {done.returncode}", done.stderr.strip())


# ------------------------------------------------------------------------------------
# Guest network data: cloud-init v2 → kernel command line
# ------------------------------------------------------------------------------------

_TOKEN_RE = re.compile(r"^[A-Za-z0-9_.:/\-]*$")  # no separators: , + @ or spaces
_FAIL_OVER_MAC = {"none": "none", "active": "active", "follow": "follow", "0": "none", "1": "active", "2": "follow"}
BOND_MODES = ("balance-rr", "active-backup", "balance-xor", "broadcast", "802.3ad", "balance-tlb", "balance-alb")


def _field(value: object, what: str) -> str:
    text = "" if value is None else str(value)
    if not _TOKEN_RE.match(text):
        raise TranslationError(f"guest network data: {what} {text!r} cannot go on a kernel command line")
    return text


def _addresses(entry: Mapping[str, Any], what: str) -> str:
    addrs = entry.get("addresses") or []
    if not isinstance(addrs, list):
        raise TranslationError(f"guest network data: {what}.addresses is not a list")
    for a in addrs:
        try:
            ipaddress.ip_interface(str(a))
        except ValueError as err:
            raise TranslationError(f"guest network data: {what} address {a!r} is not an address/prefix") from err
        if "/" not in str(a):
            raise TranslationError(f"guest network data: {what} address {a!r} has no prefix length")
    return "+".join(_field(a, f"{what} address") for a in addrs)


_DEFAULT_ROUTES = ("default", "0.0.0.0/0", "::/0")


def _routes(entry: Mapping[str, Any], what: str) -> list[Mapping[str, Any]]:
    routes = entry.get("routes") or []
    if not isinstance(routes, list) or not all(isinstance(r, Mapping) for r in routes):
        raise TranslationError(f"guest network data: {what}.routes is not a list of {{to, via}}")
    return routes


def _ip(value: object, what: str) -> str:
    try:
        ipaddress.ip_address(str(value))
    except ValueError as err:
        raise TranslationError(f"guest network data: {what} {value!r} is not an IP address") from err
    return _field(value, what)


def _gateway(entry: Mapping[str, Any], what: str) -> str:
    gw = entry.get("gateway4") or entry.get("gateway6")
    if not gw:
        gw = next((r.get("via") for r in _routes(entry, what) if r.get("to") in _DEFAULT_ROUTES), None)
    return _ip(gw, f"{what} gateway") if gw else ""


def _other_routes(entry: Mapping[str, Any], what: str) -> str:
    """Non-default routes as ``<to>@<via>`` joined by ``+``."""
    out = []
    for r in _routes(entry, what):
        if r.get("to") in _DEFAULT_ROUTES:
            continue
        try:
            ipaddress.ip_network(str(r.get("to")), strict=False)
        except ValueError as err:
            raise TranslationError(
                f"guest network data: {what} route destination {r.get('to')!r} is not a CIDR"
            ) from err
        out.append(f"{_field(r.get('to'), f'{what} route')}@{_ip(r.get('via'), f'{what} route via')}")
    return "+".join(out)


def _mtu(entry: Mapping[str, Any], what: str) -> str:
    mtu = entry.get("mtu")
    if mtu is None:
        return ""
    if isinstance(mtu, bool) or not isinstance(mtu, int) or not 68 <= mtu <= 65535:
        raise TranslationError(f"guest network data: {what}.mtu {mtu!r} is not an MTU")
    return str(mtu)


def network_cmdline(network_data: Mapping[str, Any], peers: Sequence[str] = (), stay: int = 0) -> str:
    """The guest init's command-line form of a cloud-init network-config v2 dict.

    ``kvnet.eth=<id>,<mac>,<set-name>,<mtu>,<addr>+<addr>,<gateway>,<to>@<via>+...`` per
    ethernet, ``kvnet.bond=<name>,<id>+<id>,<mode>,<miimon>,<fail-over-mac>,<mtu>,<addrs>,
    <gateway>,<routes>`` per bond, ``kvnet.ping=<ip>+<ip>`` and ``kvnet.stay=<seconds>``. Ethernets must match
    by MAC (kvnet pins every MAC); DHCP keys are not applied by this guest.
    """
    data = network_data.get("network", network_data) if isinstance(network_data, Mapping) else None
    if not isinstance(data, Mapping) or data.get("version") != 2:
        raise TranslationError("guest network data is not cloud-init network config version 2")
    tokens: list[str] = []
    ethernets = data.get("ethernets") or {}
    if not isinstance(ethernets, Mapping):
        raise TranslationError("guest network data: ethernets is not a mapping")
    for eid, eth in ethernets.items():
        what = f"ethernets.{eid}"
        if not isinstance(eth, Mapping):
            raise TranslationError(f"guest network data: {what} is not a mapping")
        mac = (eth.get("match") or {}).get("macaddress") if isinstance(eth.get("match") or {}, Mapping) else None
        if not is_mac(mac):
            raise TranslationError(f"guest network data: {what} does not match by MAC address (got {mac!r})")
        fields = [
            _field(eid, "ethernet id"),
            str(mac).lower(),
            _field(eth.get("set-name"), f"{what}.set-name"),
            _mtu(eth, what),
            _addresses(eth, what),
            _gateway(eth, what),
            _other_routes(eth, what),
        ]
        tokens.append("kvnet.eth=" + ",".join(fields))
    bonds = data.get("bonds") or {}
    if not isinstance(bonds, Mapping):
        raise TranslationError("guest network data: bonds is not a mapping")
    for name, bond in bonds.items():
        what = f"bonds.{name}"
        if not isinstance(bond, Mapping):
            raise TranslationError(f"guest network data: {what} is not a mapping")
        members = bond.get("interfaces") or []
        if not isinstance(members, list) or not members:
            raise TranslationError(f"guest network data: {what} has no interfaces")
        for m in members:
            if m not in ethernets:
                raise TranslationError(f"guest network data: {what} member {m!r} is not one of the ethernets")
        params = bond.get("parameters") or {}
        mode = str(params.get("mode", "") or "")
        if mode and mode not in BOND_MODES:
            raise TranslationError(f"guest network data: {what} mode {mode!r} is not a bonding mode")
        miimon = params.get("mii-monitor-interval")
        if miimon is not None and (isinstance(miimon, bool) or not str(miimon).isdigit()):
            raise TranslationError(f"guest network data: {what} mii-monitor-interval {miimon!r} is not a number")
        fom = params.get("fail-over-mac-policy")
        if fom is not None and str(fom) not in _FAIL_OVER_MAC:
            raise TranslationError(f"guest network data: {what} fail-over-mac-policy {fom!r} is not none/active/follow")
        fields = [
            _field(name, "bond name"),
            "+".join(_field(m, f"{what} member") for m in members),
            mode,
            "" if miimon is None else str(int(str(miimon))),
            "" if fom is None else _FAIL_OVER_MAC[str(fom)],
            _mtu(bond, what),
            _addresses(bond, what),
            _gateway(bond, what),
            _other_routes(bond, what),
        ]
        tokens.append("kvnet.bond=" + ",".join(fields))
    if peers:
        for p in peers:
            try:
                ipaddress.ip_address(p)
            except ValueError as err:
                raise TranslationError(f"guest peer {p!r} is not an IP address") from err
        tokens.append("kvnet.ping=" + "+".join(peers))
    if stay:
        tokens.append(f"kvnet.stay={int(stay)}")
    return " ".join(tokens)


def parse_network_cmdline(cmdline: str) -> dict[str, Any]:
    """The inverse of :func:`network_cmdline` (what the guest's init understands), as v2."""
    ethernets: dict[str, Any] = {}
    bonds: dict[str, Any] = {}
    for tok in cmdline.split():
        key, _, value = tok.partition("=")
        if key == "kvnet.eth":
            eid, mac, setname, mtu, addrs, gw, routes = (value.split(",") + [""] * 7)[:7]
            eth: dict[str, Any] = {"match": {"macaddress": mac}}
            if setname:
                eth["set-name"] = setname
            ethernets[eid] = _with_l3(eth, mtu, addrs, gw, routes)
        elif key == "kvnet.bond":
            name, members, mode, miimon, fom, mtu, addrs, gw, routes = (value.split(",") + [""] * 9)[:9]
            params: dict[str, Any] = {}
            if mode:
                params["mode"] = mode
            if miimon:
                params["mii-monitor-interval"] = int(miimon)
            if fom:
                params["fail-over-mac-policy"] = fom
            bond: dict[str, Any] = {"interfaces": members.split("+"), "parameters": params}
            bonds[name] = _with_l3(bond, mtu, addrs, gw, routes)
    out: dict[str, Any] = {"version": 2, "ethernets": ethernets}
    if bonds:
        out["bonds"] = bonds
    return out


def _with_l3(entry: dict[str, Any], mtu: str, addrs: str, gw: str, routes: str) -> dict[str, Any]:
    """``entry`` (an ethernet or a bond) with the cmdline's MTU, addresses, gateway and routes, those given."""
    if mtu:
        entry["mtu"] = int(mtu)
    if addrs:
        entry["addresses"] = addrs.split("+")
    if gw:
        entry["gateway6" if ":" in gw else "gateway4"] = gw
    if routes:
        entry["routes"] = _parse_routes(routes)
    return entry


def _parse_routes(text: str) -> list[dict[str, str]]:
    return [{"to": to, "via": via} for to, _, via in (r.partition("@") for r in text.split("+"))]
