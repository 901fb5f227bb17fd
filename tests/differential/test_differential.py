"""The differential lane: each scenario of tests/differential/scenarios.py through real
Multus 4.3 and through kvnet (thin: ``multus`` vs ``kvnet-cni``; thick: ``multus-shim`` +
``multus-daemon`` vs ``kvnet-shim`` + ``kvnet daemon``), compared field by field. Any
difference not listed as deliberate fails; a known one (being fixed) is a strict xfail."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from differential import harness
from differential.harness import Lane, Run, compare, discover, entries, judge, normalise, pinned_macs
from differential.model import Scenario
from differential.scenarios import DELIBERATE, GLOBAL_RULES, KNOWN, SCENARIOS
from kvnet.lab.kube import PEERS, KubeCluster

pytestmark = pytest.mark.root


class KnownDifference(AssertionError):
    """kvnet differs from Multus in the way the row's `known` entry says."""


def known_in(scenario: Scenario, mode: str) -> list[str]:
    return [KNOWN[k].cause for k in entries(scenario.known, mode) if mode in KNOWN[k].modes]


CASES = [
    pytest.param(
        s,
        mode,
        id=f"{s.name}-{mode}",
        marks=[pytest.mark.xfail(strict=True, raises=KnownDifference, reason="; ".join(known_in(s, mode)))]
        if known_in(s, mode)
        else [],
    )
    for s in SCENARIOS
    for mode in s.modes
]
DISCOVER = os.environ.get("KVNET_DIFF_DISCOVER")
REPORT = os.environ.get("KVNET_DIFF_REPORT")  # one JSON line per row: what the judge found


def verdict_record(scenario: Scenario, mode: str, verdict: harness.Verdict) -> dict[str, object]:
    return {
        "scenario": scenario.name,
        "mode": mode,
        "outcome": verdict.outcome,
        "deliberate": [r.id for r in verdict.deliberate],
        "known": [k.id for k in verdict.known],
        "stale": verdict.stale,
        "left": [str(d) for d in verdict.uncovered],
    }


@pytest.fixture(scope="module")
def lane(
    request: pytest.FixtureRequest,
    kube: KubeCluster,
    kvnet_bin_dir: str,
    peer_plugin_dir: str,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Lane]:
    for name in ("multus", "multus-shim", "multus-daemon"):
        if not os.access(PEERS / "bin" / name, os.X_OK):
            pytest.skip(f"Multus peer {name} not built in {PEERS / 'bin'} (run `make peers`)")
    lane = Lane(kube, Path(tmp_path_factory.mktemp("diff")), kvnet_bin_dir=kvnet_bin_dir, plugin_dir=peer_plugin_dir)
    lane.start()
    try:
        selected = [
            (item.callspec.params["scenario"], item.callspec.params["mode"])
            for item in request.session.items
            if item.module is request.module and hasattr(item, "callspec")
        ]
        if any(mode == "thick" for _, mode in selected):
            lane.start_thick()
        lane.prepare_all(selected)
        if any(mode == "thick" for _, mode in selected):
            time.sleep(1.0)  # multus-daemon's informers see what was just made
        yield lane
    finally:
        lane.stop()


@pytest.mark.parametrize(("scenario", "mode"), CASES)
def test_differential(lane: Lane, scenario: Scenario, mode: str) -> None:
    lane.prepare(scenario, mode)
    run = Run(lane, scenario, mode)
    multus, multus_logs = run.run("multus")
    kvnet, kvnet_logs = run.run("kvnet")
    pinned = pinned_macs(scenario)
    diffs = compare(
        scenario,
        normalise(multus, pinned=pinned, uids=run.all_uids),
        normalise(kvnet, pinned=pinned, uids=run.all_uids),
    )
    if DISCOVER:  # a help for keeping the table current, not a verdict
        with open(DISCOVER, "a", encoding="utf-8") as fh:
            fh.write(
                json.dumps(
                    {"scenario": scenario.name, "mode": mode, **discover(scenario, mode, diffs, DELIBERATE, KNOWN)}
                )
                + "\n"
            )
        return
    verdict = judge(scenario, mode, diffs, DELIBERATE, GLOBAL_RULES, KNOWN)
    harness.RESULTS[(scenario.name, mode)] = verdict
    if REPORT:
        with open(REPORT, "a", encoding="utf-8") as fh:
            fh.write(json.dumps(verdict_record(scenario, mode, verdict)) + "\n")
    detail = "\n".join(str(d) for d in diffs)
    logs = f"\n--- Multus stderr ---\n{multus_logs[-1][-3000:] if multus_logs else ''}\n--- kvnet stderr ---\n{kvnet_logs[-1][-3000:] if kvnet_logs else ''}"
    assert not verdict.stale, (
        f"listed for this row but not seen (remove them from the table): {verdict.stale}\n{detail}"
    )
    if verdict.outcome == "DIFFERS":
        pytest.fail("kvnet differs from Multus:\n" + "\n".join(str(d) for d in verdict.uncovered) + logs, pytrace=False)
    if verdict.outcome == "known":
        raise KnownDifference("known difference:\n" + detail)
