"""kvnet explain's model: facts in, the first proven cause out (the parsers are the meta-plugin's)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from kvnet.cni import libcni_cache
from kvnet.cni.libcni_cache import CachedAttachment
from kvnet.commands.explain import CacheFact, Finding, NadFact, PodFacts, explain, nad_mtu, node_conf, read_cache
from kvnet.core.errors import KvnetError
from kvnet.meta import cache
from kvnet.meta.cache import CachedDelegate

OK_STATUS = json.dumps([{"name": "ns/br", "interface": "net1", "ips": ["10.1.0.5"]}])


def facts(networks: str, status: str | None = None, nads: tuple[NadFact, ...] = (), **kw: object) -> PodFacts:
    return PodFacts("ns", "p", networks, status, nads, **kw)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("pod", "present", "cause"),
    [
        (facts("br", OK_STATUS, (NadFact("ns", "br", 200),)), True, None),
        (facts("br", None, (NadFact("ns", "br", 404),)), False, "NAD ns/br not found"),
        (facts("br", None, (NadFact("ns", "br", 403),)), False, "NAD ns/br not readable (HTTP 403)"),
        (
            facts("other/br", None, (NadFact("other", "br", 200),), namespace_isolation=True),
            False,
            "namespace isolation: the pod in ns may not use a NAD in other",
        ),
        (  # globalNamespaces (default: "default") are usable from every namespace, as in the meta-plugin
            facts(
                "default/br",
                None,
                (NadFact("default", "br", 200),),
                namespace_isolation=True,
                event_messages=("add default/br: EPERM",),
            ),
            False,
            "delegate error: add default/br: EPERM",
        ),
        (
            facts(
                "other/br",
                None,
                (NadFact("other", "br", 200),),
                namespace_isolation=True,
                global_namespaces=("other",),
                event_messages=("add other/br: EPERM",),
            ),
            False,
            "delegate error: add other/br: EPERM",
        ),
        (
            facts("br", OK_STATUS, (NadFact("ns", "br", 200, "intel.com/sriov"),)),
            False,
            "resourceName intel.com/sriov without an allocated device (no device-info)",
        ),
        (
            facts("br", None, (NadFact("ns", "br", 200),), event_messages=("add ns/br: bridge failed: EPERM",)),
            False,
            "delegate error: add ns/br: bridge failed: EPERM",
        ),
    ],
)
def test_first_cause(pod: PodFacts, present: bool, cause: str | None) -> None:
    (finding,) = explain(pod)
    assert finding.present is present
    assert finding.cause == cause


def test_refused_annotation_is_a_finding() -> None:
    (finding,) = explain(facts("[not json"))
    assert isinstance(finding, Finding)
    assert not finding.present
    assert finding.cause is not None and finding.cause.startswith("annotation refused")


def test_no_annotation_no_findings() -> None:
    assert explain(facts("")) == ()


# --- the node's cache and MTU --------------------------------------------------------


def test_cache_read_from_files_names_the_interface(tmp_path: Path) -> None:
    cid = "c0ffee"
    delegates = (
        CachedDelegate("default/main", {"cniVersion": "1.0.0", "name": "main", "type": "bridge"}, master=True),
        CachedDelegate("ns/br", {"cniVersion": "1.0.0", "name": "br", "type": "bridge"}),
    )
    cache.save(tmp_path, cid, delegates)
    args = (("K8S_POD_NAMESPACE", "ns"), ("K8S_POD_NAME", "p"), ("K8S_POD_UID", "u1"))
    libcni_cache.write_result(tmp_path, CachedAttachment("br", cid, "net1", b"{}", cni_args=args))
    libcni_cache.write_result(tmp_path, CachedAttachment("br", "other", "net1", b"{}", cni_args=args[:1]))
    fact = read_cache(str(tmp_path), {"metadata": {"namespace": "ns", "name": "p", "uid": "u1"}}, None)
    assert fact == CacheFact(str(tmp_path), cid, (("ns/br", "net1"),))
    (finding,) = explain(facts("br", OK_STATUS, (NadFact("ns", "br", 200),), cache=fact))
    assert finding.cache == "the node's cache has it as net1"
    (missing,) = explain(facts("gone", None, (NadFact("ns", "gone", 200),), cache=fact))
    assert missing.cause == f"the ADD of container {cid} did not ask for it (not in the node's delegate cache)"
    assert missing.cache == f"the node's cache (container {cid}) does not have it"
    none = read_cache(str(tmp_path), {"metadata": {"namespace": "ns", "name": "q"}}, None)
    assert none.container_id is None


@pytest.mark.parametrize(
    ("config", "mtu"),
    [
        ({"type": "bridge", "mtu": 1400}, 1400),
        ({"plugins": [{"type": "bridge", "mtu": 9000}, {"type": "tuning", "mtu": 1}]}, 9000),
        ({"type": "bridge"}, None),
        ({"type": "bridge", "mtu": "1400"}, None),
    ],
)
def test_nad_mtu(config: dict[str, object], mtu: int | None) -> None:
    assert nad_mtu({"spec": {"config": json.dumps(config)}}) == mtu


def test_mtu_mismatch_from_status_and_link() -> None:
    nad = (NadFact("ns", "br", 200, mtu=1400),)
    status = json.dumps([{"name": "ns/br", "interface": "net1", "ips": [], "mtu": 1500}])
    (by_status,) = explain(facts("br", status, nad))
    assert by_status.mtu == "MTU mismatch: NAD says 1400, network-status has 1500 for net1"
    assert by_status.present and not by_status.ok
    (by_link,) = explain(facts("br", OK_STATUS, nad, link_mtus=(("net1", 1500),)))
    assert by_link.mtu == "MTU mismatch: NAD says 1400, net1 has 1500"
    (same,) = explain(facts("br", OK_STATUS, nad, link_mtus=(("net1", 1400),)))
    assert same.mtu is None and same.ok


@pytest.mark.parametrize(
    ("conf", "want"),
    [
        (  # the conflist kvnet install writes: the meta-plugin is its plugin
            {"cniVersion": "1.0.0", "name": "kvnet", "plugins": [
                {"type": "kvnet", "namespaceIsolation": True, "globalNamespaces": "default,shared", "cniDir": "/x"},
            ]},
            (True, ("default", "shared"), "/x"),
        ),
        ({"cniVersion": "1.0.0", "name": "m", "type": "multus"}, (False, ("default",), "/var/lib/cni/multus")),
    ],
)  # fmt: skip
def test_node_conf(tmp_path: Path, conf: dict[str, object], want: tuple[object, ...]) -> None:
    path = tmp_path / "00-kvnet.conflist"
    path.write_text(json.dumps(conf))
    assert node_conf(str(path)) == want


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("{", "cannot read --conf"),
        ("[]", "is not a JSON object"),
        ('{"cniVersion": "1.0.0", "name": "n", "plugins": [{"type": "bridge"}]}', "has no plugin of type kvnet"),
    ],
)
def test_node_conf_refuses_what_is_not_a_meta_plugin_config(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "conf"
    path.write_text(text)
    with pytest.raises(KvnetError, match=message):
        node_conf(str(path))
