"""Events on the pod: what ``kubectl describe pod`` shows of the meta-plugin's work.

One ``Normal`` event ``AddedInterface`` per attachment added, with Multus's message
(``Add net1 [10.1.0.5/24] from ns/nad``, its ``DelegateAdd``), and one ``Warning``
event ``FailedAddInterface`` when an ADD fails, whose message is the ADD's error (it
names the attachment and the cause). Multus emits no failure event (the kubelet's
``FailedCreatePodSandBox`` carries its error); kvnet adds it so the cause sits beside the
attachments that did come up (docs/operations.md, "Events").

Posting never slows ADD: :meth:`EventRecorder.post` puts the event on a bounded queue
and returns; worker threads post it (one try: an Event is best effort) and an event that
finds the queue full is dropped and counted. In thin mode the process waits at most
:data:`THIN_FLUSH` seconds at its end for the queue to drain (``kvnet.meta.main``).
Events are core/v1 Events as client-go's recorder writes them (name ``<pod>.<hex ns>``,
``source.component`` ``kvnet``, ``source.host`` the node).

Like client-go's recorder (its ``EventSourceObjectSpamFilter``), a recorder lets one source
post a burst of 25 events about one pod and then one more every 5 minutes; the rest are
skipped before they are queued and counted as ``filtered``. A kvnet-cni process is one
recorder, as a Multus thin call is: at most 25 events per ADD. The daemon's recorder lives
as long as the daemon, as multus-daemon's does. client-go's other two steps are not copied:
it folds an identical event into a PATCH of the first one's count, and ten events of one
reason with different messages in 10 minutes into one "(combined from similar events)".
"""

from __future__ import annotations

import logging
import os
import queue
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, cast

from kvnet.core.errors import KvnetError

log = logging.getLogger("kvnet.events")

COMPONENT = "kvnet"
ADDED_INTERFACE = "AddedInterface"
FAILED_ADD_INTERFACE = "FailedAddInterface"
QUEUE_BOUND = 256  # events waiting to be posted; more are dropped
WORKERS = 2  # posting threads per API server
THIN_FLUSH = 1.0  # seconds a kvnet-cni process waits at its end for its events
MAX_MESSAGE = 1024  # characters of a message (events.k8s.io's note limit; longer ones are cut)
# client-go's EventSourceObjectSpamFilter (tools/record/events_cache.go): per source and pod,
# a token bucket of 25 refilled at one every 300 s, over an LRU of 4096 pods
SPAM_BURST = 25
SPAM_REFILL = 300.0  # seconds per token
SPAM_PODS = 4096


class EventApi(Protocol):
    """The one call the recorder makes (``kvnet.meta.k8s`` implements it)."""

    def create_event(self, namespace: str, event: Mapping[str, Any]) -> None: ...


@dataclass(frozen=True)
class PodRef:
    """The pod an event is about (its ``involvedObject``)."""

    namespace: str
    name: str
    uid: str = ""
    resource_version: str = ""

    @classmethod
    def of(cls, pod: Mapping[str, Any]) -> PodRef:
        meta = pod.get("metadata") or {}
        return cls(
            namespace=str(meta.get("namespace") or ""),
            name=str(meta.get("name") or ""),
            uid=str(meta.get("uid") or ""),
            resource_version=str(meta.get("resourceVersion") or ""),
        )


@dataclass(frozen=True)
class PodEvent:
    pod: PodRef
    type: str  # Normal or Warning
    reason: str
    message: str


def go_list(items: Sequence[str]) -> str:
    """Go's ``%v`` of a ``[]string``: ``[a b]``."""
    return "[" + " ".join(items) + "]"


def added_interface(pod: PodRef, ifname: str, ips: Sequence[str], network: str) -> PodEvent:
    """Multus's ``Add %s %v from %s`` (``Add %s %v`` for a delegate without a name)."""
    message = f"Add {ifname} {go_list(ips)}" + (f" from {network}" if network else "")
    return PodEvent(pod, "Normal", ADDED_INTERFACE, message)


def add_failed(pod: PodRef, error: str) -> PodEvent:
    return PodEvent(pod, "Warning", FAILED_ADD_INTERFACE, error)


def result_ips(result: Mapping[str, Any]) -> list[str]:
    """The addresses of a delegate's result, whatever its CNI version."""
    from kvnet.cni.results import convert_result

    try:
        current = convert_result(result, "1.0.0")
    except KvnetError:
        return []
    return [str(ip["address"]) for ip in current.get("ips") or () if isinstance(ip, Mapping) and "address" in ip]


def event_body(ev: PodEvent, *, host: str, now_ns: int, serial: int = 0) -> dict[str, Any]:
    """The core/v1 Event object client-go's recorder would create for ``ev`` at ``now_ns``
    (nanoseconds since the epoch; ``serial`` keeps names apart within one nanosecond)."""
    stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now_ns // 1_000_000_000))
    involved = {"kind": "Pod", "apiVersion": "v1", "namespace": ev.pod.namespace, "name": ev.pod.name}
    if ev.pod.uid:
        involved["uid"] = ev.pod.uid
    if ev.pod.resource_version:
        involved["resourceVersion"] = ev.pod.resource_version
    message = ev.message if len(ev.message) <= MAX_MESSAGE else ev.message[: MAX_MESSAGE - 3] + "..."
    return {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {"name": f"{ev.pod.name}.{now_ns + serial:x}", "namespace": ev.pod.namespace},
        "involvedObject": involved,
        "reason": ev.reason,
        "message": message,
        "type": ev.type,
        "source": {"component": COMPONENT, "host": host},
        "reportingComponent": COMPONENT,
        "reportingInstance": host,
        "firstTimestamp": stamp,
        "lastTimestamp": stamp,
        "count": 1,
    }


def node_name() -> str:
    """The node the events come from: ``NODE_NAME`` (the DaemonSet's downward API) or the host name."""
    return os.environ.get("NODE_NAME") or os.uname().nodename


Observer = Callable[[str], None]  # called with "posted", "dropped", "failed" or "filtered"


class SpamFilter:
    """client-go's per source and object token bucket (:data:`SPAM_BURST`, :data:`SPAM_REFILL`);
    the pods it remembers are the :data:`SPAM_PODS` most recently seen."""

    def __init__(
        self,
        *,
        burst: int = SPAM_BURST,
        refill: float = SPAM_REFILL,
        size: int = SPAM_PODS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._burst, self._refill, self._size, self._clock = burst, refill, size, clock
        self._buckets: OrderedDict[tuple[str, str, str], tuple[float, float]] = OrderedDict()
        self._lock = threading.Lock()

    def allow(self, pod: PodRef) -> bool:
        key = (pod.namespace, pod.name, pod.uid)
        now = self._clock()
        with self._lock:
            tokens, then = self._buckets.pop(key, (float(self._burst), now))
            tokens = min(float(self._burst), tokens + (now - then) / self._refill)
            allowed = tokens >= 1.0
            self._buckets[key] = (tokens - 1.0 if allowed else tokens, now)
            while len(self._buckets) > self._size:
                self._buckets.popitem(last=False)
        return allowed


def recorder_for(api: object, *, observer: Observer | None = None) -> EventRecorder | None:
    """A recorder over ``api``, or None when that client cannot post Events."""
    if not callable(getattr(api, "create_event", None)):
        return None
    return EventRecorder(cast(EventApi, api), observer=observer)


class EventRecorder:
    """Posts :class:`PodEvent` s to one API server from a bounded queue; never blocks."""

    def __init__(
        self,
        api: EventApi,
        *,
        bound: int = QUEUE_BOUND,
        workers: int = WORKERS,
        host: str | None = None,
        clock: Callable[[], int] = time.time_ns,
        observer: Observer | None = None,
        spam: SpamFilter | None = None,
    ) -> None:
        self._api = api
        self._spam = spam or SpamFilter()
        self._queue: queue.Queue[PodEvent] = queue.Queue(bound)
        self._workers = workers
        self._threads: list[threading.Thread] = []
        self._host = host or node_name()
        self._clock = clock
        self._observer = observer
        self._lock = threading.Lock()
        self._serial = 0
        self.counts = {"posted": 0, "dropped": 0, "failed": 0, "filtered": 0}

    def _count(self, what: str) -> None:
        with self._lock:
            self.counts[what] += 1
        if self._observer is not None:
            self._observer(what)

    def post(self, ev: PodEvent) -> bool:
        """Queue ``ev``; False when the spam filter skipped it or the queue was full."""
        if not ev.pod.namespace or not ev.pod.name:
            return False
        if not self._spam.allow(ev.pod):
            log.debug(
                "event skipped (more than %d about pod %s/%s): %s",
                SPAM_BURST,
                ev.pod.namespace,
                ev.pod.name,
                ev.message,
            )
            self._count("filtered")
            return False
        try:
            self._queue.put_nowait(ev)
        except queue.Full:
            log.warning(
                "event dropped (the API is slow, %d waiting): %s %s", self._queue.qsize(), ev.reason, ev.message
            )
            self._count("dropped")
            return False
        self._start()
        return True

    def _start(self) -> None:
        with self._lock:
            while len(self._threads) < self._workers:
                t = threading.Thread(target=self._work, name="kvnet-events", daemon=True)
                self._threads.append(t)
                t.start()

    def _work(self) -> None:
        while True:
            ev = self._queue.get()
            try:
                with self._lock:
                    self._serial += 1
                    serial = self._serial
                body = event_body(ev, host=self._host, now_ns=self._clock(), serial=serial)
                self._api.create_event(ev.pod.namespace, body)
                self._count("posted")
            except KvnetError as err:
                log.info("event %s on pod %s/%s not posted: %s", ev.reason, ev.pod.namespace, ev.pod.name, err.msg)
                self._count("failed")
            finally:
                self._queue.task_done()

    def flush(self, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds for every queued event to be posted (or to fail)."""
        deadline = time.monotonic() + timeout
        with self._queue.all_tasks_done:
            while self._queue.unfinished_tasks:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._queue.all_tasks_done.wait(left)
        return True
