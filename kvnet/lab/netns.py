"""Network namespaces for the lab, the tests and the benchmarks: the one helper that makes,
enters and removes them (``ip netns``), so every lane names and cleans them the same way."""

from __future__ import annotations

import shutil
import subprocess
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
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
