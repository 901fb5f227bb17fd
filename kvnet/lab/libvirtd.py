"""A real, private libvirtd for tests and the demo.

libvirtd in system mode writes to global paths (``/run``, ``/etc/libvirt``,
``/var/lib/libvirt``, ``/var/log/libvirt``, ``/var/cache/libvirt``). This one runs in a
private mount namespace (``unshare -m``, private propagation) with folders of its own
workdir bind-mounted over those, its own ``libvirtd.conf`` and ``qemu.conf`` (QEMU as
root — the default qemu user makes libvirt re-probe QEMU on every call — and logs to
files, so no virtlogd), optionally inside a network namespace (``ip netns exec``) as
virt-launcher runs. It is reached as ``qemu:///system?socket=<workdir>/run/libvirt/libvirt-sock``,
touches no host file, and several can run side by side.

The only module (besides tests) that imports libvirt-python; libvirt errors become
:class:`RenderError` (XML rejected) or :class:`IOFailure` (daemon trouble) here.
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import time
from pathlib import Path
from types import TracebackType

import libvirt

from kvnet.core.errors import InvalidEnvironment, IOFailure, RenderError

log = logging.getLogger(__name__)

# host path -> folder of the workdir mounted over it
BIND_MOUNTS = {
    "/run": "run",
    "/etc/libvirt": "etc",
    "/var/lib/libvirt": "lib",
    "/var/log/libvirt": "log",
    "/var/cache/libvirt": "cache",
}

LIBVIRTD_CONF = """\
# private libvirtd for kvnet tests and demo
auth_unix_ro = "none"
auth_unix_rw = "none"
unix_sock_rw_perms = "0770"
listen_tls = 0
listen_tcp = 0
log_outputs = "3:stderr"
"""

QEMU_CONF = """\
# QEMU as root: the default qemu user makes libvirt re-probe QEMU on every call
user = "+0"
group = "+0"
dynamic_ownership = 0
remember_owner = 0
security_driver = "none"
stdio_handler = "file"
namespaces = [ ]
"""

_SCRIPT = """\
set -e
{mounts}
exec libvirtd -f /etc/libvirt/libvirtd.conf -p /run/libvirtd.pid
"""


def _silence_libvirt_stderr() -> None:
    """libvirt-python prints every error to stderr unless a handler is set."""
    libvirt.registerErrorHandler(lambda _ctx, _err: None, None)


class Libvirtd:
    """One private libvirtd; ``with Libvirtd(dir) as d: d.define_validate(xml)``."""

    def __init__(self, workdir: str, *, netns: str | None = None) -> None:
        self.workdir = Path(workdir).resolve()
        self.netns = netns
        self.socket = self.workdir / "run" / "libvirt" / "libvirt-sock"
        self.uri = f"qemu:///system?socket={self.socket}"
        self.log_path = self.workdir / "libvirtd.log"
        self._proc: subprocess.Popen[bytes] | None = None
        self._conn: libvirt.virConnect | None = None
        for host in BIND_MOUNTS:
            if self.workdir == Path(host) or Path(host) in self.workdir.parents:
                raise InvalidEnvironment(
                    f"libvirtd workdir {self.workdir} must not be under {host}, which it mounts over"
                )

    # --- lifecycle -----------------------------------------------------------------

    def _prepare(self) -> list[str]:
        for sub in BIND_MOUNTS.values():
            (self.workdir / sub).mkdir(parents=True, exist_ok=True)
        (self.workdir / "etc" / "libvirtd.conf").write_text(LIBVIRTD_CONF)
        (self.workdir / "etc" / "qemu.conf").write_text(QEMU_CONF)
        mounts = "\n".join(f"mount --bind '{self.workdir / sub}' '{host}'" for host, sub in BIND_MOUNTS.items())
        cmd = ["unshare", "--mount", "--propagation", "private", "sh", "-c", _SCRIPT.format(mounts=mounts)]
        if self.netns:
            cmd = ["ip", "netns", "exec", self.netns, *cmd]
        return cmd

    def start(self, timeout: float = 30.0) -> None:
        """Start the daemon and wait until it answers on its socket."""
        if self._proc is not None:
            return
        if os.geteuid() != 0:
            raise InvalidEnvironment("a private libvirtd needs root (mount namespace, system mode)")
        for tool in ("libvirtd", "unshare"):
            if shutil.which(tool) is None:
                raise InvalidEnvironment(f"{tool} is not installed (apt-get install libvirt-daemon-system util-linux)")
        cmd = self._prepare()
        log.debug("starting libvirtd in %s (netns %s)", self.workdir, self.netns or "host")
        with open(self.log_path, "ab") as out:
            self._proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=out, stderr=out, start_new_session=True)
        _silence_libvirt_stderr()
        deadline = time.monotonic() + timeout
        while True:
            if self._proc.poll() is not None:
                code = self._proc.returncode
                self._proc = None
                raise IOFailure(f"libvirtd in {self.workdir} exited with status {code} while starting", self.log_tail())
            if self.socket.exists():
                try:
                    self._conn = libvirt.open(self.uri)
                    self._conn.getVersion()
                    return
                except libvirt.libvirtError:
                    self._conn = None
            if time.monotonic() > deadline:
                self.stop()
                raise IOFailure(f"libvirtd in {self.workdir} did not answer within {timeout:.0f} s", self.log_tail())
            time.sleep(0.05)

    def stop(self) -> None:
        """Destroy running domains, stop the daemon; the mounts vanish with its namespace."""
        if self._conn is not None:
            try:
                for dom in self._conn.listAllDomains(libvirt.VIR_CONNECT_LIST_DOMAINS_ACTIVE):
                    dom.destroy()
                self._conn.close()
            except libvirt.libvirtError as err:
                log.warning("libvirtd in %s: cleanup failed: %s", self.workdir, err)
            self._conn = None
        proc, self._proc = self._proc, None
        if proc is None:
            return
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)

    def __enter__(self) -> Libvirtd:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    # --- domains -------------------------------------------------------------------

    @property
    def connection(self) -> libvirt.virConnect:
        if self._conn is None:
            raise IOFailure(f"libvirtd in {self.workdir} is not running")
        return self._conn

    def define_validate(self, xml: str) -> str:
        """Define ``xml`` with schema validation (VIR_DOMAIN_DEFINE_VALIDATE); returns the dumpxml."""
        return self.define(xml, validate=True)

    def define(self, xml: str, *, validate: bool) -> str:
        """Define ``xml``, with schema validation or without it (as virt-launcher defines:
        libvirt still parses the XML and refuses what it cannot use); returns the dumpxml."""
        try:
            dom = self.connection.defineXMLFlags(xml, libvirt.VIR_DOMAIN_DEFINE_VALIDATE if validate else 0)
            return str(dom.XMLDesc(0))
        except libvirt.libvirtError as err:
            raise RenderError(f"libvirt rejected the domain: {err.get_error_message()}") from None

    def undefine(self, name: str) -> None:
        """Undefine a domain (destroying it first if it runs); a missing one is fine."""
        try:
            dom = self.connection.lookupByName(name)
        except libvirt.libvirtError:
            return
        try:
            if dom.isActive():
                dom.destroy()
            dom.undefine()
        except libvirt.libvirtError as err:
            raise IOFailure(f"cannot undefine domain {name!r}: {err.get_error_message()}") from None

    def start_domain(self, name: str) -> None:
        """Start a defined domain (the demo's and VM lane's step after define)."""
        try:
            self.connection.lookupByName(name).create()
        except libvirt.libvirtError as err:
            raise IOFailure(f"cannot start domain {name!r}: {err.get_error_message()}") from None

    def destroy_domain(self, name: str) -> None:
        try:
            dom = self.connection.lookupByName(name)
            if dom.isActive():
                dom.destroy()
        except libvirt.libvirtError as err:
            raise IOFailure(f"cannot stop domain {name!r}: {err.get_error_message()}") from None

    def domain_log(self, name: str) -> Path:
        """QEMU's log file for ``name`` (stdio_handler = "file"), as seen from the host."""
        return self.workdir / "log" / "qemu" / f"{name}.log"

    def virsh(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        """Run ``virsh -c <uri> ...`` against this daemon."""
        return subprocess.run(["virsh", "-c", self.uri, *args], check=check, capture_output=True, text=True)
