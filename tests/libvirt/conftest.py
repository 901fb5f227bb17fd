"""libvirt lane: one private libvirtd per session (kvnet.lab.libvirtd), always stopped."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable, Iterator

import pytest

from kvnet.lab.libvirtd import Libvirtd

BaseDomain = Callable[..., str]


def _base_domain(name: str, *, memory_mib: int = 64, vcpus: int = 1) -> str:
    """A minimal KubeVirt-shaped domain: type qemu, q35, ACPI, tab-indented, no XML header."""
    return f"""<domain type="qemu">
\t<name>{name}</name>
\t<memory unit="MiB">{memory_mib}</memory>
\t<vcpu placement="static">{vcpus}</vcpu>
\t<os>
\t\t<type arch="x86_64" machine="q35">hvm</type>
\t</os>
\t<features>
\t\t<acpi></acpi>
\t</features>
\t<devices>
\t\t<emulator>/usr/bin/qemu-system-x86_64</emulator>
\t</devices>
</domain>"""


@pytest.fixture(scope="session")
def base_domain() -> BaseDomain:
    """Builds the lane's base domain: ``base_domain(name, memory_mib=64, vcpus=1)``."""
    return _base_domain


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
