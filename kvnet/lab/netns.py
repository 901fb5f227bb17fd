"""Network namespaces for the lab, the tests and the benchmarks: the one helper that makes,
enters and removes them (``ip netns``), so every lane names and cleans them the same way."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

IP = shutil.which("ip") or "/usr/sbin/ip"


class NetnsLike(Protocol):
    """A namespace: ``name`` for ``ip netns exec``, ``path`` for CNI_NETNS."""

    @property
    def name(self) -> str: ...

    @property
    def path(self) -> str: ...


@dataclass(frozen=True)
class Netns:
    """A named network namespace: ``name`` for ``ip netns exec``, ``path`` for CNI."""

    name: str
    path: str

    def run(self, *cmd: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return in_ns(self, *cmd, check=check)


def ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    """``ip ARGS`` where we are (text output captured)."""
    return subprocess.run([IP, *args], capture_output=True, text=True, check=check)


QEMU_UID = 107  # virt-launcher's qemu user: the sidecar's and the guest-address server's


def as_qemu(*cmd: str) -> list[str]:
    """``cmd`` as virt-launcher's unprivileged user: uid/gid 107, no supplementary groups,
    every capability dropped, no new privileges (util-linux setpriv)."""
    return [
        "setpriv",
        f"--reuid={QEMU_UID}",
        f"--regid={QEMU_UID}",
        "--clear-groups",
        "--inh-caps=-all",
        "--bounding-set=-all",
        "--no-new-privs",
        *cmd,
    ]


POD_RESOLV_CONF = (
    "search default.svc.cluster.local svc.cluster.local cluster.local\nnameserver 10.96.0.10\noptions ndots:5\n"
)

# The container part of launcher_container: a private /dev/net/tun (0666, as KubeVirt's
# device plugin gives the pod), the pod's /etc/resolv.conf and hostname, the interpreter
# reachable (see _hidden_interpreter), then the command.
_CONTAINER_SH = (
    'mount -t tmpfs none "$1" && mknod -m 666 "$1/tun" c 10 200 && mount --bind "$1/tun" /dev/net/tun'
    ' && mount --bind "$2" /etc/resolv.conf && hostname "$3"'
    ' && if [ -n "$4" ]; then mkdir "$1/keep" && mount --bind "$4/$5" "$1/keep"'
    ' && mount -t tmpfs -o mode=755 none "$4" && mkdir "$4/$5" && mount --bind "$1/keep" "$4/$5"; fi'
    ' && shift 5 && exec "$@"'
)


def _hidden_interpreter() -> tuple[str, str]:
    """(folder, entry): when this Python lives under a folder others cannot search (a
    pyenv in root's home), the folder and the entry of it on the interpreter's path, so a
    container of uid 107 can be given just that entry, as an image has its Python in /usr;
    ("", "") when the interpreter is reachable."""
    real = Path(os.path.realpath(sys.base_prefix))
    for folder in [*reversed(real.parents), real]:
        if folder != real and not folder.stat().st_mode & stat.S_IXOTH:
            return str(folder), real.relative_to(folder).parts[0]
    return "", ""


def launcher_container(ns: str, scratch: str, resolv_conf: str, hostname: str, *cmd: str) -> list[str]:
    """``cmd`` as a virt-launcher pod's container runs it, in the pod netns ``ns``: own mount
    and UTS namespaces (``/dev/net/tun`` 0666 made in the empty folder ``scratch``, the file
    ``resolv_conf`` as ``/etc/resolv.conf``, the pod's ``hostname``, this Python reachable),
    then :func:`as_qemu`. Nothing of it outlives the process: the mounts are in its own
    mount namespace."""
    hidden = _hidden_interpreter()
    return [
        IP, "netns", "exec", ns, "unshare", "-m", "-u", "sh", "-c", _CONTAINER_SH,
        "sh", scratch, resolv_conf, hostname, *hidden, *as_qemu(*cmd),
    ]  # fmt: skip


def in_ns(ns: NetnsLike, *cmd: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    """``cmd`` run inside ``ns`` (text output captured)."""
    return subprocess.run([IP, "netns", "exec", ns.name, *cmd], capture_output=True, text=True, check=check)


def make_netns(prefix: str = "kvt") -> Netns:
    """A fresh namespace ``<prefix>-<8 hex>`` with lo up."""
    name = f"{prefix}-{uuid.uuid4().hex[:8]}"
    ip("netns", "add", name)
    ns = Netns(name, f"/var/run/netns/{name}")
    try:
        in_ns(ns, IP, "link", "set", "lo", "up")
    except subprocess.CalledProcessError:
        delete_netns(ns)
        raise
    return ns


def delete_netns(ns: NetnsLike) -> None:
    """Remove ``ns`` (and with it every link inside); absent is fine."""
    ip("netns", "delete", ns.name, check=False)


@contextmanager
def namespaces(*prefixes: str) -> Iterator[tuple[Netns, ...]]:
    """One fresh namespace per prefix, all removed on the way out (also on error)."""
    made: list[Netns] = []
    try:
        for prefix in prefixes:
            made.append(make_netns(prefix))
        yield tuple(made)
    finally:
        for ns in reversed(made):
            delete_netns(ns)
