"""The PodResources client against the stand-in kubelet server on a real unix socket."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from kvnet.core.errors import ApiFailure
from kvnet.lab.podresources_server import PodResourcesStandIn
from kvnet.meta.podresources import PodResourcesClient, resource_map
from kvnet.meta.proto import podresources_pb2 as pb
from kvnet.meta.proto import podresources_pb2_grpc as pb_grpc

SRIOV = "intel.com/sriov_vfio"
MLX = "nvidia.com/mlx_netdevice"
POD = ("vms", "virt-launcher-vm1-x7k2p")

ALLOCATIONS = {
    # the compute container got two VFs of one pool and one of another, unsorted
    POD: {SRIOV: ["0000:81:00.5", "0000:81:00.2"], MLX: ["0000:3b:00.4"]},
    # a second container of the same pod got one more of the first pool
    (*POD, "hook-sidecar-0"): {SRIOV: ["0000:81:00.3"]},
    # another pod on the node, same resource: never mixed in
    ("vms", "virt-launcher-vm2-aaaaa"): {SRIOV: ["0000:81:00.4"]},
    # same pod name in another namespace
    ("other", "virt-launcher-vm1-x7k2p"): {SRIOV: ["0000:81:00.6"]},
}


@pytest.fixture
def sock(tmp_path: Path) -> str:
    return str(tmp_path / "kubelet.sock")


@pytest.fixture
def kubelet(sock: str) -> Iterator[PodResourcesStandIn]:
    with PodResourcesStandIn(sock, ALLOCATIONS) as server:
        yield server


def test_device_ids_sorted_across_containers(kubelet: PodResourcesStandIn, sock: str) -> None:
    client = PodResourcesClient(sock, timeout=5)
    assert client.device_ids(*POD, SRIOV) == ["0000:81:00.2", "0000:81:00.3", "0000:81:00.5"]
    assert client.device_ids(*POD, MLX) == ["0000:3b:00.4"]
    assert client.device_ids("other", POD[1], SRIOV) == ["0000:81:00.6"]
    assert client.device_ids(*POD, "example.com/none") == []
    assert client.device_ids("vms", "no-such-pod", SRIOV) == []
    assert kubelet.calls == ["List"] * 5


def test_pod_resources_map(kubelet: PodResourcesStandIn, sock: str) -> None:
    assert PodResourcesClient(sock).pod_resources(*POD) == {
        SRIOV: ["0000:81:00.2", "0000:81:00.3", "0000:81:00.5"],
        MLX: ["0000:3b:00.4"],
    }


def test_stand_in_wire_answers(kubelet: PodResourcesStandIn, sock: str) -> None:
    """The stand-in speaks the kubelet's messages: List, Get and GetAllocatableResources."""
    with grpc.insecure_channel(f"unix:{sock}") as channel:
        stub = pb_grpc.PodResourcesListerStub(channel)
        listed = stub.List(pb.ListPodResourcesRequest(), timeout=5)
        assert {(p.namespace, p.name) for p in listed.pod_resources} == {
            POD,
            ("vms", "virt-launcher-vm2-aaaaa"),
            ("other", "virt-launcher-vm1-x7k2p"),
        }
        got = stub.Get(pb.GetPodResourcesRequest(pod_name=POD[1], pod_namespace=POD[0]), timeout=5)
        assert sorted(c.name for c in got.pod_resources.containers) == ["compute", "hook-sidecar-0"]
        with pytest.raises(grpc.RpcError) as missing:
            stub.Get(pb.GetPodResourcesRequest(pod_name="nope", pod_namespace="vms"), timeout=5)
        assert missing.value.code() == grpc.StatusCode.NOT_FOUND  # type: ignore[attr-defined]
        alloc = stub.GetAllocatableResources(pb.AllocatableResourcesRequest(), timeout=5)
        assert {d.resource_name: list(d.device_ids) for d in alloc.devices} == {
            MLX: ["0000:3b:00.4"],
            SRIOV: ["0000:81:00.2", "0000:81:00.3", "0000:81:00.4", "0000:81:00.5", "0000:81:00.6"],
        }


def test_allocations_can_change(kubelet: PodResourcesStandIn, sock: str) -> None:
    client = PodResourcesClient(sock)
    kubelet.set_allocations({POD: {SRIOV: ["0000:81:01.0"]}})
    assert client.device_ids(*POD, SRIOV) == ["0000:81:01.0"]


def test_resource_map_from_a_message() -> None:
    """The decoding of a kubelet answer, without a server (fields as the kubelet fills them)."""
    answer = pb.ListPodResourcesResponse(
        pod_resources=[
            pb.PodResources(
                name="p",
                namespace="n",
                containers=[
                    pb.ContainerResources(
                        name="a",
                        devices=[pb.ContainerDevices(resource_name="r", device_ids=["2", "1"])],
                        cpu_ids=[3, 4],
                    ),
                    pb.ContainerResources(
                        name="b",
                        devices=[
                            pb.ContainerDevices(
                                resource_name="r", device_ids=["0"], topology=pb.TopologyInfo(nodes=[pb.NUMANode(ID=1)])
                            )
                        ],
                    ),
                ],
            ),
            pb.PodResources(
                name="p",
                namespace="m",
                containers=[pb.ContainerResources(devices=[pb.ContainerDevices(resource_name="r", device_ids=["9"])])],
            ),
        ]
    )
    decoded = pb.ListPodResourcesResponse.FromString(answer.SerializeToString())
    assert resource_map(decoded, "n", "p") == {"r": ["0", "1", "2"]}
    assert resource_map(decoded, "m", "p") == {"r": ["9"]}
    assert resource_map(decoded, "n", "q") == {}


# --- failures -------------------------------------------------------------------------------


def test_socket_missing(sock: str) -> None:
    with pytest.raises(
        ApiFailure,
        match=(r"pod vms/virt-launcher-vm1-x7k2p: kubelet PodResources socket .*kubelet\.sock does not exist"),
    ) as info:
        PodResourcesClient(sock).device_ids(*POD, SRIOV)
    assert info.value.cni_code == 103


def test_path_is_not_a_socket(tmp_path: Path) -> None:
    (tmp_path / "kubelet.sock").write_text("")
    with pytest.raises(ApiFailure, match=r"kubelet\.sock is not a unix socket"):
        PodResourcesClient(str(tmp_path / "kubelet.sock")).device_ids(*POD, SRIOV)


def test_nobody_listening(sock: str) -> None:
    """A stale socket file (the kubelet restarted): UNAVAILABLE, as an ApiFailure."""
    s = socket.socket(socket.AF_UNIX)
    try:
        s.bind(sock)  # bound, never listening: connect is refused
        with pytest.raises(ApiFailure, match=r"kubelet PodResources List on .*kubelet\.sock failed: UNAVAILABLE"):
            PodResourcesClient(sock, timeout=5).device_ids(*POD, SRIOV)
    finally:
        s.close()


def test_kubelet_never_answers(sock: str) -> None:
    """Connected but silent: the call gives up after the client's timeout."""
    s = socket.socket(socket.AF_UNIX)
    try:
        s.bind(sock)
        s.listen(1)
        start = time.monotonic()
        with pytest.raises(ApiFailure, match=r"failed: DEADLINE_EXCEEDED"):
            PodResourcesClient(sock, timeout=0.5).device_ids(*POD, SRIOV)
        assert time.monotonic() - start < 5
    finally:
        s.close()


class BrokenLister(pb_grpc.PodResourcesListerServicer):
    def List(self, request: pb.ListPodResourcesRequest, context: grpc.ServicerContext) -> pb.ListPodResourcesResponse:
        context.abort(grpc.StatusCode.PERMISSION_DENIED, "pod resources API is disabled")


def test_grpc_error_is_translated(sock: str) -> None:
    from concurrent import futures

    server = grpc.server(futures.ThreadPoolExecutor(max_workers=1))
    pb_grpc.add_PodResourcesListerServicer_to_server(BrokenLister(), server)
    server.add_insecure_port(f"unix:{sock}")
    server.start()
    try:
        with pytest.raises(ApiFailure, match=r"PERMISSION_DENIED: pod resources API is disabled"):
            PodResourcesClient(sock).device_ids(*POD, SRIOV)
    finally:
        server.stop(None).wait(5)


def test_stand_in_stop_removes_socket_and_restarts(sock: str) -> None:
    Path(sock).write_text("stale")
    server = PodResourcesStandIn(sock, ALLOCATIONS).start()
    try:
        assert PodResourcesClient(sock).device_ids(*POD, MLX) == ["0000:3b:00.4"]
    finally:
        server.stop()
    assert not Path(sock).exists()
    server.stop()  # twice is fine


def test_stand_in_rejects_bad_keys(sock: str) -> None:
    with pytest.raises(ValueError, match="expected \\(namespace, pod\\) or \\(namespace, pod, container\\)"):
        PodResourcesStandIn(sock, {("only-one",): {}})


def test_stand_in_command_line(tmp_path: Path, sock: str) -> None:
    table = tmp_path / "alloc.json"
    table.write_text(json.dumps([{"namespace": "vms", "pod": "p", "resources": {SRIOV: ["0000:81:00.7"]}}]))
    proc = subprocess.Popen(
        [sys.executable, "-m", "kvnet.lab.podresources_server", "--socket", sock, "--allocations", str(table)],
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stderr is not None
    try:
        assert "listening on" in proc.stderr.readline()
        assert PodResourcesClient(sock, timeout=5).device_ids("vms", "p", SRIOV) == ["0000:81:00.7"]
    finally:
        proc.terminate()
        try:
            code = proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            code = proc.wait()
        proc.stderr.close()
    assert code == 0, "the stand-in did not stop cleanly on SIGTERM"
    assert not Path(sock).exists()


def test_import_is_light() -> None:
    """The standalone CNI binary imports this module; grpc comes only with the first call."""
    code = (
        "import sys, kvnet.meta.podresources; print(sorted(m for m in ('grpc', 'google.protobuf') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True).stdout
    assert out.strip() == "[]"


def test_flow_resource_name_to_device_info(tmp_path: Path) -> None:
    """resourceName → sorted device IDs, one per NAD in order (as kvnet.meta.commands hands them out)
    → dp file copied to the attachment's cni file → a VFIO VF."""
    from kvnet.binding.sriov import discover_vf, list_vfs
    from kvnet.lab.fake_sysfs import FakePf, FakeVf, make_fake_sysfs
    from kvnet.meta.deviceinfo import cni_path, copy_dp_to_cni, remove_cni, save_dp, vf_device_info

    sysfs, devinfo = str(tmp_path / "root"), str(tmp_path / "devinfo")
    vfs = ["0000:81:00.2", "0000:81:00.3"]
    make_fake_sysfs(sysfs, {"0000:81:00.0": FakePf(vfs=[FakeVf(a, iommu_group=i) for i, a in enumerate(vfs)])})
    for vf in list_vfs("0000:81:00.0", root=sysfs):  # what the SR-IOV device plugin writes
        save_dp(SRIOV, str(vf.address), vf_device_info(vf), devinfo)
    with PodResourcesStandIn(str(tmp_path / "kubelet.sock"), {POD: {SRIOV: list(reversed(vfs))}}):
        ids = PodResourcesClient(str(tmp_path / "kubelet.sock")).device_ids(*POD, SRIOV)
        got = []
        for nad, ifname in (("vms/sriov-a", "pod5c8c6bd1f7e"), ("vms/sriov-b", "pod0a0e1e4d5b2")):
            device_id = ids.pop(0)
            info = copy_dp_to_cni(SRIOV, device_id, nad, "cid1", ifname, devinfo)
            assert info is not None and info.pci_address == device_id
            assert discover_vf(info.pci_address, root=sysfs).is_vfio
            got.append((nad, device_id, Path(cni_path(nad, "cid1", ifname, devinfo)).name))
    assert got == [
        ("vms/sriov-a", "0000:81:00.2", "vms-sriov-a-cid1_pod5c8c6bd1f7e"),
        ("vms/sriov-b", "0000:81:00.3", "vms-sriov-b-cid1_pod0a0e1e4d5b2"),
    ]
    for nad, _, name in got:
        remove_cni(nad, "cid1", name.rsplit("_", 1)[1], devinfo)
    assert list(Path(devinfo, "cni").iterdir()) == []
