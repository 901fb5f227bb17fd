"""A stand-in for the kubelet's PodResources v1 server, on a unix socket.

No kubelet runs on this machine; tests and the demo start this server on a socket of
their own and point ``PodResourcesClient`` at it, so the client code that talks to a
real kubelet is the code under test. It answers ``List``, ``Get`` and
``GetAllocatableResources`` from a table of allocations:

    {("default", "virt-launcher-vm1-abcde"): {"intel.com/sriov": ["0000:81:00.2"]},
     ("default", "virt-launcher-vm1-abcde", "sidecar"): {"intel.com/sriov": ["0000:81:00.3"]}}

A key ``(namespace, pod)`` means the container ``compute`` (KubeVirt's); a key
``(namespace, pod, container)`` names the container. Run it by hand with
``python -m kvnet.lab.podresources_server --socket PATH --allocations FILE.json``
(the file: ``[{"namespace", "pod", "container"?, "resources": {name: [ids]}}]``).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import threading
from collections.abc import Mapping, Sequence
from concurrent import futures
from types import TracebackType

import grpc

from kvnet.meta.proto import podresources_pb2 as pb
from kvnet.meta.proto import podresources_pb2_grpc as pb_grpc

DEFAULT_CONTAINER = "compute"

Allocations = Mapping[tuple[str, ...], Mapping[str, Sequence[str]]]


def _normalize(allocations: Allocations) -> dict[tuple[str, str], dict[str, dict[str, list[str]]]]:
    """``{(ns, pod): {container: {resource: [ids]}}}`` from the public table shape."""
    out: dict[tuple[str, str], dict[str, dict[str, list[str]]]] = {}
    for key, resources in allocations.items():
        if len(key) == 2:
            ns, pod, container = key[0], key[1], DEFAULT_CONTAINER
        elif len(key) == 3:
            ns, pod, container = key
        else:
            raise ValueError(f"allocation key {key!r}: expected (namespace, pod) or (namespace, pod, container)")
        slot = out.setdefault((ns, pod), {}).setdefault(container, {})
        for resource, ids in resources.items():
            slot.setdefault(resource, []).extend(ids)
    return out


class _Servicer(pb_grpc.PodResourcesListerServicer):
    def __init__(self, owner: PodResourcesStandIn) -> None:
        self._owner = owner

    def List(self, request: pb.ListPodResourcesRequest, context: grpc.ServicerContext) -> pb.ListPodResourcesResponse:
        self._owner.calls.append("List")
        table = self._owner.snapshot()
        return pb.ListPodResourcesResponse(pod_resources=[_pod_message(ns, pod, c) for (ns, pod), c in table.items()])

    def Get(self, request: pb.GetPodResourcesRequest, context: grpc.ServicerContext) -> pb.GetPodResourcesResponse:
        self._owner.calls.append("Get")
        table = self._owner.snapshot()
        key = (request.pod_namespace, request.pod_name)
        if key not in table:
            context.abort(grpc.StatusCode.NOT_FOUND, f"pod {request.pod_name} not found in {request.pod_namespace}")
        return pb.GetPodResourcesResponse(pod_resources=_pod_message(*key, table[key]))

    def GetAllocatableResources(
        self, request: pb.AllocatableResourcesRequest, context: grpc.ServicerContext
    ) -> pb.AllocatableResourcesResponse:
        self._owner.calls.append("GetAllocatableResources")
        merged: dict[str, list[str]] = {}
        for containers in self._owner.snapshot().values():
            for resources in containers.values():
                for name, ids in resources.items():
                    merged.setdefault(name, []).extend(ids)
        devices = [pb.ContainerDevices(resource_name=n, device_ids=sorted(ids)) for n, ids in sorted(merged.items())]
        return pb.AllocatableResourcesResponse(devices=devices)


def _pod_message(ns: str, pod: str, containers: Mapping[str, Mapping[str, Sequence[str]]]) -> pb.PodResources:
    return pb.PodResources(
        name=pod,
        namespace=ns,
        containers=[
            pb.ContainerResources(
                name=cname,
                devices=[pb.ContainerDevices(resource_name=r, device_ids=list(ids)) for r, ids in resources.items()],
            )
            for cname, resources in containers.items()
        ],
    )


class PodResourcesStandIn:
    """The kubelet's PodResources service for one table of allocations.

    ``start()`` binds the unix socket (replacing a stale socket file), ``stop()`` stops
    the server and removes the socket; also a context manager. ``calls`` records the
    RPC names served, so tests can assert how often the kubelet was asked.
    """

    def __init__(self, socket_path: str, allocations: Allocations) -> None:
        self.socket_path = socket_path
        self._lock = threading.Lock()
        self._table = _normalize(allocations)
        self._server: grpc.Server | None = None
        self.calls: list[str] = []

    def snapshot(self) -> dict[tuple[str, str], dict[str, dict[str, list[str]]]]:
        with self._lock:
            return {k: {c: {r: list(i) for r, i in v.items()} for c, v in cs.items()} for k, cs in self._table.items()}

    def set_allocations(self, allocations: Allocations) -> None:
        """Replace the table (a pod came or went)."""
        table = _normalize(allocations)
        with self._lock:
            self._table = table

    def start(self) -> PodResourcesStandIn:
        if self._server is not None:
            return self
        if os.path.lexists(self.socket_path):
            os.unlink(self.socket_path)
        os.makedirs(os.path.dirname(os.path.abspath(self.socket_path)), exist_ok=True)
        server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
        pb_grpc.add_PodResourcesListerServicer_to_server(_Servicer(self), server)
        if server.add_insecure_port(f"unix:{self.socket_path}") == 0:
            raise OSError(f"cannot listen on unix socket {self.socket_path}")
        server.start()
        self._server = server
        return self

    def stop(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.stop(grace=None).wait(5)
        if os.path.lexists(self.socket_path):
            os.unlink(self.socket_path)

    def __enter__(self) -> PodResourcesStandIn:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


def load_allocations(path: str) -> dict[tuple[str, ...], dict[str, list[str]]]:
    """Read the JSON allocations file of the command line form."""
    with open(path, encoding="utf-8") as f:
        entries = json.load(f)
    table: dict[tuple[str, ...], dict[str, list[str]]] = {}
    for e in entries:
        key = (e["namespace"], e["pod"], e.get("container", DEFAULT_CONTAINER))
        table[key] = {name: list(ids) for name, ids in e["resources"].items()}
    return table


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Serve a kubelet PodResources v1 stand-in on a unix socket.")
    parser.add_argument("--socket", required=True, help="unix socket path to listen on")
    parser.add_argument("--allocations", required=True, help="JSON file with the allocations table")
    args = parser.parse_args(argv)
    # Block the stop signals before gRPC starts its threads (they inherit the mask), then
    # wait for them here: a handler would only run once the kernel happened to deliver
    # the signal to the main thread.
    stop_signals = {signal.SIGTERM, signal.SIGINT}
    signal.pthread_sigmask(signal.SIG_BLOCK, stop_signals)
    with PodResourcesStandIn(args.socket, load_allocations(args.allocations)):
        print(f"PodResources stand-in listening on {args.socket}", file=sys.stderr, flush=True)
        signal.sigwait(stop_signals)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
