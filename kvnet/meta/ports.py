"""What the meta-plugin needs from outside, as small Protocols, and the production adapters.

The Kubernetes API (``KubeApi``), the delegate runner (``Runner``), SR-IOV device IDs
(``DeviceAllocator``), device-info files (``DeviceInfoStore``), default-route edits in
the pod netns (``RouteEditor``) and Events on the pod (``EventSink``). The wiring (``kvnet.meta.wiring``) builds the production
ones; tests pass small fakes.
"""

from __future__ import annotations

import ipaddress
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from kvnet.cni.delegate import DelegateEnv
from kvnet.core.errors import ApiFailure, KvnetError, NetlinkFailure
from kvnet.core.model import DeviceInfo
from kvnet.meta.events import PodEvent

READINESS_TIMEOUT = 45.0  # seconds, Multus's pollTimeout


class KubeApiFailure(ApiFailure):
    """An API failure from ``kvnet.meta.k8s``. ``msg`` is kvnet's (it names the request);
    ``client_go_msg`` is the text client-go's error has for the same failure (the server's
    Status message, ...), which Multus puts in its messages (:func:`client_go_text`)."""

    def __init__(self, msg: str, details: str = "", *, client_go_msg: str = "") -> None:
        super().__init__(msg, details)
        self.client_go_msg = client_go_msg or msg


class RetriableApiFailure(KubeApiFailure):
    """An API failure Multus's ``isCriticalRequestRetriable`` retries: an answer client-go
    reads as InternalError or ServiceUnavailable, or a refused or reset connection."""


def client_go_text(err: KvnetError) -> str:
    """What client-go's error says for ``err`` (see :class:`KubeApiFailure`), else its message."""
    return err.client_go_msg if isinstance(err, KubeApiFailure) else err.msg


class KubeApi(Protocol):
    """The few API calls the meta-plugin makes (``kvnet.meta.k8s`` implements them).

    Failures are :class:`~kvnet.core.errors.ApiFailure`; the ones worth retrying are
    :class:`RetriableApiFailure`.
    """

    def get_pod(self, namespace: str, name: str) -> Mapping[str, Any] | None: ...

    def get_nad(self, namespace: str, name: str) -> Mapping[str, Any] | None: ...

    def set_network_status(self, namespace: str, name: str, value: str) -> None: ...


class Runner(Protocol):
    """Runs one delegate network with libcni semantics (``kvnet.cni.delegate.DelegateRunner``)."""

    def run_network(
        self,
        command: str,
        network: Mapping[str, Any],
        env: DelegateEnv,
        *,
        runtime_config: Mapping[str, Any] | None = None,
        prev_result: Mapping[str, Any] | None = None,
        valid_attachments: Sequence[Mapping[str, str]] | None = None,
    ) -> Mapping[str, Any] | None: ...


class DeviceAllocator(Protocol):
    """Device IDs the kubelet allocated to a pod for one resource (PodResources API).

    Sorted; the meta-plugin hands them out to the pod's NADs with that resource in
    order, one each, as Multus does.
    """

    def device_ids(self, namespace: str, pod: str, resource_name: str) -> list[str]: ...


class DeviceInfoStore(Protocol):
    """Device-info files: the device plugin's copy and the per-attachment CNI file."""

    def cni_file(self, network: str, container_id: str, ifname: str) -> str: ...

    def copy_from_dp(
        self, resource_name: str, device_id: str, network: str, container_id: str, ifname: str
    ) -> None: ...

    def load(self, network: str, container_id: str, ifname: str) -> DeviceInfo | None: ...

    def remove(self, network: str, container_id: str, ifname: str) -> None: ...


class RouteEditor(Protocol):
    """Default-route edits inside the pod netns (``default-route`` selections)."""

    def delete_default(self, netns: str, ifname: str, family: int) -> None: ...

    def set_default(self, netns: str, ifname: str, gateway: str) -> None: ...


class EventSink(Protocol):
    """Events on the pod (``kvnet.meta.events.EventRecorder``); ``post`` never blocks."""

    def post(self, ev: PodEvent) -> bool: ...


class IpRouteEditor:
    """``RouteEditor`` with iproute2 run in the pod netns through ``nsenter``.

    Kept out of netlink so the CNI binary's hot path stays free of pyroute2; it only
    runs for pods that ask for ``default-route``.
    """

    def _ip(self, netns: str, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        cmd = ["nsenter", f"--net={netns}", "ip", *args]
        proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if check and proc.returncode != 0:
            raise NetlinkFailure(f"{' '.join(args)} in {netns}: {proc.stderr.strip() or proc.returncode}")
        return proc

    def delete_default(self, netns: str, ifname: str, family: int) -> None:
        fam = "-4" if family == 4 else "-6"
        for _ in range(16):  # one default route per metric at most; stop when none is left
            if self._ip(netns, fam, "route", "del", "default", "dev", ifname, check=False).returncode != 0:
                return

    def set_default(self, netns: str, ifname: str, gateway: str) -> None:
        fam = "-4" if ipaddress.ip_address(gateway).version == 4 else "-6"
        self._ip(netns, fam, "route", "replace", "default", "via", gateway, "dev", ifname)


class DeviceInfoFiles:
    """``DeviceInfoStore`` on the real device-info folders (``kvnet.meta.deviceinfo``)."""

    def __init__(self, root: str | None = None) -> None:
        from kvnet.meta import deviceinfo

        self._di = deviceinfo
        self.root = root or deviceinfo.DEVINFO_ROOT

    def cni_file(self, network: str, container_id: str, ifname: str) -> str:
        return str(self._di.cni_path(network, container_id, ifname, self.root))

    def copy_from_dp(self, resource_name: str, device_id: str, network: str, container_id: str, ifname: str) -> None:
        self._di.copy_dp_to_cni(resource_name, device_id, network, container_id, ifname, self.root)

    def load(self, network: str, container_id: str, ifname: str) -> DeviceInfo | None:
        return self._di.load_cni(network, container_id, ifname, self.root)

    def remove(self, network: str, container_id: str, ifname: str) -> None:
        self._di.remove_cni(network, container_id, ifname, self.root)


@dataclass(frozen=True)
class Seams:
    """The optional side effects, bundled so entry points build them once."""

    allocator: DeviceAllocator | None = None
    devinfo: DeviceInfoStore | None = None
    routes: RouteEditor | None = None
    events: EventSink | None = None
    sleep: Callable[[float], None] = time.sleep
    clock: Callable[[], float] = time.monotonic
    readiness_timeout: float = READINESS_TIMEOUT
