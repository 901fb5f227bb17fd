"""The node agent: list and watch MultiNetworkPolicies, pods and namespaces, keep one nftables
table per policed pod on this node (docs/policy.md).

Three watcher threads (:class:`KubeSource`, the official client's ``kubernetes.watch.Watch``)
each list their kind and then follow it from the list's resourceVersion, relisting after a
410 Gone or a dropped connection; they put what they see on one queue. The main loop
(:meth:`Agent.run`) drains the queue into the cached state and reconciles: the wanted
rules are recomputed for every pod on this node (:func:`kvnet.policy.model.wanted_rules`,
pure), and a pod's table is applied only when its text changed, and deleted when the pod
no longer needs one (policy deleted, pod deleted or no longer selected). After its first
full reconcile it sweeps ``--netns-dir`` for tables of its own name in netns it does not
police (left by an agent that was killed). On stop the agent removes every table it
applied: without the agent nobody keeps them current.

Before rendering a pod's tables the agent reads the pod netns's links: a policed interface
that is a port of a bridge there is a VM's attachment behind kvnet's binding (``pod<hash>``
in ``k6t-<x>`` with the guest's tap), filtered where its frames are bridged
(:mod:`kvnet.policy.nft`); the pod netns then gets br_netfilter's sysctls turned on.

Peers are looked for on every node (a peer's addresses come from its network-status,
wherever it runs), so pods are watched cluster-wide; only this node's pods get tables.
"""

from __future__ import annotations

import json
import logging
import os
import queue
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from kvnet.core.errors import InvalidConfig, IOFailure, KvnetError
from kvnet.policy.model import (
    GROUP,
    PLURAL,
    VERSION,
    Pod,
    PodRules,
    Policy,
    namespace_labels,
    parse_pod,
    parse_policy,
    wanted_rules,
)
from kvnet.policy.nft import FAMILIES, FAMILY, TABLE, Nft, families, script

log = logging.getLogger("kvnet.policy")

POLICIES, PODS, NAMESPACES = "multi-networkpolicies", "pods", "namespaces"
KINDS = (POLICIES, PODS, NAMESPACES)
WATCH_SECONDS = 60  # each watch request's server-side timeout; then it is re-issued
RETRY_SECONDS = 1.0


class Expired(Exception):
    """The watch's resourceVersion is too old (410 Gone): list again."""


@dataclass(frozen=True)
class Event:
    kind: str
    type: str  # ADDED, MODIFIED, DELETED, or LIST (``objects`` is the whole list)
    objects: tuple[Mapping[str, Any], ...]


class KubeSource:
    """Lists and watches the three kinds through the official ``kubernetes`` client."""

    def __init__(self, kubeconfig: str, *, timeout: float = 30.0) -> None:
        from kubernetes import client, config, watch
        from kubernetes.client.exceptions import ApiException
        from kubernetes.config.config_exception import ConfigException
        from urllib3.exceptions import HTTPError

        configuration = client.Configuration()
        load: Any = config.load_kube_config  # the client library is untyped
        try:
            load(config_file=kubeconfig, client_configuration=configuration, persist_config=False)
        except (ConfigException, OSError, ValueError, TypeError) as err:
            raise InvalidConfig(f"cannot use kubeconfig {kubeconfig}: {err}") from None
        api_client = client.ApiClient(configuration)
        self._core = client.CoreV1Api(api_client)
        self._custom = client.CustomObjectsApi(api_client)
        self._watch: Any = watch.Watch
        self.api_errors: tuple[type[BaseException], ...] = (ApiException, HTTPError, OSError)
        self._api_exception = ApiException
        self.timeout = timeout

    def _lister(self, kind: str) -> Callable[..., Any]:
        if kind == POLICIES:

            def policies(**kw: Any) -> Any:
                return self._custom.list_cluster_custom_object(GROUP, VERSION, PLURAL, **kw)

            return policies
        if kind == PODS:
            return self._core.list_pod_for_all_namespaces
        return self._core.list_namespace

    def list(self, kind: str) -> tuple[list[Mapping[str, Any]], str]:
        """Every object of ``kind`` (API JSON) and the list's resourceVersion."""
        resp = self._lister(kind)(_preload_content=False, _request_timeout=self.timeout)
        data = json.loads(resp.data)
        return list(data.get("items") or []), str((data.get("metadata") or {}).get("resourceVersion") or "")

    def watch(self, kind: str, resource_version: str, stop: threading.Event) -> Iterator[tuple[str, Mapping[str, Any]]]:
        """(type, object) from ``resource_version`` on, until ``stop``; :class:`Expired` on 410."""
        rv = resource_version
        while not stop.is_set():
            w = self._watch()
            try:
                for event in w.stream(
                    self._lister(kind),
                    resource_version=rv,
                    timeout_seconds=WATCH_SECONDS,
                    allow_watch_bookmarks=True,
                    _request_timeout=WATCH_SECONDS + self.timeout,
                ):
                    raw = event.get("raw_object") or {}
                    etype = str(event.get("type") or "")
                    if etype == "ERROR":
                        if raw.get("code") == 410:
                            raise Expired(kind)
                        raise IOFailure(f"watch {kind}: {raw.get('message', raw)}")
                    rv = str((raw.get("metadata") or {}).get("resourceVersion") or rv)
                    if etype == "BOOKMARK":
                        continue
                    yield etype, raw
                    if stop.is_set():
                        break
            except self._api_exception as err:
                if getattr(err, "status", None) == 410:
                    raise Expired(kind) from None
                raise
            finally:
                w.stop()


@dataclass
class State:
    """What the agent has seen, keyed as the API keys it."""

    policies: dict[tuple[str, str], Mapping[str, Any]] = field(default_factory=dict)
    pods: dict[tuple[str, str], Mapping[str, Any]] = field(default_factory=dict)
    namespaces: dict[str, Mapping[str, Any]] = field(default_factory=dict)

    def update(self, event: Event) -> None:
        if event.type == "LIST":
            self.replace(event.kind, event.objects)
            return
        for obj in event.objects:
            meta = obj.get("metadata") or {}
            name, namespace = str(meta.get("name") or ""), str(meta.get("namespace") or "")
            if event.kind == NAMESPACES:
                if event.type == "DELETED":
                    self.namespaces.pop(name, None)
                else:
                    self.namespaces[name] = obj
                continue
            target = self.policies if event.kind == POLICIES else self.pods
            if event.type == "DELETED":
                target.pop((namespace, name), None)
            else:
                target[(namespace, name)] = obj

    def replace(self, kind: str, objects: tuple[Mapping[str, Any], ...]) -> None:
        if kind == NAMESPACES:
            self.namespaces = {str((o.get("metadata") or {}).get("name") or ""): o for o in objects}
            return
        keyed = {
            (str((o.get("metadata") or {}).get("namespace") or ""), str((o.get("metadata") or {}).get("name") or "")): o
            for o in objects
        }
        if kind == POLICIES:
            self.policies = keyed
        else:
            self.pods = keyed


def parsed(state: State) -> tuple[list[Policy], list[Pod], dict[str, dict[str, str]]]:
    """The state as model values; a policy that does not parse is left out (and logged)."""
    policies = []
    for key, obj in sorted(state.policies.items()):
        try:
            policies.append(parse_policy(obj))
        except KvnetError as err:
            log.error("MultiNetworkPolicy %s/%s ignored: %s", key[0], key[1], err.msg)
    pods = []
    for key, obj in sorted(state.pods.items()):
        try:
            pods.append(parse_pod(obj))
        except KvnetError as err:
            log.warning("pod %s/%s ignored: %s", key[0], key[1], err.msg)
    namespaces = dict(namespace_labels(o) for o in state.namespaces.values())
    return policies, pods, namespaces


def netns_path(rules: PodRules, netns_dir: str) -> str | None:
    """The pod's netns path: the ``kvnet.io/netns`` annotation names a netns in ``netns_dir``
    (a bare name, as ``ip netns`` names them; nothing else is trusted)."""
    name = rules.netns
    if not name or "/" in name or name in (".", ".."):
        return None
    return os.path.join(netns_dir, name)


@dataclass(frozen=True)
class Applied:
    """A pod's tables as applied: in which netns, the script, the families it declared."""

    path: str
    text: str
    tables: tuple[str, ...] = (FAMILY,)
    bridged: frozenset[str] = frozenset()


class Agent:
    """Cached state, the wanted tables and the applied ones; the reconcile loop."""

    def __init__(self, source: KubeSource, node: str, *, netns_dir: str = "/var/run/netns", nft: Nft | None = None):
        self.source = source
        self.node = node
        self.netns_dir = netns_dir
        self.nft = nft or Nft()
        self.state = State()
        self.applied: dict[tuple[str, str], Applied] = {}
        self.stop = threading.Event()
        self._events: queue.Queue[Event] = queue.Queue()

    # --- reconcile ------------------------------------------------------------------------

    def bridged(self, key: tuple[str, str], rules: PodRules, path: str) -> frozenset[str]:
        """The policed interfaces of ``rules`` that are bridge ports in the pod netns (a VM's
        attachment behind kvnet's binding); the others are filtered as a pod's."""
        names = {a.interface for a in rules.attachments}
        try:
            masters = self.nft.masters(path)
        except IOFailure as err:
            log.warning("pod %s/%s: links of %s not read (%s); policed as a pod's", key[0], key[1], path, err.msg)
            return frozenset()
        out = frozenset(n for n in names if masters.get(n))
        for name in sorted(names - out):
            if name.startswith("pod") and f"tap{name[3:]}" in masters:
                log.error(
                    "pod %s/%s: %s is tc-redirected to tap%s (the binding's redirect mode): "
                    "that traffic bypasses netfilter and is not policed",
                    key[0],
                    key[1],
                    name,
                    name[3:],
                )
        return out

    def reconcile(self) -> None:
        policies, pods, namespaces = parsed(self.state)
        wanted = wanted_rules(policies, pods, namespaces, node=self.node)
        desired: dict[tuple[str, str], Applied] = {}
        for key, rules in wanted.items():
            path = netns_path(rules, self.netns_dir)
            if path is None or not os.path.exists(path):
                log.warning("pod %s/%s: no netns known (annotation kvnet.io/netns); not policed", *key)
                continue
            bridged = self.bridged(key, rules, path)
            try:
                desired[key] = Applied(path, script(rules, bridged), families(rules, bridged), bridged)
            except KvnetError as err:
                log.error("pod %s/%s not policed: %s", key[0], key[1], err.msg)
        for key, stale in list(self.applied.items()):
            if key not in desired or desired[key].path != stale.path:
                self._delete(key, stale)
        for key, want in desired.items():
            old = self.applied.get(key)
            if old == want:
                continue
            try:
                if want.bridged:
                    self.nft.bridge_netfilter(want.path)
                self.nft.apply(want.path, want.text)
                gone = tuple(f for f in (old.tables if old else ()) if f not in want.tables)
                if gone:
                    self.nft.delete(want.path, gone)
            except IOFailure as err:
                log.error("pod %s/%s: %s %s", key[0], key[1], err.msg, err.details)
                continue
            where = f" (bridged: {', '.join(sorted(want.bridged))})" if want.bridged else ""
            tables = ", ".join(f"{f} {TABLE}" for f in want.tables)
            log.info("pod %s/%s: %s applied in %s%s", key[0], key[1], tables, want.path, where)
            self.applied[key] = want

    def _delete(self, key: tuple[str, str], old: Applied) -> None:
        self.applied.pop(key, None)
        path = old.path
        if not os.path.exists(path):
            log.info("pod %s/%s: netns %s is gone, and its table with it", key[0], key[1], path)
            return
        try:
            self.nft.delete(path, old.tables)
            log.info("pod %s/%s: table removed from %s", key[0], key[1], path)
        except IOFailure as err:
            log.error("pod %s/%s: %s %s", key[0], key[1], err.msg, err.details)

    def sweep(self) -> None:
        """Remove this agent's tables from every netns in ``netns_dir`` that no pod it polices
        uses: what an agent killed without its clean-up (SIGKILL, a crash) left behind."""
        mine = {a.path for a in self.applied.values()}
        try:
            names = sorted(os.listdir(self.netns_dir))
        except OSError as err:
            log.warning("cannot list %s: %s", self.netns_dir, err)
            return
        for name in names:
            path = os.path.join(self.netns_dir, name)
            if path in mine:
                continue
            try:
                listed = self.nft.tables(path)
                stale = tuple(f for f in FAMILIES if f"{f} {TABLE}" in listed)
                if stale:
                    self.nft.delete(path, stale)
                    log.info("netns %s: stale table removed (no pod policed there)", path)
            except IOFailure as err:
                log.debug("netns %s not swept: %s", path, err.msg)

    def remove_all(self) -> None:
        for key, old in list(self.applied.items()):
            self._delete(key, old)

    # --- running --------------------------------------------------------------------------

    def run_once(self) -> None:
        """List the three kinds, apply the tables once (they stay: ``--once``)."""
        for kind in KINDS:
            items, _ = self.source.list(kind)
            self.state.replace(kind, tuple(items))
        self.reconcile()

    def _follow(self, kind: str) -> None:
        failures: tuple[type[BaseException], ...] = (KvnetError, *self.source.api_errors)
        while not self.stop.is_set():
            try:
                items, rv = self.source.list(kind)
                self._events.put(Event(kind, "LIST", tuple(items)))
                for etype, obj in self.source.watch(kind, rv, self.stop):
                    self._events.put(Event(kind, etype, (obj,)))
            except Expired:
                log.info("watch %s: resourceVersion expired; listing again", kind)
                continue
            except failures as err:
                log.warning("watch %s failed (%s); listing again in %.0f s", kind, err, RETRY_SECONDS)
                self.stop.wait(RETRY_SECONDS)

    def run(self, *, settle: float = 0.05) -> None:
        """Follow the API until :attr:`stop` is set; then remove every table applied."""
        threads = [threading.Thread(target=self._follow, args=(k,), name=f"watch-{k}", daemon=True) for k in KINDS]
        for t in threads:
            t.start()
        seen: set[str] = set()
        swept = False
        try:
            while not self.stop.is_set():
                try:
                    event = self._events.get(timeout=0.5)
                except queue.Empty:
                    continue
                batch = [event]
                time.sleep(settle)  # let a burst of events arrive: one reconcile for all of them
                while True:
                    try:
                        batch.append(self._events.get_nowait())
                    except queue.Empty:
                        break
                for ev in batch:
                    self.state.update(ev)
                    if ev.type == "LIST":
                        seen.add(ev.kind)
                if seen >= set(KINDS):  # no table from a partial view of the cluster
                    self.reconcile()
                    if not swept:
                        self.sweep()
                        swept = True
        finally:
            self.stop.set()
            self.remove_all()
