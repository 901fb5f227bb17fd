"""Client of the kubelet PodResources v1 API: which devices a pod was given.

A NAD with the ``k8s.v1.cni.cncf.io/resourceName`` annotation names a device-plugin
resource (e.g. ``intel.com/sriov_netdevice``). The kubelet allocated devices of that
resource to the pod's containers before the sandbox was networked; the meta-plugin asks
the kubelet which ones (``List`` on ``/var/lib/kubelet/pod-resources/kubelet.sock``)
through this client and hands one device ID to each NAD that names the resource, in
order, as Multus does (``kvnet.meta.commands``).

gRPC lives here (and in the stand-in server); every gRPC or socket failure becomes an
``ApiFailure`` naming the socket and the pod. grpc and the generated modules are imported
on the first call, not with this module: importing them costs about a third of a second,
which the standalone CNI binary should pay only for pods that ask for devices.
"""

from __future__ import annotations

import os
import stat
from typing import TYPE_CHECKING

from kvnet.core.errors import ApiFailure

if TYPE_CHECKING:
    from kvnet.meta.proto import podresources_pb2

DEFAULT_SOCKET = "/var/lib/kubelet/pod-resources/kubelet.sock"
MAX_MESSAGE_BYTES = 16 * 1024 * 1024  # what Multus allows for a List answer


def resource_map(response: podresources_pb2.ListPodResourcesResponse, namespace: str, pod: str) -> dict[str, list[str]]:
    """``{resource name: sorted device IDs}`` over all containers of one pod in a List answer."""
    found: dict[str, list[str]] = {}
    for entry in response.pod_resources:
        if entry.name != pod or entry.namespace != namespace:
            continue
        for container in entry.containers:
            for devices in container.devices:
                found.setdefault(devices.resource_name, []).extend(devices.device_ids)
    return {name: sorted(ids) for name, ids in found.items()}


class PodResourcesClient:
    """Reads device allocations from the kubelet; one short-lived channel per call."""

    def __init__(self, socket_path: str = DEFAULT_SOCKET, timeout: float = 10.0) -> None:
        self.socket_path = socket_path
        self.timeout = timeout

    def _check_socket(self, subject: str) -> None:
        try:
            mode = os.stat(self.socket_path).st_mode
        except FileNotFoundError as exc:
            raise ApiFailure(
                f"{subject}: kubelet PodResources socket {self.socket_path} does not exist "
                "(is the kubelet's pod-resources folder mounted?)"
            ) from exc
        except OSError as exc:
            raise ApiFailure(f"{subject}: cannot stat kubelet PodResources socket {self.socket_path}: {exc}") from exc
        if not stat.S_ISSOCK(mode):
            raise ApiFailure(f"{subject}: {self.socket_path} is not a unix socket")

    def list_pods(self, subject: str = "PodResources List") -> podresources_pb2.ListPodResourcesResponse:
        """The raw ``List`` answer (all pods of the node)."""
        import grpc

        from kvnet.meta.proto import podresources_pb2, podresources_pb2_grpc

        self._check_socket(subject)
        options = [("grpc.max_receive_message_length", MAX_MESSAGE_BYTES)]
        try:
            with grpc.insecure_channel(f"unix:{self.socket_path}", options=options) as channel:
                stub = podresources_pb2_grpc.PodResourcesListerStub(channel)
                response: podresources_pb2.ListPodResourcesResponse = stub.List(
                    podresources_pb2.ListPodResourcesRequest(), timeout=self.timeout
                )
                return response
        except grpc.RpcError as exc:
            code = exc.code() if isinstance(exc, grpc.Call) else None
            details = exc.details() if isinstance(exc, grpc.Call) else str(exc)
            name = code.name if code is not None else "UNKNOWN"
            raise ApiFailure(
                f"{subject}: kubelet PodResources List on {self.socket_path} failed: {name}: {details}"
            ) from exc

    def pod_resources(self, namespace: str, pod: str) -> dict[str, list[str]]:
        """``{resource name: sorted device IDs}`` allocated to the pod's containers."""
        return resource_map(self.list_pods(f"pod {namespace}/{pod}"), namespace, pod)

    def device_ids(self, namespace: str, pod: str, resource_name: str) -> list[str]:
        """All device IDs of ``resource_name`` allocated to the pod, sorted; [] when none."""
        return self.pod_resources(namespace, pod).get(resource_name, [])
