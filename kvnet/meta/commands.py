"""The meta-plugin's commands: Multus's ADD, DEL, CHECK, STATUS and GC over delegate plugins.

One pod attachment list is computed from the config and the pod's annotations
(``kvnet.meta.delegates``) and planned once (``kvnet.meta.plan``). It is saved to the
delegate cache before the first delegate runs; each delegate then runs as a libcni
network with Multus's interface names, CNI_ARGS and per-selection runtime config. A
failing delegate undoes every delegate before it (and itself), in reverse. DEL works
from the cache alone, so it succeeds when the pod or the API is gone.

Everything outside comes in through ``kvnet.meta.ports``; the wiring
(``kvnet.meta.wiring``) builds the production side effects, tests pass small fakes.
"""

from __future__ import annotations

import copy
import functools
import ipaddress
import json
import logging
import os
import threading
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, replace
from typing import Any, TypeVar

from kvnet.cni import libcni_cache
from kvnet.cni.delegate import CallGuard, DelegateEnv, PluginFailed, acting_for, current_guard, libcni_text
from kvnet.cni.protocol import CniRequest
from kvnet.core.errors import (
    DelegateFailed,
    InvalidConfig,
    IOFailure,
    KvnetError,
    NetlinkFailure,
    StatusNotAvailable,
    UnknownContainer,
)
from kvnet.core.model import DeviceInfo, NetworkStatus
from kvnet.meta import cache, events, gateways
from kvnet.meta import status as network_status
from kvnet.meta.cache import CachedDelegate
from kvnet.meta.config import MultusConfig
from kvnet.meta.delegates import load_delegates, main_delegate
from kvnet.meta.plan import PlannedDelegate, cached_capability_args, one_at_a_time, plan, schedule
from kvnet.meta.pod import PodArgs, check_readiness_on_del, get_pod, pod_args, wait_readiness
from kvnet.meta.ports import KubeApi, RouteEditor, Runner, Seams, client_go_text
from kvnet.meta.wording import cmd_err, cmd_prefix, delegate_check_err, delegate_del_err, plugin_err, reword

log = logging.getLogger("kvnet.meta")


def add(
    request: CniRequest,
    *,
    conf: MultusConfig,
    api: KubeApi | None,
    runner: Runner,
    seams: Seams = Seams(),
) -> Mapping[str, Any]:
    """CNI ADD: every attachment of the pod, the main network's result returned."""
    pa = pod_args(request)
    wait_readiness(conf, pa, seams)
    pod = get_pod(api, pa, on_del=False, seams=seams)
    if pod is None and api is not None and pa.name:
        log.warning("pod %s not found, exiting with an empty CNI result", pa.label)
        return empty_cni_result(request)
    ref = events.PodRef.of(pod) if pod is not None and seams.events is not None else None
    try:
        return _add_pod(request, conf, api, pod, pa, seams, ref, runner)
    except KvnetError as err:
        if ref is not None and seams.events is not None:
            seams.events.post(events.add_failed(ref, err.msg))
        raise


def _add_pod(
    request: CniRequest,
    conf: MultusConfig,
    api: KubeApi | None,
    pod: Mapping[str, Any] | None,
    pa: PodArgs,
    seams: Seams,
    ref: events.PodRef | None,
    runner: Runner,
) -> Mapping[str, Any]:
    delegates = load_delegates(conf, api, pod, pa, seams.allocator)
    if not delegates:
        raise InvalidConfig(f"{cmd_prefix(pa)}no delegate to run")
    planned = plan(request, conf, pa, delegates, seams.devinfo, validate=True)
    try:
        cache.save(conf.cni_dir, request.container_id, delegates)
    except KvnetError as err:
        raise cmd_err(pa, err, "error saving the delegates") from err
    log.info(
        "pod %s: container %s gets %s",
        pa.label,
        request.container_id,
        ", ".join(f"{p.ifname}={p.delegate.name}" for p in planned),
    )

    # The cache stays whatever happens from here on (Multus's CmdAdd never removes it):
    # the runtime's DEL after a failed ADD undoes every delegate from it.
    done, failed = _run_delegates(request, conf, pa, planned, runner, seams)
    main_result: Mapping[str, Any] | None = None
    statuses: list[NetworkStatus] = []
    # what the one-by-one run would have reported, in plan order, up to its failure
    for p in planned[: failed.index + 1 if failed is not None else len(planned)]:
        outcome = done[p.index]
        d = p.delegate
        if outcome.added and ref is not None and seams.events is not None:
            # Multus's DelegateAdd: "Add net1 [ips] from ns/nad"
            seams.events.post(events.added_interface(ref, p.ifname, events.result_ips(outcome.own or {}), d.name))
        if d.master or main_result is None:
            main_result = outcome.result
        statuses.extend(outcome.statuses)
    if failed is not None:
        failure = failed.error
        if failed.undo:  # every delegate that ran is deleted, in reverse plan order
            _rollback(request, conf, pa, [planned[i] for i in sorted(done)], runner, seams)
            if isinstance(failure, KvnetError):
                raise plugin_err(pa, planned[failed.index].delegate.network_name, failure) from failure
        if failure is not None:
            raise failure

    # with no entry at all nothing is written (Multus's SetPodNetworkStatusAnnotation skips a nil list)
    if (
        statuses
        and api is not None
        and pod is not None
        and conf.kubeconfig
        and not conf.is_system_namespace(pa.namespace)
    ):
        try:
            api.set_network_status(pa.namespace, pa.name, network_status.format_network_status(statuses))
        except KvnetError as err:
            raise reword(err, f"{cmd_prefix(pa)}error setting the networks status: {client_go_text(err)}") from err
    return main_result or empty_cni_result(request)


def empty_cni_result(request: CniRequest) -> dict[str, Any]:
    """Multus's ``emptyCNIResult`` as its ``Print`` writes it, whatever the version: the
    runtime's interface in its netns, one address ``0.0.0.0/0`` with gateway ``0.0.0.0``,
    no dns (``Result.MarshalJSON`` drops an empty one)."""
    return {
        "cniVersion": request.cni_version,
        "interfaces": [{"name": request.ifname, "sandbox": request.netns}],
        "ips": [{"address": "0.0.0.0/0", "gateway": "0.0.0.0"}],
    }


class _Undo(Exception):
    """A delegate's own ADD failed: what ran is deleted before ``err`` is raised."""

    def __init__(self, err: Exception) -> None:
        super().__init__(str(err))
        self.err = err


@dataclass(frozen=True)
class _Outcome:
    """One delegate's ADD as :func:`_attempt` ran it: the result (with the ``default-route``
    edits) and the delegate's own one, its network-status entries; or the ``error``, with
    ``undo`` when the delegate itself failed (the rollback follows) and ``added`` when its
    ADD had succeeded (the Event is posted, as Multus does before it builds the status)."""

    index: int
    result: Mapping[str, Any] | None = None
    own: Mapping[str, Any] | None = None
    statuses: tuple[NetworkStatus, ...] = ()
    error: Exception | None = None
    undo: bool = False
    added: bool = False


def _attempt(
    request: CniRequest, conf: MultusConfig, pa: PodArgs, p: PlannedDelegate, runner: Runner, seams: Seams
) -> _Outcome:
    """One delegate's ADD and what follows it, its failure kept as a value."""
    try:
        result, own, info = _add_one(request, conf, pa, p, runner, seams)
    except _Undo as undo:
        return _Outcome(p.index, error=undo.err, undo=True)
    except Exception as err:  # after the delegate's ADD: raised as it is, nothing undone
        return _Outcome(p.index, error=err)
    d = p.delegate
    try:
        # from the delegate's own result, as Multus's CreateNetworkStatuses(tmpResult)
        statuses = network_status.status_from_result(d.name, own, default=d.master, device_info=info)
    except KvnetError as err:
        return _Outcome(p.index, result, own, error=cmd_err(pa, err, "error setting network statuses"), added=True)
    return _Outcome(p.index, result, own, tuple(statuses), added=True)


T = TypeVar("T")

POOL_THREADS = 256  # the shared workers' ceiling; a thread is only made when none is idle
_pool: ThreadPoolExecutor | None = None
_pool_lock = threading.Lock()


def _workers() -> ThreadPoolExecutor:
    """One pool for the process (the daemon's calls share it; each call bounds its own use
    by ``delegateParallelism``), made on the first wave that runs delegates at once. Its
    threads live as long as the process: a delegate dies with the thread that started it
    (``PR_SET_PDEATHSIG``, ``kvnet.cni.delegate``), so a worker must not end under one."""
    global _pool
    with _pool_lock:
        if _pool is None:
            _pool = ThreadPoolExecutor(POOL_THREADS, thread_name_prefix="delegate")
        return _pool


def _for_call(guard: CallGuard | None, fn: Callable[[], T]) -> T:
    """Run ``fn`` in a worker on behalf of the call's guard: the delegates it starts inherit
    the container lock and are killed when the call is cancelled, as in the call's thread."""
    with acting_for(guard):
        return fn()


def _at_once(
    todo: Sequence[PlannedDelegate],
    width: int,
    run: Callable[[PlannedDelegate], T],
    done: Callable[[PlannedDelegate, T], None],
    wanted: Callable[[PlannedDelegate], bool] = lambda p: True,
) -> None:
    """``run`` each of ``todo`` in the shared workers, up to ``width`` at once, each started in
    ``todo``'s order as soon as a place is free and it shares nothing of
    :func:`kvnet.meta.plan.one_at_a_time` with one running (the next of those starts when the
    one before ends); ``done`` gets each outcome in this thread, and a delegate no longer
    ``wanted`` does not start. A wave of one runs in this thread."""
    todo = list(todo)
    if len(todo) <= 1 or width <= 1:
        for p in todo:
            if wanted(p):
                done(p, run(p))
        return
    guard = current_guard()
    pool = _workers()
    running: dict[Future[T], PlannedDelegate] = {}
    keys = {id(p): one_at_a_time(p.delegate) for p in todo}
    busy: set[str] = set()  # what the delegates running now hold (one_at_a_time)
    try:
        while todo or running:
            todo = [p for p in todo if wanted(p)]
            while len(running) < width:
                ready = next((q for q in todo if not keys[id(q)] & busy), None)
                if ready is None:
                    break
                todo.remove(ready)
                busy |= keys[id(ready)]
                running[pool.submit(_for_call, guard, functools.partial(run, ready))] = ready
            if not running:
                break
            finished, _ = wait(running, return_when=FIRST_COMPLETED)
            for fut in finished:
                p = running.pop(fut)
                busy -= keys[id(p)]
                done(p, fut.result())
    except BaseException:
        # interrupted here (a signal): the delegates still running end first (a cancelled
        # call's are killed), then the interrupted call undoes itself from the cache
        wait(running)
        raise


def _run_delegates(
    request: CniRequest,
    conf: MultusConfig,
    pa: PodArgs,
    planned: Sequence[PlannedDelegate],
    runner: Runner,
    seams: Seams,
) -> tuple[dict[int, _Outcome], _Outcome | None]:
    """Every delegate's ADD by :func:`kvnet.meta.plan.schedule`: the waves one after the other,
    up to ``delegateParallelism`` delegates of a wave at once (:func:`_at_once`). The outcomes
    by plan index, and the failure the one-by-one run would report: the first failing
    delegate in plan order. Once one fails, only delegates before it in plan order still
    start (the one-by-one run would have run them, and one of them may fail first); the ones
    already running finish. Every delegate that started is in the outcomes, so the rollback
    deletes each of them."""
    done: dict[int, _Outcome] = {}
    stop = len(planned)

    def record(p: PlannedDelegate, outcome: _Outcome) -> None:
        nonlocal stop
        done[p.index] = outcome
        if outcome.error is not None:
            stop = min(stop, p.index)

    width = conf.kvnet.delegate_parallelism
    for wave in schedule(planned, width, conf.kvnet.parallel_plugins):
        _at_once(
            [planned[i] for i in wave if i < stop],
            width,
            lambda p: _attempt(request, conf, pa, p, runner, seams),
            record,
            lambda p: p.index < stop,
        )
    return done, done[stop] if stop < len(planned) else None


def _add_one(
    request: CniRequest,
    conf: MultusConfig,
    pa: PodArgs,
    p: PlannedDelegate,
    runner: Runner,
    seams: Seams,
) -> tuple[dict[str, Any], dict[str, Any], DeviceInfo | None]:
    """One delegate's ADD (Multus's ``DelegateAdd``), its ``default-route`` edits and its
    device-info (a missing or unreadable file is only logged, as Multus does): the result
    with the edits, the delegate's own result, the device-info.

    A failure of the delegate itself is raised as :class:`_Undo` (the caller deletes what
    ran, in reverse, before it raises the error: Multus's ``delPlugins`` in ``CmdAdd``); a
    failure after the delegate succeeded is raised as it is.
    """
    d = p.delegate
    if p.device_info_file and d.resource_name and d.device_id and seams.devinfo is not None:
        try:
            seams.devinfo.copy_from_dp(d.resource_name, d.device_id, d.name, request.container_id, p.ifname)
        except KvnetError as err:
            log.debug("pod %s: %s: no device-plugin device-info: %s", pa.label, d.name, err.msg)
    try:
        result = runner.run_network("ADD", d.conf, p.add_env, runtime_config=p.runtime_config) or {}
    except Exception as err:  # whatever the delegate raised, what ran is undone first
        raise _Undo(err) from err
    log.info("pod %s: added %s from %s", pa.label, p.ifname, d.name)
    own = copy.deepcopy(dict(result))
    result = _move_default_route(request, conf, pa, d, p.ifname, result, seams.routes)
    info = None
    if p.device_info_file and seams.devinfo is not None:
        try:
            info = seams.devinfo.load(d.name, request.container_id, p.ifname)
        except KvnetError as err:
            log.debug("pod %s: %s: device-info not read: %s", pa.label, d.name, err.msg)
    return result, own, info


def _move_default_route(
    request: CniRequest,
    conf: MultusConfig,
    pa: PodArgs,
    d: CachedDelegate,
    ifname: str,
    result: Mapping[str, Any],
    routes: RouteEditor | None,
) -> dict[str, Any]:
    """``default-route`` after one delegate's ADD, for a result with interfaces or IPs (as
    Multus's ``CmdAdd``): drop the default route of filtered interfaces, set the requested
    one, in the pod and in the returned result; and edit libcni's cached result as
    Multus's ``DeleteDefaultGWCache`` / ``AddDefaultGWCache`` do (both families dropped
    there whenever a gateway is requested), so DEL's ``prevResult`` is Multus's.
    """
    out = copy.deepcopy(dict(result))
    if not (out.get("interfaces") or out.get("ips") or out.get("ip4") or out.get("ip6")):
        return out
    wanted = d.gateway_request or ()
    families = {
        4: d.is_filter_v4_gateway or any(ipaddress.ip_address(g).version == 4 for g in wanted),
        6: d.is_filter_v6_gateway or any(ipaddress.ip_address(g).version == 6 for g in wanted),
    }
    cache_v4 = d.is_filter_v4_gateway or bool(wanted)
    cache_v6 = d.is_filter_v6_gateway or bool(wanted)
    if not any(families.values()) and not (cache_v4 or cache_v6):
        return out
    if routes is None:
        err = NetlinkFailure(f"network {d.name}: default-route is requested but no route editor is configured")
        raise cmd_err(pa, err, "error setting default gateway")
    cached = str(libcni_cache.cache_path(conf.cni_dir, d.network_name, request.container_id, ifname))
    try:
        for fam, drop in families.items():
            if drop:
                routes.delete_default(request.netns, ifname, fam)
    except KvnetError as err:
        raise cmd_err(pa, err, "error deleting default gateway") from err
    if cache_v4 or cache_v6:
        try:
            gateways.delete_default_gw_cache(cached, cache_v4, cache_v6)
        except KvnetError as err:
            raise cmd_err(pa, err, "error deleting default gateway in cache") from err
    try:
        for gw in wanted:
            routes.set_default(request.netns, ifname, gw)
    except KvnetError as err:
        raise cmd_err(pa, err, "error setting default gateway") from err
    if wanted:
        try:
            gateways.add_default_gw_cache(cached, wanted)
        except KvnetError as err:
            raise cmd_err(pa, err, "error setting default gateway in cache") from err
    kept = []
    for r in out.get("routes") or []:
        dst = str(r.get("dst", "")) if isinstance(r, Mapping) else ""
        fam = 6 if ":" in dst else 4
        if dst in ("0.0.0.0/0", "::/0") and families[fam]:
            continue
        kept.append(r)
    for gw in wanted:
        kept.append({"dst": "0.0.0.0/0" if ipaddress.ip_address(gw).version == 4 else "::/0", "gw": gw})
    if kept or "routes" in out:
        out["routes"] = kept
    return out


def _delete_all(
    request: CniRequest,
    conf: MultusConfig,
    pa: PodArgs,
    planned: Sequence[PlannedDelegate],
    runner: Runner,
    seams: Seams,
    *,
    cached_caps: bool = False,
    codes: list[int] | None = None,
) -> list[str]:
    """``delPlugins``: DEL the planned delegates in reverse; every one is tried (the
    failures' CNI codes go to ``codes`` when given: 999 for what is not a kvnet error). With
    ``delegateParallelism`` above 1 the ADD's waves run backwards, each wave's delegates at
    once; the failures are still reported in the one-by-one order.

    With ``cached_caps`` (DEL from the delegate cache, which does not keep port
    mappings or bandwidth) the capability args libcni cached at ADD fill the gaps, so
    portmap and bandwidth can tear down what they set up.
    """

    def one(p: PlannedDelegate) -> tuple[str, int] | None:
        d = p.delegate
        rc = dict(p.runtime_config)
        if cached_caps:
            rc = {**cached_capability_args(conf, d, request.container_id, p.ifname), **rc}
        failed = None
        try:
            runner.run_network("DEL", d.conf, p.env, runtime_config=rc)
            log.info("pod %s: deleted %s (%s) from %s", pa.label, p.ifname, d.plugin_type, d.name)
        except Exception as err:  # every delegate is tried, whatever one of them raised
            msg = libcni_text(err) if isinstance(err, KvnetError) else f"{type(err).__name__}: {err}"
            failed = (delegate_del_err(d, msg), err.cni_code if isinstance(err, KvnetError) else 999)
            log.error("pod %s: DEL of %s on %s failed: %s", pa.label, d.name, p.ifname, msg)
        if p.device_info_file and seams.devinfo is not None:
            try:
                seams.devinfo.remove(d.name, request.container_id, p.ifname)
            except KvnetError as err:
                log.debug("pod %s: device-info of %s: %s", pa.label, d.name, err.msg)
        return failed

    # the ADD's waves backwards, each one's delegates at once (docs/meta-plugin.md, "Parallel
    # delegates"): what a delegate acts on is deleted after it, the main network last
    outcomes: dict[int, tuple[str, int] | None] = {}
    width = conf.kvnet.delegate_parallelism
    for wave in reversed(schedule(planned, width, conf.kvnet.parallel_plugins)):
        _at_once([planned[i] for i in reversed(wave)], width, one, lambda p, got: outcomes.update({id(p): got}))
    errors: list[str] = []
    for p in reversed(planned):  # the failures in the one-by-one run's order
        got = outcomes.get(id(p))
        if got is not None:
            errors.append(got[0])
            if codes is not None:
                codes.append(got[1])
    return errors


def _rollback(
    request: CniRequest,
    conf: MultusConfig,
    pa: PodArgs,
    planned: Sequence[PlannedDelegate],
    runner: Runner,
    seams: Seams,
) -> None:
    errors = _delete_all(request, conf, pa, planned, runner, seams)
    for e in errors:
        log.error("pod %s: rollback: %s", pa.label, e)


def delete(
    request: CniRequest,
    *,
    conf: MultusConfig,
    api: KubeApi | None,
    runner: Runner,
    seams: Seams = Seams(),
    keep_cache: bool = False,
) -> None:
    """CNI DEL: from the cache (or, without one, from the pod); every delegate is tried.
    ``keep_cache``: the cache stays (an interrupted ADD undoing itself: the runtime's DEL
    that follows finds it)."""
    pa = pod_args(request)
    check_readiness_on_del(conf, pa)
    delegates = cache.load(conf.cni_dir, request.container_id)
    from_cache = delegates is not None
    if delegates is None:
        # only a DEL without the cache needs the pod: with it, DEL never waits for the API
        pod = get_pod(api, pa, on_del=True, seams=seams)
        if pod is None:
            log.error(
                "pod %s: no cached delegates for container %s and no pod: nothing to delete",
                pa.label,
                request.container_id,
            )
            return
        got: list[CachedDelegate] = []
        try:
            delegates = tuple(load_delegates(conf, api, pod, pa, None, use_devices=False, partial=got))
        except KvnetError as err:
            if not got:  # the cluster network itself failed: Multus's CmdDel returns that error
                raise
            # Multus's CmdDel goes on with the delegates it had when TryLoadPodDelegates failed
            log.error("pod %s: failed to get delegates: %s, but continue to delete clusterNetwork", pa.label, err.msg)
            delegates = tuple(got)
    delegates = tuple(
        replace(d, conf={**d.conf, "cniVersion": conf.cni_version})
        if d.is_conflist and not d.conf.get("cniVersion") and conf.cni_version
        else d
        for d in delegates
    )
    # network-status is left as it is (Multus's CmdDel never writes it)
    planned = plan(request, conf, pa, delegates, seams.devinfo)
    codes: list[int] = []
    errors = _delete_all(request, conf, pa, planned, runner, seams, cached_caps=True, codes=codes)
    if from_cache and not keep_cache and not (errors and conf.retry_delete_on_error):
        cache.remove(conf.cni_dir, request.container_id)
    if errors and not from_cache and cache.rebuilt_del_is_moot(conf.cni_dir, request.container_id, codes):
        # nothing of the container was recorded and no delegate could even read its call:
        # a retry would fail the same way forever, with nothing left to undo (docs/reliability.md)
        log.warning("pod %s: DEL ends although delegates failed, nothing was added: %s", pa.label, " / ".join(errors))
        return
    if errors:
        raise DelegateFailed(" / ".join(errors))


def check(
    request: CniRequest,
    *,
    conf: MultusConfig,
    api: KubeApi | None,
    runner: Runner,
    seams: Seams = Seams(),
) -> None:
    """CNI CHECK: every cached delegate checked, in order."""
    pa = pod_args(request)
    delegates = cache.load(conf.cni_dir, request.container_id)
    if delegates is None:
        raise UnknownContainer(f"{cmd_prefix(pa)}no cached delegates for container {request.container_id}")
    for p in plan(request, conf, pa, delegates, None):
        try:
            runner.run_network("CHECK", p.delegate.conf, p.env, runtime_config=p.runtime_config)
        except KvnetError as err:
            raise delegate_check_err(p.delegate, err) from err


def status(
    request: CniRequest,
    *,
    conf: MultusConfig,
    api: KubeApi | None,
    runner: Runner,
    seams: Seams = Seams(),
) -> None:
    """CNI STATUS (1.1.0): not ready until the readiness file exists; then the main network's STATUS."""
    if conf.readiness_indicator_file and not os.path.exists(conf.readiness_indicator_file):
        raise StatusNotAvailable(
            f"kvnet: the default network is not ready: readinessindicatorfile {conf.readiness_indicator_file} does not exist"
        )
    d = main_delegate(conf, api)
    try:
        runner.run_network("STATUS", d.conf, _bare_env(request))
    except PluginFailed as err:
        raise reword(err, err.cni_msg) from err  # the delegate's CNI error as it is (Multus's confStatus)
    except KvnetError as err:
        what = "error in STATUS command" if d.is_conflist else "error in getting result from StatusNetworkList"
        raise reword(err, f"{what}: {err.msg}") from err


def gc(
    request: CniRequest,
    *,
    conf: MultusConfig,
    api: KubeApi | None,
    runner: Runner,
    seams: Seams = Seams(),
) -> None:
    """CNI GC (1.1.0), as Multus's ``CmdGC``: after the readiness wait, the main network's
    GC with every attachment of the results cache as valid (the runtime's
    ``cni.dev/valid-attachments`` are not used), so no cached attachment is deleted."""
    wait_readiness(conf, None, seams)
    d = main_delegate(conf, api)
    valid = gather_valid_attachments(conf.cni_dir)
    try:
        runner.run_network("GC", d.conf, _bare_env(request), valid_attachments=valid)
    except KvnetError as err:
        raise reword(err, f"error in GC command: {err.msg}") from err


def gather_valid_attachments(cni_dir: str) -> list[dict[str, str]]:
    """Multus's ``gatherValidAttachmentsFromCache``: ``{containerID, ifname}`` of every file
    of ``<cniDir>/results`` in name order, files that cannot be read or have no container
    ID or interface skipped; a results folder that cannot be listed is an error."""
    folder = os.path.join(cni_dir, "results")
    try:
        names = sorted(os.listdir(folder))
    except OSError as err:
        why = err.strerror or str(err)
        raise IOFailure(f"error in gather valid attachments: open {folder}: {why[:1].lower()}{why[1:]}") from None
    out = []
    for name in names:
        path = os.path.join(folder, name)
        try:
            with open(path, "rb") as f:
                doc = json.loads(f.read())
        except (OSError, ValueError) as err:
            log.error("gatherValidAttachmentsFromCache: cannot read %s, skipped: %s", path, err)
            continue
        cid = doc.get("containerId") if isinstance(doc, dict) else None
        ifname = doc.get("ifName") if isinstance(doc, dict) else None
        if not isinstance(cid, str) or not isinstance(ifname, str) or not cid or not ifname:
            log.error("gatherValidAttachmentsFromCache: invalid cache %s, skipped", path)
            continue
        out.append({"containerID": cid, "ifname": ifname})
    return out


def _bare_env(request: CniRequest) -> DelegateEnv:
    """STATUS and GC are about the network, not a container."""
    return DelegateEnv("", "", "", "", request.path)
