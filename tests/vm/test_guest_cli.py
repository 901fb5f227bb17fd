"""``kvnet guest build`` on an up-to-date build folder: reuses it (stamp unchanged) and
says which kernel it holds."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from kvnet.lab import guest

pytestmark = [pytest.mark.root, pytest.mark.vm]


def test_guest_build_reuses_an_up_to_date_image(guest_image: guest.GuestImage) -> None:
    out = guest_image.kernel.parent
    stamp = (out / "stamp.json").read_bytes()
    before = guest_image.initrd.stat().st_mtime_ns
    kvnet = Path(sys.executable).parent / "kvnet"
    done = subprocess.run(
        [str(kvnet), "guest", "build", "--out", str(out)], capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout == ""  # nothing on stdout
    assert f"guest: {guest_image.kernel_package} {guest_image.kernel_version}" in done.stderr
    assert "is up to date" in done.stderr
    assert (out / "stamp.json").read_bytes() == stamp and guest_image.initrd.stat().st_mtime_ns == before
