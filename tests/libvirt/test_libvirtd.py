"""The private libvirtd itself: in a netns, side by side with another, touching no host path."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from kvnet.core.errors import InvalidEnvironment, IOFailure
from kvnet.lab.libvirtd import BIND_MOUNTS, Libvirtd


@pytest.mark.parametrize("under", sorted(BIND_MOUNTS))
def test_workdir_must_not_be_under_a_mounted_path(under: str) -> None:
    with pytest.raises(InvalidEnvironment, match="must not be under"):
        Libvirtd(f"{under}/kvnet-test")


def test_not_running_is_an_error(tmp_path: Path, base_domain: Callable[..., str]) -> None:
    daemon = Libvirtd(str(tmp_path))
    with pytest.raises(IOFailure, match="is not running"):
        daemon.define_validate(base_domain("x"))
    daemon.stop()  # stopping a daemon that never ran is fine


@pytest.mark.root
@pytest.mark.libvirt
def test_in_a_netns_beside_the_session_daemon(
    libvirtd: Libvirtd, netns: Any, tmp_path: Path, base_domain: Callable[..., str]
) -> None:
    host_run_libvirt = Path("/run/libvirt").exists()
    with Libvirtd(str(tmp_path / "d"), netns=netns.name) as other:
        assert other.uri != libvirtd.uri
        pid = int((tmp_path / "d" / "run" / "libvirtd.pid").read_text())
        # it runs in the pod's network namespace, as virt-launcher's libvirtd does
        assert os.stat(f"/proc/{pid}/ns/net").st_ino == os.stat(netns.path).st_ino
        other.define_validate(base_domain("in-netns"))
        # the two daemons do not see each other's domains
        assert "in-netns" in {d.name() for d in other.connection.listAllDomains()}
        assert "in-netns" not in {d.name() for d in libvirtd.connection.listAllDomains()}
        # its domain configs live in its own workdir, not the host's /etc/libvirt
        assert (tmp_path / "d" / "etc" / "qemu" / "in-netns.xml").is_file()
        assert not Path("/etc/libvirt/qemu/in-netns.xml").exists()
        other.undefine("in-netns")
        other.undefine("in-netns")  # a missing domain is fine
    assert not Path(f"/proc/{pid}").exists()
    assert Path("/run/libvirt").exists() == host_run_libvirt


@pytest.mark.root
def test_a_daemon_that_dies_at_start_is_reported_with_its_log(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake = tmp_path / "bin"
    fake.mkdir()
    (fake / "libvirtd").write_text("#!/bin/sh\necho 'error: cannot open config' >&2\nexit 3\n")
    (fake / "libvirtd").chmod(0o755)
    monkeypatch.setenv("PATH", f"{fake}:{os.environ['PATH']}")
    daemon = Libvirtd(str(tmp_path / "d"))
    with pytest.raises(IOFailure) as err:
        daemon.start(timeout=10)
    assert err.value.msg == f"libvirtd in {tmp_path / 'd'} exited with status 3 while starting"
    assert "error: cannot open config" in err.value.details
    daemon.stop()
