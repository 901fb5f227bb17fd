"""The reliability lanes' lab: a node and a pod netns on the real API server, the v1.10.0
plugins, and whatever kvnet daemon a test started stopped on the way out."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from kvnet.lab.kube import KubeCluster
from kvnet.lab.pod_demo import PodLab
from reliability.harness import RelLab


@pytest.fixture
def rel(
    netns_factory: Callable[..., Any], peer_plugin_dir: str, kvnet_bin_dir: str, tmp_path: Path, kube: KubeCluster
) -> Iterator[RelLab]:
    node, pod = netns_factory("kvrnode"), netns_factory("kvrpod")
    with PodLab(node, pod, tmp_path, kvnet_bin_dir=kvnet_bin_dir, plugin_dir=peer_plugin_dir, kube=kube) as lab:
        rel = RelLab(lab, peer_plugin_dir)
        try:
            yield rel
        finally:
            rel.stop_daemon()
