"""The differential lane's table: every scenario, run through Multus 4.3 and kvnet.

A row names its set-up (NADs, pods, config keys, conf files), its CNI calls, and the
differences it expects: ``deliberate`` names entries of :data:`DELIBERATE` (kvnet differs
on purpose; docs/multus-compat.md says why), ``known`` lists what kvnet still gets wrong
(its test is a strict xfail until the fix lands). The rules of :data:`GLOBAL_RULES` apply
to every row: each recognises exactly one systematic difference.
"""

from __future__ import annotations

import json
import re
from typing import Any

from differential.harness import MAIN, Difference, bridge_net
from differential.model import (
    ADD,
    CHECK,
    DEL,
    NO_POD_ENV,
    STATUS,
    ApiFault,
    DeleteNetns,
    DeletePod,
    Deliberate,
    Known,
    Nad,
    Pod,
    Readiness,
    Scenario,
    Step,
)

BLUE = bridge_net("kvd-blue", "10.101.0.0/24")
RED = bridge_net("kvd-red", "10.102.0.0/24")
BLUE_GW = bridge_net(
    "kvd-blue",
    "10.101.0.0/24",
    isGateway=True,
    ipam={
        "type": "host-local",
        "ranges": [[{"subnet": "10.101.0.0/24", "gateway": "10.101.0.1"}]],
        "routes": [{"dst": "0.0.0.0/0"}],
    },
)
MAIN11 = {**MAIN, "cniVersion": "1.1.0"}


def rec(**conf: Any) -> dict[str, Any]:
    """A recorder delegate (kvnet.lab.recorder) with these config keys."""
    return {"cniVersion": "1.0.0", "type": "recorder", **conf}


def networks(*elements: dict[str, Any]) -> str:
    """The networks annotation in its JSON form."""
    return json.dumps(list(elements))


def gc_step(valid: list[dict[str, str]]) -> Step:
    return Step("GC", env=NO_POD_ENV, config={"cni.dev/valid-attachments": valid})


# --- matching helpers ----------------------------------------------------------------------


def _msgs(d: Difference) -> tuple[str, str] | None:
    if d.aspect == "error" and d.path == "msg" and isinstance(d.multus, str) and isinstance(d.kvnet, str):
        return d.multus, d.kvnet
    return None


def _has(d: Difference, in_multus: str, in_kvnet: str) -> bool:
    """An error message difference where Multus's says ``in_multus`` and kvnet's ``in_kvnet``."""
    m = _msgs(d)
    return m is not None and in_multus in m[0] and in_kvnet in m[1]


def _code_999(d: Difference) -> bool:
    return d.path == "code" and d.multus == 999 and isinstance(d.kvnet, int) and d.kvnet != 999


def _error_version(d: Difference) -> bool:
    return d.path == "cniVersion" and d.multus == "<absent>" and isinstance(d.kvnet, str)


def _cni_path(d: Difference) -> bool:
    """kvnet's delegate CNI_PATH: the runtime's dirs without repeats, then /usr/lib/cni."""
    if not d.path.endswith("env.CNI_PATH") or not isinstance(d.multus, str) or not isinstance(d.kvnet, str):
        return False
    multus = list(dict.fromkeys(d.multus.split(":")))
    return d.kvnet.split(":") in ([*multus, "/usr/lib/cni"], multus)


def _thick_cni_args(d: Difference) -> bool:
    """kvnet's CNI_ARGS = Multus's five keys, the runtime's pairs, then the same MAC=/IP=."""
    if d.path.endswith("env.CNI_ARGS") and isinstance(d.multus, str) and isinstance(d.kvnet, str):
        multus, kvnet = d.multus.split(";"), d.kvnet.split(";")
    elif d.path.endswith(".cniArgs") and isinstance(d.multus, list) and isinstance(d.kvnet, list):
        multus, kvnet = ["=".join(p) for p in d.multus], ["=".join(p) for p in d.kvnet]
    else:
        return False
    requests = [p for p in kvnet[5:] if p.startswith(("MAC=", "IP="))]
    runtime = [p for p in kvnet[5:] if not p.startswith(("MAC=", "IP="))]
    return kvnet[:5] == multus[:5] and requests == multus[5:] and bool(runtime)


def _informer_wording(d: Difference) -> bool:
    m = _msgs(d)
    if m is None:
        return False
    singular = m[1].replace(
        "network-attachment-definitions.k8s.cni.cncf.io", "networkattachmentdefinition.k8s.cni.cncf.io"
    )
    return m[0] == singular.replace('pods "', 'pod "')


def _without_mac_ip(args: str) -> str:
    return ";".join(p for p in args.split(";") if not p.startswith(("MAC=", "IP=")))


def _del_mac_ip(d: Difference) -> bool:
    if not d.path.endswith("env.CNI_ARGS"):  # the DELs of a rollback are in an ADD step
        return False
    if not isinstance(d.multus, str) or not isinstance(d.kvnet, str):
        return False
    return _without_mac_ip(d.kvnet) == _without_mac_ip(d.multus) and d.kvnet != d.multus


def _cache_shape(d: Difference) -> bool:
    if not d.path.startswith("cni/") or "/results/" in d.path:
        return False
    if d.path.endswith(".LoadOnlyInlinedPlugins"):
        return d.multus is False and d.kvnet == "<absent>"
    return d.path.endswith(".dns") and d.multus == "<absent>" and d.kvnet == {}


def _del_status(d: Difference) -> bool:
    return d.command == "DEL" and d.kvnet == "[]" and d.multus != "[]"


_PLUGIN_FAILED = re.compile(r'plugin type="[^"]*" failed \((?:add|del|check|status|gc)\): ')


def _delegate_wording(d: Difference) -> bool:
    m = _msgs(d)
    if m is None:
        return False
    kvnet = (
        _PLUGIN_FAILED.sub("", m[1]).replace("delegateDel:", "DelegateDel:").replace("delegateCheck:", "DelegateCheck:")
    )
    multus = re.sub(r'netplugin failed: "(.*)"$', lambda x: json.loads(f'"{x.group(1)}"'), m[0], flags=re.S)
    return kvnet.rstrip() == multus.rstrip() and m[0] != m[1]


def _nad_prefix(d: Difference) -> bool:
    m = _msgs(d)
    return m is not None and re.sub(r"net-attach-def [^ ]+: ", "", m[1], count=1) == m[0]


def _netconf_prefix(d: Difference) -> bool:
    m = _msgs(d)
    return m is not None and m[0] == "error loading netconf: " + m[1]


def _route_gw(d: Difference) -> bool:
    return d.path.endswith(".gw") and ".routes[" in d.path and d.kvnet == "<absent>" and isinstance(d.multus, str)


def _api_wording(d: Difference) -> bool:
    m = _msgs(d)
    return m is not None and re.sub(r"Kubernetes API [A-Z]+ \S+: \d+ ", "", m[1]) == m[0]


def _gc_attachments(d: Difference) -> bool:
    return d.command == "GC" and d.path.endswith("stdin.cni.dev/attachments") and d.kvnet == "<absent>"


# --- the deliberate differences ----------------------------------------------------------

DELIBERATE: dict[str, Deliberate] = {
    r.id: r
    for r in (
        Deliberate(
            "error-codes",
            "Multus reports its own errors and a delegate's (wrapped by cmdPluginErr) as plain Go errors, which "
            "skel prints with code 999; kvnet gives each the code of its error tree (4 env, 6 decode, 7 config, "
            "11 try again, 101 no network, 102 DEL, 103 API, a delegate's own code kept), docs/design.md §7",
            ("error",),
            match=_code_999,
        ),
        Deliberate(
            "error-cni-version",
            "Multus's error object has no cniVersion (skel prints types.Error without one); the CNI spec's "
            "error object has it, and kvnet writes it",
            ("error",),
            match=_error_version,
        ),
        Deliberate(
            "cni-path",
            "a delegate's CNI_PATH: Multus passes binDir and then the runtime's CNI_PATH as it is (repeats "
            "included); kvnet passes the same dirs once each and then its fallback /usr/lib/cni, where "
            "Debian's plugins live (docs/meta-plugin.md, binDir)",
            ("delegates",),
            match=_cni_path,
        ),
        Deliberate(
            "thick-cni-args",
            "thick mode: multus-daemon builds a delegate's CNI_ARGS from its own process environment "
            '(types.newCNIRuntimeConf reads os.Getenv("CNI_ARGS"), empty in the daemon), so delegates get '
            "only its five keys and none of the runtime's pairs; kvnet's daemon builds them from the call, as "
            "in thin mode",
            ("delegates", "cache"),
            modes=("thick",),
            match=_thick_cni_args,
        ),
        Deliberate(
            "thick-informer-wording",
            "thick mode: multus-daemon reads pods and NADs from its informer caches, whose NotFound names the "
            "resource in the singular (networkattachmentdefinition.k8s.cni.cncf.io); kvnet's daemon reads "
            "what its caches do not hold live, so a missing one keeps the API server's words, as both thin "
            "programs do",
            ("error",),
            modes=("thick",),
            match=_informer_wording,
        ),
        Deliberate(
            "thick-del-never-fails",
            "thick mode: multus-shim never fails a DEL (api.CmdDel logs the daemon's error and returns nil), "
            "even when a delegate's DEL failed or the config is broken; kvnet-shim passes the daemon's answer "
            "on, so DEL fails as in thin mode and the runtime retries it",
            ("exit", "error"),
            modes=("thick",),
            match=lambda d: d.command == "DEL" and d.path == "" and d.multus in (0, None),
        ),
        Deliberate(
            "thick-in-cluster-client",
            "thick mode: multus-daemon always talks to the API through its own in-cluster client and uses it "
            "even when the call's config has no kubeconfig (network-status written, clusterNetwork resolved); "
            "kvnet's daemon uses the kubeconfig the config names, so a config without one behaves as in thin "
            "mode",
            ("exit", "error", "result", "pod", "status", "cache", "leases", "delegates"),
            modes=("thick",),
        ),
        Deliberate(
            "result-version",
            "thin mode: Multus prints the main network's result in the delegate's own version (CmdAdd returns "
            "the delegate's result and main.go calls result.Print()), not in the config's cniVersion; the CNI "
            "spec asks for the config's version, which kvnet (and multus-shim) print, with what that "
            "version's Go type writes (0.3.x/0.4.0: every ips entry has its version, dns is always there)",
            ("result",),
            modes=("thin",),
            match=lambda d: d.path in ("cniVersion", "dns") or d.path.endswith("].version"),
        ),
        Deliberate(
            "del-capability-args",
            "DEL gives portmap and bandwidth the port mappings and bandwidth of the ADD (libcni's cached "
            "capability args), so they remove their DNAT chain and qdiscs; Multus's DEL has none of them (they "
            "are not in its delegate cache: DelegateNetConf's PortMappingsRequest/BandwidthRequest are "
            'json:"-") and portmap leaves its CNI-DN-* chain on the node',
            ("delegates", "node"),
            match=lambda d: d.aspect == "node" or (d.command == "DEL" and d.path.endswith("stdin.runtimeConfig")),
        ),
        Deliberate(
            "default-route-applied",
            "default-route: kvnet removes the other interfaces' default routes, in the pod and in their "
            "results, network-status and cache, as the networks annotation's spec says; Multus 4.3 removes "
            "none: netutils.DeleteDefaultGW deletes only routes whose Dst is nil, and netlink v1.3.1's "
            "RouteList reports a default route with Dst 0.0.0.0/0, so the main network keeps its default route",
            ("result", "pod", "status", "cache", "delegates"),
        ),
        Deliberate(
            "cluster-network-cause",
            "a clusterNetwork that cannot be found: kvnet keeps the cause (getNetDelegate: cannot find network: "
            "<name>); Multus's GetDefaultNetworks replaces it with failed to get clusterNetwork <name> in "
            "namespace <ns> (docs: Error messages of the meta-plugin)",
            ("error",),
            match=lambda d: _has(d, "failed to get clusterNetwork", "cannot find network"),
        ),
        Deliberate(
            "cluster-network-conflist-del",
            "a clusterNetwork .conflist file: Multus caches it re-encoded from libcni's typed plugin list "
            "(types.LoadDelegateNetConfFromConfList marshals types.NetConfList, which keeps only the standard "
            "keys), so its DEL gives bridge no bridge name and host-local no ranges: DEL fails and the IP "
            "lease and the node's bridge stay; kvnet caches the file's bytes and DEL cleans up",
            ("exit", "error", "cache", "leases", "delegates"),
        ),
        Deliberate(
            "api-transient-retry",
            "a 500, 503 or 429 (or a reset connection) on the NAD read or the network-status write: kvnet tries "
            "again for up to 5 s, after the server's Retry-After when it gives one (kvnet.meta.k8s.RetryingApi), "
            "so the ADD goes on; Multus retries only its pod read, so its ADD fails at the first 500 "
            "(getKubernetesDelegate, SetNetworkStatus) and the runtime has to start the pod's networking again",
            ("exit", "error", "result", "pod", "status", "cache", "leases", "delegates"),
        ),
        Deliberate(
            "status-not-ready",
            "STATUS without the readiness indicator file: kvnet answers at once with code 50 (the CNI spec's "
            "'plugin not available'); Multus's CmdStatus waits up to 45 s for the file "
            "(types.GetReadinessIndicatorFile) and then fails with code 999",
            ("exit", "error"),
            match=lambda d: d.command == "STATUS" and d.path == "" and d.multus in ("timeout", None),
        ),
        Deliberate(
            "check-cached",
            "CHECK runs CHECK on the delegates cached for the container (every attachment; no cache is error "
            "3); Multus's CmdCheck checks only the config's own delegates (the main network), never the "
            "pod's attachments (docs/meta-plugin.md, Differences from Multus)",
            ("exit", "error", "delegates"),
            match=lambda d: d.command == "CHECK",
        ),
        Deliberate(
            "ifname-early",
            "two attachments on one interface name: kvnet refuses the pod before any delegate runs; Multus runs "
            "the delegates in order until validateIfName finds the name taken in the netns, then rolls back "
            "(docs/meta-plugin.md, Differences from Multus)",
            ("error", "cache", "delegates"),
        ),
        Deliberate(
            "gc-runtime-attachments",
            "GC: kvnet hands the main network the runtime's cni.dev/valid-attachments and deletes its cached "
            "attachments the runtime did not list, as libcni's GCNetworkList does; Multus's CmdGC replaces "
            "the runtime's list by every attachment in its results cache (gatherValidAttachmentsFromCache), "
            "so its GC never removes anything",
            ("pod", "leases", "cache", "delegates"),
            match=lambda d: d.command == "GC" and not _gc_attachments(d),
        ),
        Deliberate(
            "system-namespaces",
            "systemNamespaces: kvnet writes no network-status for a pod in one of them; Multus's CmdAdd "
            "tests the pod's name instead of its namespace (types.CheckSystemNamespaces(K8S_POD_NAME, ...)), "
            "so it writes network-status for a pod in kube-system and none for a pod named kube-system",
            ("status",),
        ),
        Deliberate(
            "status-write-rollback",
            "a failed network-status write fails ADD in both; kvnet also rolls the delegates back and removes "
            "the cache, Multus leaves them for the runtime's DEL (docs/meta-plugin.md, Differences from Multus)",
            ("pod", "cache", "leases", "delegates", "status"),
        ),
    )
}
GLOBAL_RULES = (
    "error-codes",
    "error-cni-version",
    "cni-path",
    "thick-cni-args",
    "thick-informer-wording",
    "thick-del-never-fails",
)

# --- kvnet's differences being fixed -------------------------------------------------------
# An entry no row lists any more was fixed; it stays, so that KVNET_DIFF_DISCOVER names it if
# the difference comes back.

ALL = ("exit", "error", "result", "pod", "status", "cache", "leases", "delegates", "node")

KNOWN: dict[str, Known] = {
    k.id: k
    for k in (
        Known(
            "cache-shape",
            "the delegate cache is written in Multus 4.2's shape",
            "4.3 marshals each types.DelegateNetConf with libcni v1.3's NetworkConfigList, which has "
            "LoadOnlyInlinedPlugins, and cnitypes.PluginConf's dns is omitempty, so an empty Conf.dns is left "
            "out (pkg/multus/multus.go saveDelegates; libcni/api.go NetworkConfigList)",
            ("cache",),
            match=_cache_shape,
        ),
        Known(
            "del-status",
            "DEL rewrites network-status to []",
            "CmdDel never touches the annotation (pkg/multus/multus.go CmdDel: no SetNetworkStatus)",
            ("status",),
            match=_del_status,
        ),
        Known(
            "cache-conflist-conf",
            "a conflist delegate's cache entry has an empty Conf",
            "LoadDelegateNetConf unmarshals the conflist bytes into Conf first, so Conf carries the conflist's "
            "cniVersion and name (pkg/types/conf.go LoadDelegateNetConf)",
            ("cache",),
            match=lambda d: d.path.endswith((".Conf.cniVersion", ".Conf.name")) and d.kvnet == "<absent>",
        ),
        Known(
            "default-route-empty-filter",
            "`default-route: []` does not mark the delegates' IsFilterV4Gateway/IsFilterV6Gateway",
            "TryLoadPodDelegates runs CheckGatewayConfig as soon as one selection has a default-route key, even "
            "an empty list, and it marks every delegate without a gateway of that family as filtered "
            "(pkg/k8sclient/k8sclient.go TryLoadPodDelegates, pkg/types/conf.go CheckGatewayConfig)",
            ("cache",),
            match=lambda d: d.path.endswith(("IsFilterV4Gateway", "IsFilterV6Gateway")),
        ),
        Known(
            "del-rebuild-partial",
            "DEL without a cache, for a pod whose selections fail a later check (two default-route gateways), "
            "deletes only the main network",
            "CmdDel keeps the delegates TryLoadPodDelegates appended before CheckGatewayConfig failed and runs "
            "DEL on every one of them, attachments included (pkg/multus/multus.go CmdDel; "
            "pkg/k8sclient/k8sclient.go TryLoadPodDelegates)",
            ("delegates",),
        ),
        Known(
            "del-mac-ip-args",
            "DEL hands delegates the MAC=/IP= CNI_ARGS of a mac/ips request",
            "only DelegateAdd appends MAC and IP to rt.Args; DelegateDel does not (pkg/multus/multus.go)",
            ("delegates",),
            match=_del_mac_ip,
        ),
        Known(
            "delegate-error-wording",
            "a delegate's error gets kvnet's `plugin type=\"x\" failed (add): ` (DEL: `delegateDel:`)",
            "the error libcni returns is the delegate's message as it is (non-JSON output: `netplugin failed: "
            "%q`), and DelegateDel/DelegateCheck are capitalised (pkg/multus/multus.go DelegateDel, "
            "cmdPluginErr; libcni invoke)",
            ("error",),
            match=_delegate_wording,
        ),
        Known(
            "nad-error-prefix",
            "a NAD's config errors get an extra `net-attach-def <ns>/<name>: `",
            "getKubernetesDelegate returns netutils.GetCNIConfig's and LoadDelegateNetConf's errors as they "
            "are (pkg/k8sclient/k8sclient.go)",
            ("error",),
            match=_nad_prefix,
        ),
        Known(
            "netconf-prefix",
            "a config error on ADD lacks `error loading netconf: `",
            'CmdAdd wraps LoadNetConf\'s error as cmdErr(nil, "error loading netconf: %v") '
            "(pkg/multus/multus.go CmdAdd)",
            ("error",),
            match=_netconf_prefix,
        ),
        Known(
            "default-route-gw",
            "the default route a default-route request adds has no gateway in libcni's results cache",
            "netutils.AddDefaultGWCache writes the route with its gw into the cached result, so the DEL's "
            "prevResult names it (pkg/netutils/netutils.go)",
            ("cache", "delegates"),
            match=_route_gw,
        ),
        Known(
            "api-error-wording",
            "an API failure reads `Kubernetes API GET <path>: <code> <message>`",
            "client-go's StatusError text is the server's message alone (pkg/k8sclient/k8sclient.go "
            "getKubernetesDelegate: %v of the error)",
            ("error",),
            match=_api_wording,
        ),
        Known(
            "gc-attachments-key",
            "GC gives the delegate only cni.dev/valid-attachments",
            "libcni's GCNetworkList also injects the misnamed cni.dev/attachments (CNI #1101) with the same "
            "list (libcni/api.go GCNetworkList)",
            ("delegates",),
            match=_gc_attachments,
        ),
        Known(
            "status-ips-no-interfaces",
            "a result with IPs but no interfaces gets a network-status entry named after its interface",
            "nadutils.CreateNetworkStatuses makes entries from the result's interfaces only; with none it "
            "makes none (network-attachment-definition-client pkg/utils/net-attach-def.go)",
            ("status",),
        ),
        Known(
            "shim-config-check",
            "kvnet-shim sends a config that is not JSON to nowhere: cannot reach the kvnet daemon (code 11)",
            "multus-shim runs skel, which checks the config first: error unmarshall network config: "
            "<message> (code 6) (cmd/multus-shim/main.go skel.PluginMainFuncs; pkg/skel/skel.go validateConfig)",
            ("error",),
            modes=("thick",),
            match=lambda d: (
                d.aspect == "error"
                and (
                    "kvnet-shim: cannot reach" in str(d.kvnet)
                    or str(d.kvnet).startswith("start it with")
                    or (d.multus, d.kvnet) == (6, 11)
                )
            ),
        ),
        Known(
            "status-write-wording",
            "a failed network-status write reads `Kubernetes API PUT <path>: <code> <message>`",
            "SetNetworkStatus wraps it as SetPodNetworkStatusAnnotation: failed to update the pod <name> in out "
            "of cluster comm: SetNetworkStatus: failed to update the pod <name> in out of cluster comm: status "
            "update failed for pod <ns>/<name>: <message> (pkg/k8sclient/k8sclient.go; nadutils SetNetworkStatus)",
            ("error",),
            match=lambda d: _has(d, "error setting the networks status: ", "Kubernetes API PUT "),
        ),
        Known(
            "pod-not-found-result",
            "the empty result for a pod that is not found has dns {} and no IP",
            "emptyCNIResult has one interface (CNI_IFNAME in CNI_NETNS) and one IP 0.0.0.0/0 with gateway "
            "0.0.0.0, and no dns (pkg/multus/multus.go emptyCNIResult)",
            ("result",),
            match=lambda d: d.path == "ips" and d.multus == [{"address": "0.0.0.0/0", "gateway": "0.0.0.0"}],
        ),
        Known(
            "check-version-details",
            'CHECK refused for an old cniVersion carries details `config is "0.3.1"`',
            "skel says config version does not allow CHECK with no details (pkg/skel/skel.go pluginMain)",
            ("error",),
            match=lambda d: d.path == "details" and str(d.kvnet).startswith("config is "),
        ),
        Known(
            "status-error-wording",
            "a failed STATUS of the main network is wrapped as `failed to get the status of the main network "
            "<name>: plugin type=... failed (status): `",
            "CmdStatus returns the delegate's CNI error as it is, message and code (pkg/multus/multus.go "
            "confStatus: errors.As *types.Error)",
            ("error",),
            match=lambda d: _has(d, "", "failed to get the status of the main network"),
        ),
        Known(
            "cluster-network-and-delegates",
            "clusterNetwork together with delegates is refused (code 7)",
            "LoadNetConf ignores delegates when clusterNetwork is set and CmdAdd uses clusterNetwork "
            "(pkg/types/conf.go LoadNetConf, pkg/multus/multus.go CmdAdd)",
            ALL,
        ),
        Known(
            "cluster-network-no-kubeconfig",
            "clusterNetwork without kubeconfig is refused when the config is read, DEL included",
            "only CmdAdd fails, in GetDefaultNetworks, with the [ns/pod/uid] prefix; CmdDel finds no pod and "
            "no cache and succeeds (pkg/k8sclient/k8sclient.go GetDefaultNetworks, pkg/multus/multus.go CmdDel)",
            ("exit", "error"),
            modes=("thin",),
        ),
        Known(
            "static-pod",
            "a static pod's UID mismatch fails ADD",
            "GetPod accepts a UID mismatch when the pod is a static pod, the kubernetes.io/config.source "
            "annotation not api (pkg/multus/multus.go GetPod, pkg/k8sclient/k8sclient.go IsStaticPod)",
            ALL,
        ),
        Known(
            "pod-get-retry",
            "a 5xx on the pod GET fails ADD at once",
            "GetPod polls every 250 ms for 2.5 s while the error is retriable (503, 500, connection reset or "
            "refused), then tries once more (pkg/multus/multus.go GetPod, isCriticalRequestRetriable)",
            ALL,
        ),
        Known(
            "ready-del",
            "DEL waits for a missing readiness indicator file",
            "CmdDel only logs that the file is missing and goes on (pkg/multus/multus.go CmdDel: "
            "ReadinessIndicatorExistsNow)",
            ALL,
        ),
        Known(
            "del-after-failed-add",
            "DEL after a failed ADD calls no delegate",
            "a failed ADD rolls back but leaves the delegate cache, so the runtime's DEL runs every delegate's "
            "DEL again (pkg/multus/multus.go CmdAdd: delPlugins, no cache removal)",
            ("delegates", "cache"),
        ),
    )
}
SCENARIOS: tuple[Scenario, ...] = (
    # --- the networks annotation, short form ----------------------------------------------
    Scenario(
        "short-name",
        "networks `blue`: one NAD by name, interface net1",
        nads=(Nad("blue", BLUE),),
        pods=(Pod(networks="blue"),),
    ),
    Scenario(
        "short-namespace",
        "networks `<ns2>/blue`: a NAD in another namespace",
        nads=(Nad("blue", BLUE, namespace="$NS2"),),
        pods=(Pod(networks="$NS2/blue"),),
    ),
    Scenario(
        "short-ifname",
        "networks `blue@blue0`: the requested interface name",
        nads=(Nad("blue", BLUE),),
        pods=(Pod(networks="blue@blue0"),),
    ),
    Scenario(
        "short-positions",
        "networks `blue@blue0,red`: the second is net2 (its position in the whole list)",
        nads=(Nad("blue", BLUE), Nad("red", RED)),
        pods=(Pod(networks="blue@blue0,red"),),
    ),
    Scenario(
        "short-whitespace",
        "networks ` blue @ blue0 ,  red `: whitespace around each part",
        nads=(Nad("blue", BLUE), Nad("red", RED)),
        pods=(Pod(networks=" blue @ blue0 ,  red "),),
    ),
    Scenario(
        "short-same-nad-twice",
        "networks `blue,blue`: one NAD attached twice (net1, net2)",
        nads=(Nad("blue", BLUE),),
        pods=(Pod(networks="blue,blue"),),
    ),
    Scenario(
        "empty-annotation",
        "networks annotation present but empty: only the main network",
        pods=(Pod(networks=""),),
    ),
    # --- the networks annotation, JSON form ------------------------------------------------
    Scenario(
        "json-name",
        "JSON `[{name}]`",
        nads=(Nad("blue", BLUE),),
        pods=(Pod(networks=networks({"name": "blue"})),),
    ),
    Scenario(
        "json-namespace",
        "JSON `namespace` key",
        nads=(Nad("blue", BLUE, namespace="$NS2"),),
        pods=(Pod(networks=networks({"name": "blue", "namespace": "$NS2"})),),
    ),
    Scenario(
        "json-interface",
        "JSON `interface` key",
        nads=(Nad("blue", BLUE),),
        pods=(Pod(networks=networks({"name": "blue", "interface": "blue0"})),),
    ),
    Scenario(
        "json-interface-request",
        "JSON `interfaceRequest` (the pre-3.2 key)",
        nads=(Nad("blue", BLUE),),
        pods=(Pod(networks=networks({"name": "blue", "interfaceRequest": "blue0"})),),
    ),
    Scenario(
        "json-keys-any-case",
        "JSON keys in other case (`Name`, `INTERFACE`), as Go's decoder matches them",
        nads=(Nad("blue", BLUE),),
        pods=(Pod(networks=networks({"Name": "blue", "INTERFACE": "blue0"})),),
    ),
    Scenario(
        "json-unknown-and-null",
        "JSON with an unknown key and null fields",
        nads=(Nad("blue", BLUE),),
        pods=(Pod(networks=networks({"name": "blue", "color": "x", "mac": None, "ips": None, "cni-args": None})),),
    ),
    Scenario(
        "json-mac",
        "`mac` to a delegate that declares the mac capability (runtimeConfig and CNI_ARGS MAC=)",
        nads=(Nad("rec", rec(capabilities={"mac": True})),),
        pods=(Pod(networks=networks({"name": "rec", "mac": "02:00:00:00:00:42"})),),
    ),
    Scenario(
        "json-mac-no-capability",
        "`mac` to a delegate without the capability (only CNI_ARGS MAC=)",
        nads=(Nad("rec", rec()),),
        pods=(Pod(networks=networks({"name": "rec", "mac": "02:00:00:00:00:43"})),),
    ),
    Scenario(
        "json-ips",
        "`ips` to bridge + static IPAM (capability ips): the address in the pod",
        nads=(Nad("st", bridge_net("kvd-st", "10.103.0.0/24", capabilities={"ips": True}, ipam={"type": "static"})),),
        pods=(Pod(networks=networks({"name": "st", "ips": ["10.103.0.9/24"]})),),
    ),
    Scenario(
        "json-ips-bare",
        "`ips` without a prefix: static IPAM refuses it, ADD rolls back",
        nads=(Nad("st", bridge_net("kvd-st", "10.103.0.0/24", capabilities={"ips": True}, ipam={"type": "static"})),),
        pods=(Pod(networks=networks({"name": "st", "ips": ["10.103.0.9"]})),),
    ),
    Scenario(
        "json-cni-args",
        "`cni-args` merged into the delegate's own args.cni",
        nads=(Nad("rec", rec(args={"cni": {"own": "1"}})),),
        pods=(Pod(networks=networks({"name": "rec", "cni-args": {"logicNetworkName": "blue", "n": 2}})),),
    ),
    Scenario(
        "json-cni-args-conflist",
        "`cni-args` into every plugin of a conflist",
        nads=(Nad("chain", {"cniVersion": "1.0.0", "plugins": [rec(), rec(args={"cni": {"own": "1"}})]}),),
        pods=(Pod(networks=networks({"name": "chain", "cni-args": {"k": "v"}})),),
    ),
    Scenario(
        "json-port-mappings",
        "`portMappings` to ptp + portmap: the DNAT rules on the node, and their removal",
        nads=(
            Nad(
                "svc",
                {
                    "cniVersion": "1.0.0",
                    "plugins": [
                        {"type": "ptp", "ipam": {"type": "host-local", "ranges": [[{"subnet": "10.104.0.0/24"}]]}},
                        {"type": "portmap", "capabilities": {"portMappings": True}},
                    ],
                },
            ),
        ),
        pods=(
            Pod(
                networks=networks(
                    {"name": "svc", "portMappings": [{"hostPort": 18080, "containerPort": 80, "protocol": "tcp"}]}
                )
            ),
        ),
        node=True,
        deliberate=("del-capability-args",),
    ),
    Scenario(
        "json-bandwidth",
        "`bandwidth` to ptp + bandwidth: the qdiscs on the node, and their removal",
        nads=(
            Nad(
                "bw",
                {
                    "cniVersion": "1.0.0",
                    "plugins": [
                        {"type": "ptp", "ipam": {"type": "host-local", "ranges": [[{"subnet": "10.105.0.0/24"}]]}},
                        {"type": "bandwidth", "capabilities": {"bandwidth": True}},
                    ],
                },
            ),
        ),
        pods=(
            Pod(
                networks=networks(
                    {
                        "name": "bw",
                        "bandwidth": {
                            "ingressRate": 1000000,
                            "ingressBurst": 100000,
                            "egressRate": 1000000,
                            "egressBurst": 100000,
                        },
                    }
                )
            ),
        ),
        node=True,
        deliberate=("del-capability-args",),
    ),
    Scenario(
        "json-infiniband-guid",
        "`infiniband-guid` to a delegate with the infinibandGUID capability",
        nads=(Nad("rec", rec(capabilities={"infinibandGUID": True})),),
        pods=(Pod(networks=networks({"name": "rec", "infiniband-guid": "c2:11:22:33:44:55:66:77"})),),
    ),
    Scenario(
        "json-device-id",
        "`deviceID`: runtimeConfig deviceID and CNIDeviceInfoFile; the delegate's device-info in network-status",
        nads=(
            Nad(
                "vf",
                rec(
                    capabilities={"deviceID": True, "CNIDeviceInfoFile": True},
                    deviceInfo={"type": "pci", "version": "1.1.0", "pci": {"pci-address": "0000:03:00.2"}},
                ),
            ),
        ),
        pods=(Pod(networks=networks({"name": "vf", "deviceID": "0000:03:00.2"})),),
    ),
    Scenario(
        "json-requests-no-capabilities",
        "every per-attachment request to a delegate that declares no capability",
        nads=(Nad("rec", rec()),),
        pods=(
            Pod(
                networks=networks(
                    {
                        "name": "rec",
                        "ips": ["10.9.9.9/24"],
                        "portMappings": [{"hostPort": 1, "containerPort": 2}],
                        "bandwidth": {"ingressRate": 1, "ingressBurst": 1, "egressRate": 1, "egressBurst": 1},
                        "infiniband-guid": "c2:11:22:33:44:55:66:78",
                        "deviceID": "0000:03:00.3",
                    }
                )
            ),
        ),
    ),
    Scenario(
        "json-default-route",
        "`default-route` on an attachment: the pod's default route and network-status gateways move",
        nads=(Nad("blue", BLUE_GW),),
        pods=(Pod(networks=networks({"name": "blue", "default-route": ["10.101.0.1"]})),),
        deliberate=("default-route-applied",),
    ),
    Scenario(
        "json-default-route-ecmp",
        "two IPv4 `default-route` gateways: refused",
        nads=(Nad("blue", BLUE_GW), Nad("red", RED)),
        pods=(
            Pod(
                networks=networks(
                    {"name": "blue", "default-route": ["10.101.0.1"]}, {"name": "red", "default-route": ["10.102.0.1"]}
                )
            ),
        ),
    ),
    Scenario(
        "json-default-route-empty",
        "`default-route: []`: a gateway request without a gateway",
        nads=(Nad("blue", BLUE_GW),),
        pods=(Pod(networks=networks({"name": "blue", "default-route": []})),),
        deliberate=("default-route-applied",),
    ),
    # --- annotation errors ---------------------------------------------------------------
    *(
        Scenario(name, f"networks `{value}`: {what}", pods=(Pod(networks=value),))
        for name, value, what in (
            ("bad-short-slashes", "a/b/c", "two slashes"),
            ("bad-short-at", "a@b@c", "two @"),
            ("bad-short-uppercase", "Blue", "not a DNS-1123 label"),
            ("bad-short-ifname", "blue@abcdefghijklmnop", "interface name too long"),
            ("bad-json-syntax", '[{"name": "blue"', "truncated JSON"),
            ("bad-json-type", '[{"name": 5}]', "a name that is a number"),
            ("bad-json-object", '{"name": "blue"}', "an object, not a list"),
            ("bad-json-mac", '[{"name": "blue", "mac": "zz"}]', "a bad MAC"),
            ("bad-json-ips", '[{"name": "blue", "ips": ["10.0.0.1/33"]}]', "a bad CIDR"),
            ("bad-json-default-route", '[{"name": "blue", "default-route": ["x"]}]', "a bad gateway"),
            ("bad-json-guid", '[{"name": "blue", "infiniband-guid": "zz"}]', "a bad infiniband GUID"),
        )
    ),
    # --- NADs ----------------------------------------------------------------------------
    Scenario(
        "nad-not-found",
        "networks name a NAD that does not exist",
        pods=(Pod(networks="missing"),),
    ),
    Scenario(
        "nad-bad-json",
        "a NAD whose spec.config is not JSON",
        nads=(Nad("blue", "{"),),
        pods=(Pod(networks="blue"),),
    ),
    Scenario(
        "nad-no-type",
        "a NAD config with neither type nor plugins",
        nads=(Nad("blue", {"cniVersion": "1.0.0"}),),
        pods=(Pod(networks="blue"),),
    ),
    Scenario(
        "nad-empty-spec",
        "a NAD with an empty spec: the conf file of that name in confDir",
        nads=(Nad("blue", None),),
        conf_files={"20-blue.conf": {**BLUE, "name": "blue"}},
        pods=(Pod(networks="blue"),),
    ),
    Scenario(
        "nad-empty-spec-no-file",
        "a NAD with an empty spec and no such conf file",
        nads=(Nad("blue", None),),
        pods=(Pod(networks="blue"),),
    ),
    # --- the plugin config -----------------------------------------------------------------
    Scenario(
        "conf-not-json",
        "stdin is not JSON",
        steps=(Step("ADD", stdin="{"), Step("DEL", stdin="{")),
    ),
    Scenario(
        "conf-no-delegates",
        "neither delegates nor clusterNetwork",
        config={"delegates": None},
    ),
    Scenario(
        "conf-delegate-no-type",
        "a delegate with neither type nor plugins",
        config={"delegates": [{"cniVersion": "1.0.0", "name": "x"}]},
    ),
    Scenario(
        "conf-wrong-type",
        "namespaceIsolation is a string",
        config={"namespaceIsolation": "yes"},
    ),
    Scenario("conf-no-name", "the config has no name", config={"name": None}),
    Scenario(
        "conf-cluster-network-no-kubeconfig",
        "clusterNetwork without kubeconfig",
        config={"delegates": None, "kubeconfig": None, "clusterNetwork": "main"},
        conf_files={"10-main.conf": MAIN},
        deliberate=("thick-in-cluster-client@thick",),
    ),
    Scenario(
        "conf-cluster-network-and-delegates",
        "clusterNetwork and delegates both set",
        config={"clusterNetwork": "other"},
        conf_files={"10-other.conf": {**RED, "name": "other"}},
    ),
    Scenario(
        "env-bad-container-id",
        "CNI_CONTAINERID with a slash",
        steps=(Step("ADD", env={"CNI_CONTAINERID": "a/b"}), Step("DEL", env={"CNI_CONTAINERID": "a/b"})),
    ),
    Scenario("env-no-netns", "ADD without CNI_NETNS", steps=(Step("ADD", env={"CNI_NETNS": None}),)),
    Scenario(
        "env-bad-ifname",
        "CNI_IFNAME longer than 15 bytes",
        steps=(Step("ADD", ifname="way-too-long-name0"), Step("DEL", ifname="way-too-long-name0")),
    ),
    Scenario(
        "env-ifname",
        "CNI_IFNAME eth5: the main network's interface",
        nads=(Nad("blue", BLUE),),
        pods=(Pod(networks="blue"),),
        steps=(Step("ADD", ifname="eth5"), Step("DEL", ifname="eth5")),
    ),
    Scenario(
        "env-extra-cni-args",
        "the runtime's CNI_ARGS carry an extra pair: handed on to delegates",
        nads=(Nad("rec", rec()),),
        pods=(Pod(networks="rec"),),
        steps=(
            Step(
                "ADD",
                env={
                    "CNI_ARGS": "IgnoreUnknown=1;K8S_POD_NAMESPACE=$NS;K8S_POD_NAME=web;K8S_POD_INFRA_CONTAINER_ID=$CID;K8S_POD_UID=$UID;FOO=bar"
                },
            ),
            DEL,
        ),
    ),
    Scenario(
        "result-cni-031",
        "cniVersion 0.3.1: the main network's result converted",
        config={"cniVersion": "0.3.1"},
        deliberate=("result-version@thin",),
    ),
    Scenario(
        "main-conflist",
        "the main network is a conflist (bridge + tuning)",
        config={
            "delegates": [
                {
                    "cniVersion": "1.0.0",
                    "name": "main",
                    "plugins": [
                        {k: v for k, v in MAIN.items() if k not in ("name", "cniVersion")},
                        {"type": "tuning", "sysctl": {"net.ipv4.conf.eth0.arp_notify": "1"}},
                    ],
                }
            ]
        },
    ),
    Scenario(
        "runtime-config",
        "the config's runtimeConfig reaches the main network (capabilities permitting)",
        config={
            "delegates": [rec(name="main", capabilities={"portMappings": True})],
            "runtimeConfig": {"portMappings": [{"hostPort": 8080, "containerPort": 80, "protocol": "tcp"}]},
        },
    ),
    Scenario(
        "no-kubeconfig",
        "no kubeconfig: only the delegates run, no network-status",
        config={"kubeconfig": None, "delegates": [MAIN, {**BLUE, "name": "blue"}]},
        deliberate=("thick-in-cluster-client@thick",),
    ),
    # --- the cluster network ---------------------------------------------------------------
    Scenario(
        "cluster-network-nad",
        "clusterNetwork names a NAD in multusNamespace",
        nads=(Nad("main", {k: v for k, v in MAIN.items() if k != "name"}, namespace="$SYS"),),
        config={"delegates": None, "clusterNetwork": "main", "multusNamespace": "$SYS"},
    ),
    Scenario(
        "cluster-network-conf-name",
        "clusterNetwork names a conf in confDir",
        config={"delegates": None, "clusterNetwork": "main", "multusNamespace": "$SYS"},
        conf_files={"10-main.conf": MAIN},
    ),
    Scenario(
        "cluster-network-file",
        "clusterNetwork is a conf file path",
        config={"delegates": None, "clusterNetwork": "$WORK/conf/10-main.conf"},
        conf_files={"10-main.conf": MAIN},
    ),
    Scenario(
        "cluster-network-conflist-file",
        "clusterNetwork is a .conflist file path",
        config={"delegates": None, "clusterNetwork": "$WORK/conf/10-main.conflist"},
        conf_files={
            "10-main.conflist": {
                "cniVersion": "1.0.0",
                "name": "main",
                "plugins": [{k: v for k, v in MAIN.items() if k not in ("name", "cniVersion")}],
            }
        },
        deliberate=("cluster-network-conflist-del",),
    ),
    Scenario(
        "cluster-network-dir",
        "clusterNetwork is a folder: its first conf",
        config={"delegates": None, "clusterNetwork": "$WORK/conf"},
        conf_files={"10-main.conf": MAIN, "20-other.conf": {**RED, "name": "other"}},
    ),
    Scenario(
        "cluster-network-missing",
        "clusterNetwork that is neither a NAD nor a conf",
        config={"delegates": None, "clusterNetwork": "nowhere", "multusNamespace": "$SYS"},
        deliberate=("cluster-network-cause",),
    ),
    Scenario(
        "default-networks",
        "clusterNetwork plus defaultNetworks: every pod gets them",
        nads=(Nad("blue", BLUE, namespace="$SYS"),),
        config={"delegates": None, "clusterNetwork": "main", "defaultNetworks": ["blue"], "multusNamespace": "$SYS"},
        conf_files={"10-main.conf": MAIN},
    ),
    Scenario(
        "default-networks-system-namespace",
        "defaultNetworks are not given to a pod in systemNamespaces",
        nads=(Nad("blue", BLUE, namespace="$SYS"),),
        config={
            "delegates": None,
            "clusterNetwork": "main",
            "defaultNetworks": ["blue"],
            "multusNamespace": "$SYS",
            "systemNamespaces": ["$NS"],
        },
        conf_files={"10-main.conf": MAIN},
        deliberate=("system-namespaces",),
    ),
    Scenario(
        "system-namespace-status",
        "a pod in systemNamespaces: is network-status written?",
        nads=(Nad("blue", BLUE),),
        pods=(Pod(networks="blue"),),
        config={"systemNamespaces": ["$NS"]},
        deliberate=("system-namespaces",),
    ),
    Scenario(
        "system-namespace-pod-name",
        "a pod named like a system namespace (`kube-system`) in an ordinary namespace",
        nads=(Nad("blue", BLUE),),
        pods=(Pod(name="kube-system", networks="blue"),),
        steps=(Step("ADD", pod="kube-system"), Step("DEL", pod="kube-system")),
        deliberate=("system-namespaces",),
    ),
    # --- the default-network annotation ------------------------------------------------------
    Scenario(
        "default-network-annotation",
        "`v1.multus-cni.io/default-network: main2` replaces the main network (NAD in multusNamespace)",
        nads=(
            Nad(
                "main2",
                bridge_net("kvd-main2", "10.106.0.0/24", isGateway=True, isDefaultGateway=True),
                namespace="$SYS",
            ),
        ),
        pods=(Pod(default_network="main2"),),
        config={"multusNamespace": "$SYS"},
    ),
    Scenario(
        "default-network-annotation-ns",
        "`default-network: <ns>/main2` with a namespace",
        nads=(Nad("main2", bridge_net("kvd-main2", "10.106.0.0/24", isGateway=True, isDefaultGateway=True)),),
        pods=(Pod(default_network="$NS/main2", networks="main2@m2"),),
    ),
    Scenario(
        "default-network-two",
        "`default-network: a,b`: more than one",
        pods=(Pod(default_network="a,b"),),
        config={"multusNamespace": "$SYS"},
    ),
    Scenario(
        "default-network-missing",
        "`default-network` naming a NAD that does not exist",
        pods=(Pod(default_network="nothere"),),
        config={"multusNamespace": "$SYS"},
    ),
    # --- rollback and DEL --------------------------------------------------------------------
    Scenario(
        "rollback-main",
        "the main network's delegate fails: nothing left",
        config={"delegates": [rec(name="main", fail=True)]},
        pods=(Pod(networks="blue"),),
        nads=(Nad("blue", BLUE),),
    ),
    Scenario(
        "rollback-first-attachment",
        "the first attachment fails: the main network is rolled back",
        nads=(Nad("bad", rec(fail=True)), Nad("blue", BLUE)),
        pods=(Pod(networks="bad,blue"),),
    ),
    Scenario(
        "rollback-last",
        "the third of three attachments fails: all rolled back in reverse",
        nads=(Nad("blue", BLUE), Nad("red", RED), Nad("bad", rec(fail=True))),
        pods=(Pod(networks="blue,red,bad"),),
    ),
    Scenario(
        "del-after-failed-add",
        "DEL after an ADD that failed and rolled back",
        nads=(Nad("blue", BLUE), Nad("bad", rec(fail=True))),
        pods=(Pod(networks="blue,bad"),),
    ),
    Scenario(
        "del-twice",
        "DEL, then DEL again",
        nads=(Nad("blue", BLUE),),
        pods=(Pod(networks="blue"),),
        steps=(ADD, DEL, DEL),
    ),
    Scenario(
        "del-without-add",
        "DEL with no cache, the pod exists: the delegates are rebuilt from the pod",
        nads=(Nad("blue", BLUE),),
        pods=(Pod(networks="blue"),),
        steps=(DEL,),
    ),
    Scenario("del-without-add-no-pod", "DEL with no cache and no pod", pods=(), steps=(DEL,)),
    Scenario(
        "del-pod-gone",
        "DEL after the pod was deleted: from the cache",
        nads=(Nad("blue", BLUE),),
        pods=(Pod(networks="blue"),),
        steps=(ADD, Step("DEL", before=(DeletePod(),))),
    ),
    Scenario(
        "del-api-gone",
        "DEL while the API server cannot be reached: from the cache",
        nads=(Nad("blue", BLUE),),
        pods=(Pod(networks="blue"),),
        steps=(ADD, Step("DEL", config={"kubeconfig": "$DEAD_KUBECONFIG"})),
        modes=("thin",),
    ),
    Scenario(
        "del-netns-gone",
        "DEL after the runtime removed the pod netns",
        nads=(Nad("blue", BLUE),),
        pods=(Pod(networks="blue"),),
        steps=(ADD, Step("DEL", before=(DeleteNetns(),))),
    ),
    Scenario(
        "del-delegate-fails",
        "a delegate's DEL fails: the others still run, the error is returned",
        nads=(Nad("rec", rec(failOn=["DEL"])),),
        pods=(Pod(networks="rec"),),
    ),
    Scenario(
        "del-retry-on-error",
        "retryDeleteOnError: a failed DEL keeps the cache for the next DEL",
        nads=(Nad("rec", rec(failOn=["DEL"])),),
        pods=(Pod(networks="rec"),),
        config={"retryDeleteOnError": True},
    ),
    Scenario(
        "del-uid-mismatch",
        "DEL with another K8S_POD_UID than the pod's (a re-created pod of that name)",
        nads=(Nad("blue", BLUE),),
        pods=(Pod(networks="blue"),),
        steps=(ADD, Step("DEL", uid="0badc0de-0000-4000-8000-000000000001")),
    ),
    # --- readiness indicator file -------------------------------------------------------------
    Scenario(
        "ready-present",
        "readinessindicatorfile present on ADD and DEL",
        config={"readinessindicatorfile": "$READY"},
        steps=(Step("ADD", before=(Readiness(True),)), DEL),
    ),
    Scenario(
        "ready-late",
        "readinessindicatorfile appears 1.5 s into ADD: ADD waits for it",
        config={"readinessindicatorfile": "$READY"},
        steps=(Step("ADD", before=(Readiness(True, after=1.5),)), DEL),
    ),
    Scenario(
        "ready-missing-on-del",
        "readinessindicatorfile gone by DEL",
        config={"readinessindicatorfile": "$READY"},
        steps=(Step("ADD", before=(Readiness(True),)), Step("DEL", before=(Readiness(False),), timeout=8)),
    ),
    Scenario(
        "status-ready-missing",
        "STATUS while the readinessindicatorfile is missing",
        config={"readinessindicatorfile": "$READY", "cniVersion": "1.1.0", "delegates": [MAIN11]},
        pods=(),
        steps=(Step("STATUS", env=NO_POD_ENV, timeout=4),),
        deliberate=("status-not-ready",),
    ),
    # --- namespace isolation ---------------------------------------------------------------
    Scenario(
        "isolation-own-namespace",
        "namespaceIsolation: a NAD of the pod's namespace",
        nads=(Nad("blue", BLUE),),
        pods=(Pod(networks="blue"),),
        config={"namespaceIsolation": True},
    ),
    Scenario(
        "isolation-other-namespace",
        "namespaceIsolation: a NAD of another namespace is refused",
        nads=(Nad("blue", BLUE, namespace="$NS2"),),
        pods=(Pod(networks="$NS2/blue"),),
        config={"namespaceIsolation": True},
    ),
    Scenario(
        "isolation-global-default",
        "namespaceIsolation: a NAD in `default` (the default globalNamespaces)",
        nads=(Nad("$NS-g", BLUE, namespace="default"),),
        pods=(Pod(networks=networks({"name": "$NS-g", "namespace": "default"})),),
        config={"namespaceIsolation": True},
    ),
    Scenario(
        "isolation-global-list",
        "namespaceIsolation with globalNamespaces `<ns2>, other`",
        nads=(Nad("blue", BLUE, namespace="$NS2"),),
        pods=(Pod(networks="$NS2/blue"),),
        config={"namespaceIsolation": True, "globalNamespaces": "$NS2, other"},
    ),
    # --- the pod's identity ---------------------------------------------------------------
    Scenario(
        "static-pod",
        "a static pod: the runtime's K8S_POD_UID is not the mirror pod's UID",
        nads=(Nad("blue", BLUE),),
        pods=(Pod(networks="blue", annotations={"kubernetes.io/config.source": "file"}),),
        steps=(
            Step("ADD", uid="9e7c5a3b-1111-4222-8333-444455556666"),
            Step("DEL", uid="9e7c5a3b-1111-4222-8333-444455556666"),
        ),
    ),
    Scenario(
        "uid-mismatch",
        "K8S_POD_UID differs from the pod's (not a static pod): ADD refused",
        nads=(Nad("blue", BLUE),),
        pods=(Pod(networks="blue"),),
        steps=(
            Step("ADD", uid="0badc0de-0000-4000-8000-000000000002"),
            Step("DEL", uid="0badc0de-0000-4000-8000-000000000002"),
        ),
    ),
    Scenario(
        "uid-missing",
        "the runtime sends no K8S_POD_UID",
        nads=(Nad("blue", BLUE),),
        pods=(Pod(networks="blue"),),
        steps=(Step("ADD", uid="none"), Step("DEL", uid="none")),
    ),
    Scenario(
        "pod-not-found",
        "ADD and DEL for a pod the API does not have",
        pods=(),
    ),
    # --- results and network-status -----------------------------------------------------------
    Scenario(
        "result-ips-no-interfaces",
        "a delegate result with IPs but no interfaces",
        nads=(Nad("rec", rec(result={"ips": [{"address": "10.9.0.5/24"}]})),),
        pods=(Pod(networks="rec"),),
    ),
    Scenario(
        "result-empty",
        "a delegate result with neither interfaces nor IPs (the KubeVirt binding's)",
        nads=(Nad("binding", rec(result={})),),
        pods=(Pod(networks=networks({"name": "binding", "cni-args": {"logicNetworkName": "blue"}})),),
    ),
    Scenario(
        "result-two-interfaces",
        "a delegate result with two sandbox interfaces, a gateway and DNS",
        nads=(
            Nad(
                "rec",
                rec(
                    result={
                        "interfaces": [
                            {"name": "host0", "mac": "02:00:00:00:01:01"},
                            {"name": "$IFNAME", "mac": "02:00:00:00:01:02", "sandbox": "$NETNS", "mtu": 1400},
                            {"name": "$IFNAME-b", "mac": "02:00:00:00:01:03", "sandbox": "$NETNS"},
                        ],
                        "ips": [
                            {"address": "10.9.1.5/24", "gateway": "10.9.1.1", "interface": 1},
                            {"address": "10.9.2.5/24", "interface": 2},
                            {"address": "fd00::5/64", "gateway": "fd00::1"},
                        ],
                        "routes": [{"dst": "0.0.0.0/0", "gw": "10.9.1.1"}],
                        "dns": {"nameservers": ["10.9.1.53"], "search": ["example.org"]},
                    }
                ),
            ),
        ),
        pods=(Pod(networks="rec"),),
    ),
    # --- CHECK, STATUS, GC -----------------------------------------------------------------
    Scenario(
        "check-after-add",
        "CHECK after ADD, on real plugins",
        nads=(Nad("blue", BLUE),),
        pods=(Pod(networks="blue"),),
        steps=(ADD, CHECK, DEL),
        deliberate=("check-cached",),
    ),
    Scenario(
        "check-without-add",
        "CHECK with no ADD before",
        nads=(Nad("blue", BLUE),),
        pods=(Pod(networks="blue"),),
        steps=(CHECK,),
        deliberate=("check-cached",),
    ),
    Scenario(
        "check-old-version",
        "CHECK with cniVersion 0.3.1 (before CHECK existed)",
        config={"cniVersion": "0.3.1"},
        steps=(ADD, CHECK, DEL),
        deliberate=("check-cached", "result-version@thin"),
    ),
    Scenario(
        "status-ok",
        "STATUS with a 1.1.0 main network (bridge answers)",
        config={"cniVersion": "1.1.0", "delegates": [MAIN11]},
        pods=(),
        steps=(STATUS,),
    ),
    Scenario(
        "status-main-old-version",
        "STATUS with a 1.0.0 main network (skipped)",
        config={"cniVersion": "1.1.0"},
        pods=(),
        steps=(STATUS,),
    ),
    Scenario(
        "status-main-fails",
        "STATUS when the main network's STATUS fails",
        config={"cniVersion": "1.1.0", "delegates": [rec(name="main", cniVersion="1.1.0", failOn=["STATUS"])]},
        pods=(),
        steps=(STATUS,),
    ),
    Scenario(
        "gc-keeps-valid",
        "GC naming this attachment as valid",
        nads=(Nad("blue", BLUE),),
        pods=(Pod(networks="blue"),),
        config={"cniVersion": "1.1.0", "delegates": [MAIN11]},
        steps=(ADD, gc_step([{"containerID": "$CID", "ifname": "eth0"}]), DEL),
    ),
    Scenario(
        "gc-stale",
        "GC with no valid attachment",
        nads=(Nad("blue", BLUE),),
        pods=(Pod(networks="blue"),),
        config={"cniVersion": "1.1.0", "delegates": [MAIN11]},
        steps=(ADD, gc_step([]), DEL),
    ),
    # --- interface names -----------------------------------------------------------------
    Scenario(
        "ifname-duplicate",
        "two attachments ask for the same interface name",
        nads=(Nad("blue", BLUE), Nad("red", RED)),
        pods=(Pod(networks="blue@x0,red@x0"),),
        deliberate=("ifname-early",),
    ),
    Scenario(
        "ifname-main-taken",
        "an attachment asks for the main network's eth0",
        nads=(Nad("blue", BLUE),),
        pods=(Pod(networks="blue@eth0"),),
        deliberate=("ifname-early",),
    ),
    # --- the API misbehaving (API stand-in: a real server gives no 5xx on demand) ----------------
    Scenario(
        "api-500-pod-get",
        "the pod GET answers 500 twice, then works",
        api="faulty",
        nads=(Nad("blue", BLUE),),
        pods=(Pod(networks="blue"),),
        steps=(Step("ADD", before=(ApiFault(500, "GET", "/pods/web", times=2),)), DEL),
        modes=("thin",),
    ),
    Scenario(
        "api-503-pod-get",
        "the pod GET answers 503 once, then works",
        api="faulty",
        nads=(Nad("blue", BLUE),),
        pods=(Pod(networks="blue"),),
        steps=(Step("ADD", before=(ApiFault(503, "GET", "/pods/web"),)), DEL),
        modes=("thin",),
    ),
    Scenario(
        "api-500-nad-get",
        "the NAD GET answers 500",
        api="faulty",
        nads=(Nad("blue", BLUE),),
        pods=(Pod(networks="blue"),),
        steps=(Step("ADD", before=(ApiFault(500, "GET", "/network-attachment-definitions/blue"),)), DEL),
        modes=("thin",),
        deliberate=("api-transient-retry",),
    ),
    Scenario(
        "api-409-status-put",
        "the network-status PUT conflicts once",
        api="faulty",
        nads=(Nad("blue", BLUE),),
        pods=(Pod(networks="blue"),),
        steps=(Step("ADD", before=(ApiFault(409, "PUT", "/status"),)), DEL),
        modes=("thin",),
    ),
    Scenario(
        "api-500-status-put",
        "the network-status PUT answers 500",
        api="faulty",
        nads=(Nad("blue", BLUE),),
        pods=(Pod(networks="blue"),),
        steps=(Step("ADD", before=(ApiFault(500, "PUT", "/status"),)), DEL),
        modes=("thin",),
        deliberate=("api-transient-retry",),
    ),
)
