"""libvirt lane: one private libvirtd per session (kvnet.lab.libvirtd), always stopped."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator

import pytest

from kvnet.lab.libvirtd import Libvirtd


@pytest.fixture(scope="session")
def libvirtd() -> Iterator[Libvirtd]:
    if os.geteuid() != 0:
        pytest.skip("needs root to run a private libvirtd (mount namespace, system mode)")
    for tool in ("libvirtd", "unshare", "qemu-system-x86_64"):
        if shutil.which(tool) is None:
            pytest.skip(f"{tool} is not installed (apt-get install libvirt-daemon-system qemu-system-x86)")
    workdir = tempfile.mkdtemp(prefix="kvnet-libvirtd-")
    daemon = Libvirtd(workdir)
    try:
        daemon.start(timeout=60)
        yield daemon
    finally:
        daemon.stop()
        shutil.rmtree(workdir, ignore_errors=True)
