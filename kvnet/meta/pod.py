"""The pod a CNI call is about: its CNI_ARGS, the readiness wait, the pod from the API."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from kvnet.cni.protocol import CniRequest
from kvnet.core.errors import InvalidEnvironment, IOFailure, KvnetError, TryAgainLater, UnknownContainer
from kvnet.core.gojson import go_quote
from kvnet.core.naming import path_segment_problem
from kvnet.meta.config import MultusConfig
from kvnet.meta.ports import KubeApi, RetriableApiFailure, Seams, client_go_text
from kvnet.meta.wording import cmd_prefix, reword

log = logging.getLogger("kvnet.meta")

CONFIG_SOURCE = "kubernetes.io/config.source"  # the kubelet's ConfigSourceAnnotationKey
READINESS_POLL = 1.0  # seconds, Multus's pollDuration
POD_POLL = 0.25  # seconds, Multus's shortPollDuration: GetPod's retry interval
POD_POLL_TIMEOUT = 2.5  # seconds, Multus's shortPollTimeout: how long GetPod retries


@dataclass(frozen=True)
class PodArgs:
    """Multus's ``K8sArgs``: the pod named in CNI_ARGS."""

    namespace: str
    name: str
    uid: str
    infra_container_id: str

    @property
    def label(self) -> str:
        return f"{self.namespace}/{self.name}"


def pod_args(request: CniRequest) -> PodArgs:
    a = request.args
    return PodArgs(
        a.get("K8S_POD_NAMESPACE", ""),
        a.get("K8S_POD_NAME", ""),
        a.get("K8S_POD_UID", ""),
        a.get("K8S_POD_INFRA_CONTAINER_ID", ""),
    )


def api_name_problem(pa: PodArgs) -> str | None:
    """What client-go says of a namespace or pod name that cannot be one segment of an API
    URL (``.``, ``..``, a ``/`` or ``%``: CNI_ARGS is the runtime's text, and ``pods/..``
    would name another resource), or None. client-go refuses such a request before sending it."""
    problem = path_segment_problem(pa.namespace)
    if problem:
        return f"invalid namespace {go_quote(pa.namespace)}: {problem}"
    problem = path_segment_problem(pa.name)
    if problem:
        return f"invalid resource name {go_quote(pa.name)}: {problem}"
    return None


def pod_meta(pod: Mapping[str, Any]) -> Mapping[str, Any]:
    meta = pod.get("metadata")
    return meta if isinstance(meta, Mapping) else {}


def pod_annotations(pod: Mapping[str, Any]) -> Mapping[str, str]:
    found = pod_meta(pod).get("annotations")
    return found if isinstance(found, Mapping) else {}


def poll_immediate(interval: float, timeout: float, condition: Callable[[], bool], seams: Seams) -> bool:
    """apimachinery's ``wait.PollImmediate``: ``condition`` now, then on every tick of
    ``interval`` (ticks a slow condition overran are dropped) and once more when
    ``timeout`` has passed since the first call; True as soon as it holds, False on the
    timeout. An exception from ``condition`` ends the poll."""
    if condition():
        return True
    start = seams.clock()
    deadline = start + timeout
    tick = 1
    while True:
        due = start + tick * interval
        if due >= deadline:
            seams.sleep(max(0.0, deadline - seams.clock()))
            return condition()
        seams.sleep(max(0.0, due - seams.clock()))
        if condition():
            return True
        tick = max(tick + 1, int((seams.clock() - start) // interval) + 1)


def is_static_pod(pod: Mapping[str, Any]) -> bool:
    """Multus's ``IsStaticPod``: the kubelet's ``kubernetes.io/config.source`` annotation
    says the pod came from somewhere else than the API (``file``, ``http``): the API holds
    its mirror pod, whose UID is not the one the runtime knows."""
    source = pod_annotations(pod).get(CONFIG_SOURCE)
    return source is not None and source != "api"


def wait_readiness(conf: MultusConfig, pa: PodArgs | None, seams: Seams) -> None:
    """Multus's ``GetReadinessIndicatorFile`` (ADD, STATUS, GC): wait for
    ``readinessindicatorfile``, polled every second for 45 s."""
    path = conf.readiness_indicator_file
    if not path:
        return
    if not poll_immediate(READINESS_POLL, seams.readiness_timeout, lambda: os.path.exists(path), seams):
        raise TryAgainLater(
            f"{cmd_prefix(pa)}have you checked that your default network is ready? still waiting for "
            f"readinessindicatorfile @ {path}. pollimmediate error: timed out waiting for the condition"
        )


def check_readiness_on_del(conf: MultusConfig, pa: PodArgs) -> None:
    """Multus's ``CmdDel`` with ``ReadinessIndicatorExistsNow``: DEL never waits, so a pod
    can be torn down while the default network is down; a missing file is only logged,
    a file that cannot be checked (not a missing one) fails the DEL."""
    path = conf.readiness_indicator_file
    if not path:
        return
    try:
        os.stat(os.path.abspath(path))
    except FileNotFoundError:
        log.warning("pod %s: readinessindicatorfile @ %s does not exist on CNI DEL", pa.label, path)
    except OSError as err:
        why = (err.strerror or str(err))[:1].lower() + (err.strerror or str(err))[1:]
        raise IOFailure(
            f"{cmd_prefix(pa)}error checking readinessindicatorfile on CNI DEL @ {path}: "
            f"stat {os.path.abspath(path)}: {why}"
        ) from None


def get_pod(api: KubeApi | None, pa: PodArgs, *, on_del: bool, seams: Seams = Seams()) -> Mapping[str, Any] | None:
    """Multus's ``GetPod``: the pod, or None (no API, no pod name, pod gone; on DEL also
    API errors and a pod re-created under the same name).

    A retriable failure (:class:`~kvnet.meta.ports.RetriableApiFailure`: 500, 503, a
    refused or reset connection) is retried every 0.25 s for 2.5 s; when that runs out, or
    another failure ends it, the pod is read once more (Multus's live query) and only that
    read's failure counts. A 404 ends it at once.
    """
    if api is None or not pa.name:
        return None
    refused = api_name_problem(pa)
    if refused:
        if on_del:
            log.warning("pod %s: cannot read the pod on DEL, deleting from the cache: %s", pa.label, refused)
            return None
        raise InvalidEnvironment(f"{cmd_prefix(pa)}error waiting for pod: {refused}")
    found: list[Mapping[str, Any] | None] = []

    def attempt() -> bool:
        try:
            found.append(api.get_pod(pa.namespace, pa.name))
        except RetriableApiFailure as err:
            log.debug("pod %s: reading the pod failed, retrying: %s", pa.label, err.msg)
            return False
        return True

    try:
        done = poll_immediate(POD_POLL, POD_POLL_TIMEOUT, attempt, seams)
    except KvnetError as err:
        log.debug("pod %s: reading the pod failed: %s", pa.label, err.msg)
        done = False
    pod = found[-1] if done else _last_read(api.get_pod, pa, on_del)
    uid = str(pod_meta(pod).get("uid") or "") if pod is not None else ""
    live = getattr(api, "get_pod_live", None)  # the daemon's pod cache: its copy may be older than the pod
    if pod is not None and pa.uid and uid != pa.uid and callable(live):
        pod = _last_read(live, pa, on_del)
        uid = str(pod_meta(pod).get("uid") or "") if pod is not None else ""
    if pod is None:
        return None
    if pa.uid and uid != pa.uid and not is_static_pod(pod):
        if on_del:
            log.warning("pod %s: API has UID %s, the runtime %s; not touching the new pod", pa.label, uid, pa.uid)
            return None
        raise UnknownContainer(
            f"{cmd_prefix(pa)}expected pod UID {go_quote(pa.uid)} but got {go_quote(uid)} from Kube API"
        )
    return pod


def _last_read(
    read: Callable[[str, str], Mapping[str, Any] | None], pa: PodArgs, on_del: bool
) -> Mapping[str, Any] | None:
    """The read whose failure counts: raised as Multus words it, or on DEL logged and None."""
    try:
        return read(pa.namespace, pa.name)
    except KvnetError as err:
        if on_del:
            log.warning("pod %s: cannot read the pod on DEL, deleting from the cache: %s", pa.label, err.msg)
            return None
        raise reword(err, f"{cmd_prefix(pa)}error waiting for pod: {client_go_text(err)}") from err
