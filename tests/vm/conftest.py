"""Fixtures of the VM lane: the built guest image and the tools a boot needs.

The guest comes from ``build/guest`` (``make guest`` / ``kvnet guest build``), or from
``KVNET_GUEST_DIR``; when neither holds one it is built here once (cached), and the
lane skips with the reason when that is impossible (no apt, no network).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from kvnet.core.errors import KvnetError
from kvnet.lab import guest

REPO = Path(__file__).resolve().parents[2]


def guest_dir() -> Path:
    return Path(os.environ.get("KVNET_GUEST_DIR", REPO / "build" / "guest"))


@pytest.fixture(scope="session")
def guest_image() -> guest.GuestImage:
    """The built test guest (built on first use when missing; skip when it cannot be)."""
    if os.geteuid() != 0:
        pytest.skip("needs root (network namespaces, taps, libvirtd)")
    if not shutil.which("qemu-system-x86_64"):
        pytest.skip("QEMU not installed (apt-get install qemu-system-x86)")
    try:
        return guest.load(guest_dir())
    except KvnetError:
        pass
    try:
        return guest.build(guest_dir())
    except KvnetError as err:
        pytest.skip(f"guest image not available and cannot be built: {err.msg}")
