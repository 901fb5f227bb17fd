"""kvnet explain's model: facts in, the first proven cause out (the parsers are the meta-plugin's)."""

from __future__ import annotations

import json

import pytest

from kvnet.commands.explain import Finding, NadFact, PodFacts, explain

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
