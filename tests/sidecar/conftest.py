"""Fixtures for the sidecar lanes: fake pods, short hooks directories, sidecar processes."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
from pod_inputs import (
    NETWORK_INFO_EMPTY,
    PodFiles,
    SidecarProcess,
    add_bridge_binding,
    network_info,
    sidecar_cmd,
    write_link,
)


@pytest.fixture
def pod(tmp_path: Path) -> PodFiles:
    """An empty pod: a loopback-only /sys/class/net and an empty network-info file."""
    files = PodFiles(tmp_path / "pod")
    files.sys_class_net.mkdir(parents=True)
    write_link(files.sys_class_net, "eth0", mac="0a:58:0a:f4:00:0c", mtu=1480)
    files.network_info.parent.mkdir(parents=True)
    files.network_info.write_text(NETWORK_INFO_EMPTY)
    return files


@pytest.fixture
def bridge_pod(pod: PodFiles) -> PodFiles:
    """A pod with network ``red`` plumbed by kvnet-binding and its network-info written."""
    add_bridge_binding(pod.sys_class_net, "red", original_mac="02:00:00:aa:bb:01", mtu=1400)
    pod.network_info.write_text(network_info({"red": {"mac": "02:00:00:aa:bb:01"}}))
    return pod


@pytest.fixture
def hooks_dir() -> Iterator[Path]:
    """A short path (unix socket paths are limited to 107 bytes), always removed."""
    d = Path(tempfile.mkdtemp(prefix="kvh-"))
    try:
        yield d
    finally:
        shutil.rmtree(d, ignore_errors=True)


@pytest.fixture
def start_sidecar(hooks_dir: Path) -> Iterator[Any]:
    """Start ``kvnet-sidecar`` processes; each is killed at the end if still running."""
    procs: list[subprocess.Popen[bytes]] = []

    def start(
        *args: str, name: str = "kvnet", env: Mapping[str, str] | None = None, wait: bool = True
    ) -> SidecarProcess:
        sock = hooks_dir / f"{name}.sock"
        proc = subprocess.Popen(
            [*sidecar_cmd(), "--hooks-dir", str(hooks_dir), "--name", name, *args],
            env=dict(env or os.environ),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        procs.append(proc)
        if wait:
            deadline = time.monotonic() + 20
            while not sock.exists():
                if proc.poll() is not None:
                    raise AssertionError(
                        f"kvnet-sidecar exited {proc.returncode}: {proc.stderr.read().decode() if proc.stderr else ''}"
                    )
                if time.monotonic() > deadline:
                    raise AssertionError("kvnet-sidecar socket did not appear in 20 s")
                time.sleep(0.02)
        return SidecarProcess(proc, sock)

    try:
        yield start
    finally:
        for p in procs:
            if p.poll() is None:
                p.send_signal(signal.SIGKILL)
            p.wait(timeout=10)
            for stream in (p.stdout, p.stderr):
                if stream:
                    stream.close()


@pytest.fixture
def serve(hooks_dir: Path) -> Iterator[Any]:
    """Serve hooks in-process on the hooks directory: ``serve(hooks)`` (or in its sub-folder:
    ``serve(hooks, "hook-sidecar-0")``, where virt-launcher looks); all stopped at the end."""
    from kvnet.sidecar.server import SidecarServer, socket_path

    servers: list[Any] = []

    def start(hooks: Any, folder: str | None = None) -> Any:
        """``folder``: a sub-folder of the hooks directory (KubeVirt's layout, one per sidecar)."""
        where = hooks_dir / folder if folder else hooks_dir
        where.mkdir(exist_ok=True)
        server = SidecarServer(hooks, socket_path(where, hooks.name))
        server.start()
        servers.append(server)
        return server

    try:
        yield start
    finally:
        for s in servers:
            s.stop(0)


@pytest.fixture
def serve_kvnet(serve: Any) -> Any:
    """Serve kvnet's real hooks in-process for a pod: ``serve_kvnet(pod, name="kvnet")``."""
    from pod_inputs import kvnet_hooks

    def serve_pod(pod: PodFiles, name: str = "kvnet", timeout: float = 2.0, folder: str | None = None) -> Any:
        return serve(kvnet_hooks(pod, name, timeout=timeout), folder)

    return serve_pod
