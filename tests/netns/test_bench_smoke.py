"""The meta-plugin benchmark's programs really run: one ADD+DEL of a one-attachment pod
through Multus thin, Multus thick, kvnet-cni and kvnet thick on the real API server, each
leaving exactly one ADD and one DEL in the no-op delegate's record and each counted in
the audit log under its own ServiceAccount (bench/meta_cni.py; no timing is asserted)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from bench.meta_cni import PROGRAMS, smoke
from kvnet.lab.kube import KubeCluster

pytestmark = pytest.mark.root


def test_each_program_adds_and_deletes_once(
    netns_factory: Callable[..., Any], kvnet_bin_dir: str, tmp_path: Path, kube: KubeCluster
) -> None:
    node, pod = netns_factory("kvbn"), netns_factory("kvbp")
    got = smoke(kube, node, pod, tmp_path)
    assert sorted(got) == sorted(p.name for p in PROGRAMS)
    for name, (sample, records) in got.items():
        calls = [(r[0], r[2]) for r in records if r[0] != "VERSION"]
        assert calls == [("ADD", "eth0"), ("DEL", "eth0")], name
        assert len({r[1] for r in records if r[0] != "VERSION"}) == 1, name  # one container, ADD and DEL alike
        assert sample.add_requests >= 1, name  # at least the pod's read, seen in the audit log as this program
