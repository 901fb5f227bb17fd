"""``kvnet-sidecar`` and the shim commands as processes, as the pod runs them (no root).

The socket appears only once Info answers; Shutdown and SIGTERM end the process with
status 0; the shim commands print exactly what the gRPC path returns.

KubeVirt's part: the domain is the converter's (``KUBEVIRT_DOMAIN``); KubeVirt's 1.6+ layout
and kvnet after an echo sidecar are driven by virt-launcher's own hook manager
(``kubevirt-peer hooks``, a mount namespace of its own). The project's ``LauncherClient``
stays where a test needs what KubeVirt's client cannot do: watching the socket appear, a
Shutdown without the rest of a start, the shared flat folder of KubeVirt before 1.6, the
raw gRPC status of a failing call, a call cut short by SIGTERM, and byte comparisons with
the shim on one single call.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import grpc
import pytest
from kubevirt_code import kubevirt_hooks, with_cloud_init
from pod_inputs import KUBEVIRT_DOMAIN, PodFiles, add_bridge_binding, make_vmi, network_info, sidecar_cmd

from kvnet.core.model import GuestIpConfig
from kvnet.lab.launcher import LauncherClient, info

CLOUD_INIT = {
    "DataSource": "noCloud",
    "NoCloudMetaData": {"instance-id": "5d307ca9-b3ef-428c-8861-06e72d69f223"},
    "ConfigDriveMetaData": None,
    "UserData": "#cloud-config\n",
    "NetworkData": "",
    "DevicesData": None,
    "VolumeName": "cloudinitdisk",
}


def aliases(domain_xml: str) -> set[str]:
    """The aliases of the domain's interfaces."""
    return {a.get("name", "") for i in ET.fromstring(domain_xml).iter("interface") for a in i.iter("alias")}


def test_socket_appears_only_once_serving(start_sidecar: Any, hooks_dir: Path, bridge_pod: PodFiles) -> None:
    sc = start_sidecar(env=bridge_pod.env(), wait=False)
    seen: set[str] = set()
    deadline = time.monotonic() + 20
    while True:
        entries = os.listdir(hooks_dir)
        seen.update(entries)
        if "kvnet.sock" in entries:
            # the very first time the name exists, Info must answer within virt-launcher's 1 s deadline
            assert info(str(sc.socket), timeout=1.0).name == "kvnet"
            break
        assert sc.proc.poll() is None, sc.stderr()
        assert time.monotonic() < deadline, "socket never appeared"
        time.sleep(0.001)
    assert all(e == "kvnet.sock" or e.startswith(".k") for e in seen), seen
    deadline = time.monotonic() + 5  # the staging folder goes right after the rename
    while os.listdir(hooks_dir) != ["kvnet.sock"] and time.monotonic() < deadline:
        time.sleep(0.01)
    assert os.listdir(hooks_dir) == ["kvnet.sock"]


def test_shutdown_exits_zero(start_sidecar: Any, hooks_dir: Path, bridge_pod: PodFiles) -> None:
    sc = start_sidecar(env=bridge_pod.env())
    client = LauncherClient(hooks_dir)
    client.collect(1)
    client.shutdown()
    assert sc.proc.wait(timeout=10) == 0
    assert not sc.socket.exists()
    assert "Shutdown called" in sc.stderr()


def test_sigterm_exits_zero(start_sidecar: Any, hooks_dir: Path, bridge_pod: PodFiles) -> None:
    sc = start_sidecar(env=bridge_pod.env())
    sc.proc.send_signal(signal.SIGTERM)
    assert sc.proc.wait(timeout=10) == 0
    assert not sc.socket.exists()


def test_name_must_be_unique(start_sidecar: Any, hooks_dir: Path, bridge_pod: PodFiles) -> None:
    start_sidecar(env=bridge_pod.env())
    second = start_sidecar(env=bridge_pod.env(), wait=False)
    assert second.proc.wait(timeout=20) == 1
    assert f"kvnet-sidecar: socket {hooks_dir / 'kvnet.sock'} is already served by another sidecar" in second.stderr()


def test_plugin_name_from_the_environment(start_sidecar: Any, hooks_dir: Path, bridge_pod: PodFiles) -> None:
    env = bridge_pod.env(name="kvnet-blue")
    proc = subprocess.Popen([*sidecar_cmd(), "--hooks-dir", str(hooks_dir)], env=env, stderr=subprocess.PIPE)
    try:
        client = LauncherClient(hooks_dir)
        [sc] = client.collect(1, timeout=20)
        assert (Path(sc.socket_path).name, sc.name) == ("kvnet-blue.sock", "kvnet-blue")
        client.shutdown()
        assert proc.wait(timeout=10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        assert proc.stderr is not None
        proc.stderr.close()


def test_kvnet_after_an_echo_sidecar(hooks_dir: Path, bridge_pod: PodFiles) -> None:
    """KubeVirt's hook manager over an echo sidecar and kvnet, each in its own sub-folder."""
    procs = start_in_subfolders(
        hooks_dir, bridge_pod, [("hook-sidecar-0", ["--echo", "--name", "a-echo"]), ("hook-sidecar-1", [])]
    )
    try:
        out = kubevirt_hooks(hooks_dir, with_cloud_init(make_vmi()), sidecars=2)
        assert [s["name"] for s in out["sidecars"]] == ["a-echo", "kvnet"]
        # both sidecars get every OnDefineDomain call, in order; kvnet's NIC is in the final domain
        assert [c["socket"] for c in out["callbacks"]["OnDefineDomain"]] == [
            "hook-sidecar-0/a-echo.sock",
            "hook-sidecar-1/kvnet.sock",
        ]
        assert aliases(out["domainXML"]) == {"ua-default", "ua-red"}
        assert out["shutdown"] == "ok"
        assert [p.wait(timeout=10) for p in procs] == [0, 0]
    finally:
        stop(procs)


# --------------------------------------------------------------------------------------
# the shim form: same bytes as the gRPC path


def shim(cmd: str, *args: str, env: dict[str, str]) -> subprocess.CompletedProcess[bytes]:
    exe = Path(sys.executable).parent / cmd
    return subprocess.run([str(exe), *args], env=env, capture_output=True, timeout=60)


@pytest.fixture
def ip_pod(bridge_pod: PodFiles) -> PodFiles:
    add_bridge_binding(
        bridge_pod.sys_class_net,
        "blue",
        original_mac="02:00:00:aa:bb:02",
        ip=GuestIpConfig(("10.2.0.5/24",), ("10.2.0.1",)),
    )
    bridge_pod.network_info.write_text(network_info({"red": {}, "blue": {}}))
    return bridge_pod


def test_shim_on_define_domain_matches_grpc(start_sidecar: Any, hooks_dir: Path, ip_pod: PodFiles) -> None:
    vmi = make_vmi({"red": "kvnet", "blue": "kvnet"})
    start_sidecar(env=ip_pod.env())
    client = LauncherClient(hooks_dir)
    client.collect(1)
    via_grpc = client.on_define_domain(KUBEVIRT_DOMAIN, vmi)
    res = shim("onDefineDomain", "--vmi", json.dumps(vmi), "--domain", KUBEVIRT_DOMAIN, env=ip_pod.env())
    assert res.returncode == 0, res.stderr.decode()
    assert res.stdout.decode() == via_grpc
    assert aliases(via_grpc) == {"ua-default", "ua-red", "ua-blue"}


def test_shim_pre_cloud_init_iso_matches_grpc(start_sidecar: Any, hooks_dir: Path, ip_pod: PodFiles) -> None:
    vmi = make_vmi({"red": "kvnet", "blue": "kvnet"})
    start_sidecar(env=ip_pod.env())
    client = LauncherClient(hooks_dir)
    client.collect(1)
    via_grpc = client.pre_cloud_init_iso(vmi, CLOUD_INIT)
    res = shim("preCloudInitIso", "--vmi", json.dumps(vmi), "--cloud-init", json.dumps(CLOUD_INIT), env=ip_pod.env())
    assert res.returncode == 0, res.stderr.decode()
    assert json.loads(res.stdout) == via_grpc
    assert "10.2.0.5/24" in via_grpc["NetworkData"]


def test_shim_errors_go_to_stderr(ip_pod: PodFiles) -> None:
    res = shim("onDefineDomain", "--vmi", "{oops", "--domain", KUBEVIRT_DOMAIN, env=ip_pod.env())
    assert res.returncode == 1
    assert res.stdout == b""
    assert (
        res.stderr.decode()
        .strip()
        .endswith(
            "kvnet OnDefineDomain: VMI JSON is malformed: Expecting property name enclosed in double quotes: line 1 column 2 (char 1)"
        )
    )
    res = shim("preCloudInitIso", "--vmi", json.dumps(make_vmi()), "--cloud-init", "[]", env=ip_pod.env())
    assert res.returncode == 1
    assert res.stdout == b""
    assert (
        "kvnet PreCloudInitIso: interfaces red: cloudInitData JSON is a list, expected an object" in res.stderr.decode()
    )


def test_grpc_status_seen_by_the_launcher(start_sidecar: Any, hooks_dir: Path, pod: PodFiles) -> None:
    """A pod the binding CNI never plumbed: the launcher gets an error naming the interface."""
    pod.network_info.write_text(network_info({"red": {}}))
    start_sidecar(env=pod.env())
    client = LauncherClient(hooks_dir)
    client.collect(1)
    with pytest.raises(grpc.RpcError) as exc:
        client.on_define_domain(KUBEVIRT_DOMAIN, make_vmi())
    assert exc.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert exc.value.details().startswith("kvnet OnDefineDomain: ") and "red" in exc.value.details()


def test_kubevirt_1_6_layout(hooks_dir: Path, bridge_pod: PodFiles) -> None:
    """Each sidecar mounts its own sub-folder as its hooks folder; KubeVirt's hook manager reads
    them all (``kubevirt-peer hooks``).

    The sidecar's staging folder is a folder inside its sub-folder, which virt-launcher skips,
    so only the published socket is ever dialled.
    """
    procs = start_in_subfolders(
        hooks_dir, bridge_pod, [("hook-sidecar-0", ["--echo", "--name", "a-echo"]), ("hook-sidecar-1", [])]
    )
    try:
        out = kubevirt_hooks(hooks_dir, with_cloud_init(make_vmi()), sidecars=2)
        assert [(s["socket"], s["name"], s["version"]) for s in out["sidecars"]] == [
            ("hook-sidecar-0/a-echo.sock", "a-echo", "v1alpha3"),
            ("hook-sidecar-1/kvnet.sock", "kvnet", "v1alpha3"),
        ]
        steps = [c["step"] for c in out["onDefineDomain"]]
        assert steps == ["placeholders", "define", "root-ports"]  # two interfaces: three calls
        for call in out["onDefineDomain"]:
            assert "ua-red" in aliases(call["output"])
        assert aliases(out["domainXML"]) == {"ua-default", "ua-red"}
        assert out["shutdown"] == "ok"
        assert [p.wait(timeout=10) for p in procs] == [0, 0]
    finally:
        stop(procs)


def start_in_subfolders(hooks_dir: Path, pod: PodFiles, sidecars: list[tuple[str, list[str]]]) -> list[Any]:
    procs = []
    for name, extra in sidecars:
        sub = hooks_dir / name
        sub.mkdir()
        procs.append(
            subprocess.Popen(
                [*sidecar_cmd(), "--hooks-dir", str(sub), *extra], env=pod.env(), stderr=subprocess.DEVNULL
            )
        )
    # every socket is there before the hook manager looks: it takes them in the order it
    # finds them ready (folders by name when all are), so a slow start would reorder them
    deadline = time.monotonic() + 30
    while not all(any((hooks_dir / name).glob("*.sock")) for name, _ in sidecars):
        assert time.monotonic() < deadline, "the sidecars' sockets did not appear within 30 s"
        time.sleep(0.05)
    return procs


def stop(procs: list[Any]) -> None:
    for p in procs:
        if p.poll() is None:
            p.kill()
            p.wait()


def test_sigterm_during_a_network_info_wait(start_sidecar: Any, hooks_dir: Path, bridge_pod: PodFiles) -> None:
    """A call waiting for network-info does not hold the exit back: the call fails, the process exits 0."""
    import threading

    bridge_pod.network_info.write_text("")
    sc = start_sidecar(env=bridge_pod.env(timeout=60))
    client = LauncherClient(hooks_dir)
    client.collect(1)
    errors: list[grpc.RpcError] = []

    def call() -> None:
        try:
            client.on_define_domain(KUBEVIRT_DOMAIN, make_vmi())
        except grpc.RpcError as err:
            errors.append(err)

    t = threading.Thread(target=call)
    t.start()
    time.sleep(0.5)
    started = time.monotonic()
    sc.proc.send_signal(signal.SIGTERM)
    assert sc.proc.wait(timeout=20) == 0
    assert time.monotonic() - started < 10  # not the 60 s network-info bound
    t.join(timeout=10)
    assert len(errors) == 1 and errors[0].code() in (grpc.StatusCode.FAILED_PRECONDITION, grpc.StatusCode.UNAVAILABLE)
