"""KubeVirt's hook protocol over gRPC on a unix socket, around a ``Hooks`` object.

Info answers at once (no I/O); Callbacks are served for v1alpha1, v1alpha2 and v1alpha3
with one code path; Shutdown (v1alpha3) ends ``wait()``. kvnet errors become gRPC
errors here, the one boundary where that happens; the socket appears in the hooks
directory only once the server answers (bound under a private name, then renamed).
"""

from __future__ import annotations

import logging
import os
import re
import socket
import tempfile
import threading
from concurrent import futures
from pathlib import Path
from types import ModuleType
from typing import Any

import grpc

from kvnet.core.errors import (
    DecodeFailure,
    DeviceError,
    InvalidConfig,
    IOFailure,
    KvnetError,
    NetlinkFailure,
    StatusNotAvailable,
    TranslationError,
    TryAgainLater,
)
from kvnet.sidecar.hooks import Hooks
from kvnet.sidecar.proto import (
    info_pb2,
    info_pb2_grpc,
    v1alpha1_pb2,
    v1alpha1_pb2_grpc,
    v1alpha2_pb2,
    v1alpha2_pb2_grpc,
    v1alpha3_pb2,
    v1alpha3_pb2_grpc,
)

log = logging.getLogger("kvnet.sidecar")

# The hook API versions this sidecar serves, oldest first, each with its generated
# (messages, services) modules: the one table the lab's launcher also dials with.
VERSION_MODULES: dict[str, tuple[ModuleType, ModuleType]] = {
    "v1alpha1": (v1alpha1_pb2, v1alpha1_pb2_grpc),
    "v1alpha2": (v1alpha2_pb2, v1alpha2_pb2_grpc),
    "v1alpha3": (v1alpha3_pb2, v1alpha3_pb2_grpc),
}
VERSIONS = tuple(VERSION_MODULES)
HOOK_POINTS = ("OnDefineDomain", "PreCloudInitIso", "Shutdown")
NO_CLOUD_INIT_HOOK_POINTS = ("OnDefineDomain", "Shutdown")
DEFAULT_HOOKS_DIR = "/var/run/kubevirt-hooks"
_SOCKET_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$")
MAX_UNIX_PATH = 107  # sun_path holds 108 bytes with the terminating NUL
# A VMI may be up to etcd's 1.5 MiB and PreCloudInitIso carries its user data twice more;
# gRPC's default 4 MiB receive limit is too close.
MAX_MESSAGE = 32 * 1024 * 1024

# Whose fault an error is decides the status virt-launcher sees (it fails the VMI either way;
# the message names the interface).
_STATUS: tuple[tuple[type[KvnetError], grpc.StatusCode], ...] = (
    (DecodeFailure, grpc.StatusCode.INVALID_ARGUMENT),  # malformed VMI / domain / cloudInitData
    (InvalidConfig, grpc.StatusCode.INVALID_ARGUMENT),  # bad annotation, bad VMI field
    (TranslationError, grpc.StatusCode.INVALID_ARGUMENT),  # the VMI asks for what the pod cannot give
    (DeviceError, grpc.StatusCode.INVALID_ARGUMENT),  # malformed PCI address
    (TryAgainLater, grpc.StatusCode.FAILED_PRECONDITION),  # network-info late / missing / malformed
    (IOFailure, grpc.StatusCode.FAILED_PRECONDITION),
    (NetlinkFailure, grpc.StatusCode.FAILED_PRECONDITION),
    (StatusNotAvailable, grpc.StatusCode.FAILED_PRECONDITION),
)


def status_for(err: BaseException) -> grpc.StatusCode:
    """The gRPC status for an error raised by a hook (INTERNAL for anything unexpected)."""
    if isinstance(err, KvnetError):
        for cls, code in _STATUS:
            if isinstance(err, cls):
                return code
    return grpc.StatusCode.INTERNAL


def error_message(call: str, hooks_name: str, err: BaseException) -> str:
    if isinstance(err, KvnetError):
        return f"{hooks_name} {call}: {err.msg}"
    return f"{hooks_name} {call}: unexpected {type(err).__name__}: {err}"


def socket_path(hooks_dir: str | os.PathLike[str], name: str) -> Path:
    """``<hooks dir>/<name>.sock``; the name must be unique among the pod's sidecars."""
    if not _SOCKET_NAME_RE.match(name):
        raise InvalidConfig(f"sidecar name {name!r} is not usable as a socket name (letters, digits, '_', '.', '-')")
    path = Path(hooks_dir) / f"{name}.sock"
    if len(str(path)) > MAX_UNIX_PATH:
        raise InvalidConfig(f"socket path {path} is longer than {MAX_UNIX_PATH} bytes")
    return path


class _InfoServicer:
    def __init__(self, name: str, hook_points: tuple[str, ...]) -> None:
        self.result = info_pb2.InfoResult(
            name=name,
            hookPoints=[info_pb2.HookPoint(name=p, priority=0) for p in hook_points],
            versions=list(VERSIONS),
        )

    def Info(self, request: Any, context: grpc.ServicerContext) -> Any:
        return self.result


class _Callbacks:
    """The Callbacks servicer of one version (its message module); v1alpha1 registers only
    OnDefineDomain, v1alpha2 adds PreCloudInitIso, v1alpha3 Shutdown: the generated
    ``add_CallbacksServicer_to_server`` of each version picks the methods it knows."""

    def __init__(self, hooks: Hooks, pb2: ModuleType, shutdown: threading.Event) -> None:
        self.hooks = hooks
        self.pb2 = pb2
        self.shutdown = shutdown

    def _fail(self, call: str, err: BaseException, context: grpc.ServicerContext) -> None:
        code = status_for(err)
        msg = error_message(call, self.hooks.name, err)
        if code is grpc.StatusCode.INTERNAL and not isinstance(err, KvnetError):
            log.exception("%s", msg)
        else:
            log.error("%s", msg)
        context.abort(code, msg)

    def OnDefineDomain(self, request: Any, context: grpc.ServicerContext) -> Any:
        try:
            out = self.hooks.on_define_domain(request.domainXML, request.vmi)
        except Exception as err:  # every error becomes a gRPC status, never a half-edited domain
            self._fail("OnDefineDomain", err, context)
            raise  # not reached: abort raises
        return self.pb2.OnDefineDomainResult(domainXML=out)

    def PreCloudInitIso(self, request: Any, context: grpc.ServicerContext) -> Any:
        try:
            res = self.hooks.pre_cloud_init_iso(request.vmi, request.cloudInitData, request.cloudInitNoCloudSource)
        except Exception as err:
            self._fail("PreCloudInitIso", err, context)
            raise
        return self.pb2.PreCloudInitIsoResult(
            cloudInitData=res.cloud_init_data, cloudInitNoCloudSource=res.no_cloud_source
        )

    def Shutdown(self, request: Any, context: grpc.ServicerContext) -> Any:
        log.info("%s: Shutdown called, stopping", self.hooks.name)
        self.shutdown.set()
        return self.pb2.ShutdownResult()


def _socket_is_live(path: Path) -> bool:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(0.5)
        try:
            s.connect(str(path))
        except OSError:
            return False
        return True


class SidecarServer:
    """The gRPC server of one sidecar on ``socket_path``; ``start``, ``wait``, ``stop``.
    ``hook_points``: what Info subscribes to (without PreCloudInitIso for VMIs that have no
    cloud-init volume: KubeVirt's hook manager dereferences their nil cloud-init data when a
    sidecar subscribes to it, docs/sidecar.md)."""

    def __init__(
        self,
        hooks: Hooks,
        socket_path: str | os.PathLike[str],
        *,
        max_workers: int = 8,
        shutdown_requested: threading.Event | None = None,
        hook_points: tuple[str, ...] = HOOK_POINTS,
    ) -> None:
        self.hooks = hooks
        self.socket_path = Path(socket_path)
        self.shutdown_requested = shutdown_requested or threading.Event()
        self._server = grpc.server(
            futures.ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix="hook"),
            options=[("grpc.max_receive_message_length", MAX_MESSAGE), ("grpc.max_send_message_length", MAX_MESSAGE)],
        )
        info_pb2_grpc.add_InfoServicer_to_server(_InfoServicer(hooks.name, hook_points), self._server)
        for pb2, pb2_grpc in VERSION_MODULES.values():
            pb2_grpc.add_CallbacksServicer_to_server(_Callbacks(hooks, pb2, self.shutdown_requested), self._server)
        self._started = False

    def start(self) -> None:
        """Serve, then make the socket appear under its final name (atomic rename).

        virt-launcher dials every entry of the hooks directory and gives up on the pod if
        Info fails, so the final name must never point at a socket that does not answer.
        The server binds inside a private temporary directory next to the final path (same
        filesystem, so ``rename`` is atomic) and the socket is renamed once serving.
        """
        final = self.socket_path
        if not final.parent.is_dir():
            raise IOFailure(f"hooks directory {final.parent} does not exist")
        if final.exists() or final.is_symlink():
            if _socket_is_live(final):
                raise InvalidConfig(
                    f"socket {final} is already served by another sidecar: names must be unique in the pod"
                )
            log.info("%s: removing stale socket %s", self.hooks.name, final)
            final.unlink()
        staging = Path(tempfile.mkdtemp(prefix=".k", dir=final.parent))
        temp = staging / "s"
        if len(str(temp)) > MAX_UNIX_PATH:
            staging.rmdir()
            raise InvalidConfig(
                f"hooks directory {final.parent} is too long for a unix socket path ({MAX_UNIX_PATH} bytes)"
            )
        try:
            if self._server.add_insecure_port(f"unix:{temp}") == 0:
                raise IOFailure(f"cannot listen on {temp}")
            self._server.start()
            self._started = True
            os.rename(temp, final)
        except RuntimeError as err:
            raise IOFailure(f"cannot listen on {temp}: {err}") from None
        except OSError as err:
            self.stop(0)
            raise IOFailure(f"cannot publish socket {final}: {err}") from None
        finally:
            if temp.exists():
                temp.unlink()
            staging.rmdir()
        log.info("%s: serving KubeVirt hooks %s on %s", self.hooks.name, "/".join(VERSIONS), final)

    def wait(self, timeout: float | None = None) -> bool:
        """Block until Shutdown was called (True) or ``timeout`` passed (False)."""
        return self.shutdown_requested.wait(timeout)

    def stop(self, grace: float | None = 1.0) -> None:
        """Stop serving (letting running calls finish within ``grace``) and remove the socket."""
        if self._started:
            self._server.stop(grace).wait()
            self._started = False
        try:
            self.socket_path.unlink()
        except FileNotFoundError:
            pass

    def __enter__(self) -> SidecarServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop(0)
