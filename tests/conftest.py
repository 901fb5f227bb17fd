"""Shared fixtures. Tests are sorted by cost: unit/ needs nothing, netns/ needs root and
the reference CNI plugins, libvirt/ starts its own libvirtd, vm/ boots a real guest.
A test that cannot run here skips and says why; it never passes silently."""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from kvnet.lab.kube import KubeCluster, peers_built, resource
from kvnet.lab.netns import Netns, delete_netns, make_netns

if TYPE_CHECKING:
    from kvnet.lab.pod_demo import PodLab

REPO = Path(__file__).resolve().parent.parent
CNI_PLUGIN_DIRS = ("/usr/lib/cni", "/opt/cni/bin")


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--regen-golden",
        action="store_true",
        default=False,
        help="rewrite tests/golden/<case>/expected-* from the code",
    )


ALLOWED_SKIP = "missing kernel feature: "


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]):  # type: ignore[no-untyped-def]
    """With KVNET_REQUIRE_LANES=1 (CI) a skip is a failure: the root, libvirt and VM lanes must
    really run there. Only skips for a kernel feature this host lacks stay skips."""
    outcome = yield
    report = outcome.get_result()
    if not report.skipped or hasattr(report, "wasxfail") or os.environ.get("KVNET_REQUIRE_LANES") != "1":
        return
    reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
    reason = reason.removeprefix("Skipped: ")
    if not reason.startswith(ALLOWED_SKIP):
        report.outcome = "failed"
        report.longrepr = f"skipped where every lane must run (KVNET_REQUIRE_LANES=1): {reason}"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Anything marked ``root`` skips, with the reason, when not running as root."""
    if os.geteuid() == 0:
        return
    skip = pytest.mark.skip(reason="needs root (network namespaces / libvirtd); run as root")
    for item in items:
        if "root" in item.keywords:
            item.add_marker(skip)


@pytest.fixture
def netns() -> Iterator[Netns]:
    """A fresh network namespace, always removed."""
    if os.geteuid() != 0:
        pytest.skip("needs root to create network namespaces")
    ns = make_netns()
    try:
        yield ns
    finally:
        delete_netns(ns)


@pytest.fixture
def netns_factory() -> Iterator[callable]:  # type: ignore[valid-type]
    """Make as many namespaces as a test needs; all are removed at the end."""
    if os.geteuid() != 0:
        pytest.skip("needs root to create network namespaces")
    made: list[Netns] = []

    def factory(prefix: str = "kvt") -> Netns:
        ns = make_netns(prefix)
        made.append(ns)
        return ns

    try:
        yield factory
    finally:
        for ns in made:
            delete_netns(ns)


PEER_PLUGINS = REPO / "build" / "peers" / "cni"
PLUGIN_GENERATIONS = ("debian", "v1.10.0")


def _plugin_dir(generation: str) -> str:
    """Where one generation of the reference plugins lives (skip with the reason if absent)."""
    if generation == "v1.10.0":
        if not (PEER_PLUGINS / "bridge").exists():
            pytest.skip(f"CNI plugins v1.10.0 not built in {PEER_PLUGINS} (run `make peers`)")
        return str(PEER_PLUGINS)
    for d in CNI_PLUGIN_DIRS:
        if Path(d, "bridge").exists() and Path(d, "host-local").exists():
            return d
    pytest.skip("reference CNI plugins not installed (apt-get install containernetworking-plugins)")


@pytest.fixture(scope="session", params=PLUGIN_GENERATIONS)
def cni_bin_dir(request: pytest.FixtureRequest) -> str:
    """The reference plugins; every lane runs on both generations: Debian's 1.1.1 (CNI
    1.0.0 results, no STATUS) and v1.10.0 from build/peers (CNI 1.1.0 results, STATUS, GC)."""
    return _plugin_dir(str(request.param))


@pytest.fixture(scope="session")
def peer_plugin_dir() -> str:
    """The v1.10.0 reference plugins (plus whereabouts) only: for what Debian's cannot do."""
    return _plugin_dir("v1.10.0")


@pytest.fixture(scope="session")
def kvnet_bin_dir() -> str:
    """The folder with kvnet's own console scripts (the venv's bin)."""
    found = shutil.which("kvnet-cni")
    if found:
        return str(Path(found).parent)
    import sys

    candidate = Path(sys.executable).parent
    if (candidate / "kvnet-cni").exists():
        return str(candidate)
    pytest.skip("kvnet is not installed (pip install -e .)")


@pytest.fixture(scope="session")
def kube(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KubeCluster]:
    """The real API server (etcd + kube-apiserver from build/peers), one per test session;
    the labs on it delete what they create."""
    if os.geteuid() != 0:
        pytest.skip("needs root (the API address is added to the root netns)")
    missing = peers_built()
    if missing:
        pytest.skip(missing)
    with KubeCluster(tmp_path_factory.mktemp("kube")) as cluster:
        yield cluster


def _peer_lab(
    netns_factory: Callable[..., Netns], peer_plugin_dir: str, kvnet_bin_dir: str, tmp_path: Path, kube: KubeCluster
) -> PodLab:
    from kvnet.lab.pod_demo import PodLab

    node, pod = netns_factory("kvnode"), netns_factory("kvpod")
    return PodLab(node, pod, tmp_path, kvnet_bin_dir=kvnet_bin_dir, plugin_dir=peer_plugin_dir, kube=kube)


@pytest.fixture
def peer_lab(
    netns_factory: Callable[..., Netns], peer_plugin_dir: str, kvnet_bin_dir: str, tmp_path: Path, kube: KubeCluster
) -> Iterator[PodLab]:
    """A node and a pod netns on the real API server, with the v1.10.0 plugins (and
    whereabouts) from build/peers: the lab of the lanes that need the real server's answers."""
    with _peer_lab(netns_factory, peer_plugin_dir, kvnet_bin_dir, tmp_path, kube) as lab:
        yield lab


@pytest.fixture
def whereabouts_lab(
    netns_factory: Callable[..., Netns], peer_plugin_dir: str, kvnet_bin_dir: str, tmp_path: Path, kube: KubeCluster
) -> Iterator[PodLab]:
    """:func:`peer_lab` for the lanes with whereabouts IPAM (skipped without it): once the
    lab is gone, the IPPools its ranges made are deleted."""
    if not Path(peer_plugin_dir, "whereabouts").exists():
        pytest.skip(f"whereabouts not built in {peer_plugin_dir} (run `make peers`)")
    with _peer_lab(netns_factory, peer_plugin_dir, kvnet_bin_dir, tmp_path, kube) as lab:
        yield lab
    pools = resource("IPPool")
    for pool in kube.call("GET", f"{pools.prefix}/{pools.plural}")["items"]:
        kube.delete("IPPool", pool["metadata"]["namespace"], pool["metadata"]["name"])
