"""A client that talks to hook sidecars the way virt-launcher does (pkg/hooks/manager.go).

It scans the hooks directory, calls Info on each socket with a 1 s deadline, keeps the
first of v1alpha3, v1alpha2, v1alpha1 the sidecar lists, and then calls the hook points:
OnDefineDomain through every subscribed sidecar in turn (each gets the previous one's
output), PreCloudInitIso on the first subscribed sidecar only (virt-launcher returns its
answer, falling back to the legacy NoCloud fields as preCloudInitIsoValidateResult does),
Shutdown on every v1alpha3 sidecar. One channel per call, as virt-launcher dials per call
(``keep_channels=True`` keeps one per sidecar instead, for measurements). Sidecars are
taken in directory-listing order (Go's os.ReadDir sorts by name).

Two layouts of the hooks folder: ``flat`` (KubeVirt before 1.6: every sidecar's socket in
one shared folder, every entry dialled, what cannot be dialled retried) and ``subdirs``
(KubeVirt 1.6 and later: each sidecar mounts its own sub-folder as its hooks folder;
virt-launcher reads every sub-folder and dials its non-folder entries). Either way a
socket is known by its file name, which must be unique in the pod.

A failed Info is a ``LauncherError`` (a kvnet ``IOFailure``); a failed callback is the
``grpc.RpcError`` virt-launcher would see (``as_io_failure`` turns it into an ``IOFailure``).
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any, Literal

import grpc

from kvnet.core.errors import IOFailure
from kvnet.sidecar.hooks import no_cloud_source
from kvnet.sidecar.proto import info_pb2, info_pb2_grpc, v1alpha3_pb2, v1alpha3_pb2_grpc
from kvnet.sidecar.server import VERSION_MODULES

SUPPORTED = ("v1alpha3", "v1alpha2", "v1alpha1")  # newest first, as virt-launcher matches
MODULES: Mapping[str, tuple[ModuleType, ModuleType]] = VERSION_MODULES  # the sidecar's table, one source
INFO_DEADLINE = 1.0  # seconds; virt-launcher gives up on a sidecar whose Info takes longer


@dataclass(frozen=True)
class Sidecar:
    """One collected sidecar: its socket, the name Info gave, the version chosen, its hook points."""

    socket_path: str
    name: str
    version: str
    hook_points: tuple[str, ...]


class LauncherError(IOFailure):
    """What virt-launcher would log before failing the VMI."""


def dial(path: str) -> grpc.Channel:
    return grpc.insecure_channel(f"unix:{path}")


def info(path: str, timeout: float = INFO_DEADLINE) -> Any:
    """The Info answer of the sidecar on ``path`` (``grpc.RpcError`` when it fails)."""
    with dial(path) as ch:
        return info_pb2_grpc.InfoStub(ch).Info(info_pb2.InfoParams(), timeout=timeout)


@contextlib.contextmanager
def as_io_failure(point: str, who: str) -> Iterator[None]:
    """A callback's ``grpc.RpcError`` as an ``IOFailure`` naming the sidecar and the hook point."""
    try:
        yield
    except grpc.RpcError as err:
        raise IOFailure(f"hook sidecar {who!r}: {point} failed: {err.code().name}: {err.details()}") from None


class LauncherClient:
    """virt-launcher's hook manager over the sidecars of one hooks folder."""

    def __init__(
        self,
        hooks_dir: str | os.PathLike[str],
        layout: Literal["flat", "subdirs"] = "flat",
        *,
        keep_channels: bool = False,
    ) -> None:
        if layout not in ("flat", "subdirs"):
            raise ValueError(f"layout {layout!r} is not flat or subdirs")
        self.hooks_dir = Path(hooks_dir)
        self.layout = layout
        self.keep_channels = keep_channels
        self.sidecars: list[Sidecar] = []
        self._channels: dict[str, grpc.Channel] = {}

    def _entries(self) -> list[tuple[str, Path]]:
        if self.layout == "flat":
            return [(e, self.hooks_dir / e) for e in sorted(os.listdir(self.hooks_dir))]
        out = []
        for sub in sorted(os.listdir(self.hooks_dir)):
            folder = self.hooks_dir / sub
            if not folder.is_dir():
                continue  # virt-launcher >= 1.6 looks only inside sub-folders
            out += [(e, folder / e) for e in sorted(os.listdir(folder)) if not (folder / e).is_dir()]
        return out

    def collect(self, expected: int, timeout: float = 10.0, poll: float = 0.05) -> list[Sidecar]:
        """Wait for ``expected`` sidecars; an Info error on a dialable socket is fatal."""
        found: dict[str, Sidecar] = {}
        deadline = time.monotonic() + timeout
        while len(found) < expected:
            if time.monotonic() > deadline:
                raise LauncherError(
                    f"Failed to collect all expected sidecar hook sockets within given timeout ({len(found)}/{expected})"
                )
            for entry, path in self._entries():
                if entry in found or not path.is_socket():
                    continue  # virt-launcher retries what it cannot dial in the next round
                try:
                    res = info(str(path))
                except grpc.RpcError as err:
                    if err.code() == grpc.StatusCode.UNAVAILABLE:
                        continue
                    raise LauncherError(
                        f"Failed to process sidecar socket {entry}: {err.code().name}: {err.details()}"
                    ) from None
                versions = set(res.versions)
                version = next((v for v in SUPPORTED if v in versions), None)
                if version is None:
                    raise LauncherError(
                        f"Hook sidecar does not expose a supported version. Exposed versions: {list(res.versions)}"
                    )
                found[entry] = Sidecar(str(path), res.name, version, tuple(p.name for p in res.hookPoints))
            if len(found) < expected:
                time.sleep(poll)
        self.sidecars = [found[k] for k in sorted(found)]
        return self.sidecars

    def _subscribed(self, point: str) -> list[Sidecar]:
        return [s for s in self.sidecars if point in s.hook_points]

    @contextlib.contextmanager
    def _channel(self, sc: Sidecar) -> Iterator[grpc.Channel]:
        if not self.keep_channels:
            with dial(sc.socket_path) as ch:
                yield ch
            return
        if sc.socket_path not in self._channels:
            self._channels[sc.socket_path] = dial(sc.socket_path)
        yield self._channels[sc.socket_path]

    def close(self) -> None:
        """Close the channels ``keep_channels`` kept."""
        for ch in self._channels.values():
            ch.close()
        self._channels.clear()

    def define_domain_bytes(self, domain_xml: bytes, vmi_json: bytes, timeout: float = 60.0) -> bytes:
        """OnDefineDomain through every subscribed sidecar, each given the previous answer."""
        xml = domain_xml
        for sc in self._subscribed("OnDefineDomain"):
            pb2, pb2_grpc = MODULES[sc.version]
            with self._channel(sc) as ch:
                res = pb2_grpc.CallbacksStub(ch).OnDefineDomain(
                    pb2.OnDefineDomainParams(domainXML=xml, vmi=vmi_json), timeout=timeout
                )
            xml = bytes(res.domainXML)
        return xml

    def on_define_domain(self, domain_xml: str | bytes, vmi: Mapping[str, Any] | bytes, timeout: float = 60.0) -> str:
        xml = domain_xml.encode() if isinstance(domain_xml, str) else domain_xml
        vmi_json = vmi if isinstance(vmi, bytes) else json.dumps(vmi).encode()
        return self.define_domain_bytes(xml, vmi_json, timeout).decode()

    def pre_cloud_init_iso(
        self, vmi: Mapping[str, Any], cloud_init_data: Mapping[str, Any], timeout: float = 60.0
    ) -> dict[str, Any]:
        """The first subscribed v1alpha2+ sidecar's answer, checked as virt-launcher checks it."""
        vmi_json = json.dumps(vmi).encode()
        legacy = no_cloud_source(cloud_init_data)
        for sc in self._subscribed("PreCloudInitIso"):
            if sc.version == "v1alpha1":
                continue
            pb2, pb2_grpc = MODULES[sc.version]
            with self._channel(sc) as ch:
                res = pb2_grpc.CallbacksStub(ch).PreCloudInitIso(
                    pb2.PreCloudInitIsoParams(
                        cloudInitData=json.dumps(cloud_init_data).encode(), cloudInitNoCloudSource=legacy, vmi=vmi_json
                    ),
                    timeout=timeout,
                )
            return validate_cloud_init_result(cloud_init_data, res.cloudInitData, res.cloudInitNoCloudSource)
        return dict(cloud_init_data)

    def shutdown(self, timeout: float = 60.0) -> None:
        for sc in self._subscribed("Shutdown"):
            if sc.version != "v1alpha3":
                continue
            with self._channel(sc) as ch:
                v1alpha3_pb2_grpc.CallbacksStub(ch).Shutdown(v1alpha3_pb2.ShutdownParams(), timeout=timeout)


def validate_cloud_init_result(sent: Mapping[str, Any], data: bytes, legacy: bytes) -> dict[str, Any]:
    """virt-launcher's preCloudInitIsoValidateResult: fall back to the legacy source when
    the CloudInitData answer has no UserData or no metadata."""
    result = json.loads(data) if data else {}
    if (
        isinstance(result, dict)
        and result.get("UserData")
        and (result.get("NoCloudMetaData") or result.get("ConfigDriveMetaData"))
    ):
        return result
    src = json.loads(legacy) if legacy else {}
    return {
        "DataSource": sent.get("DataSource"),
        "UserData": src.get("userData", ""),
        "NetworkData": src.get("networkData", ""),
    }
