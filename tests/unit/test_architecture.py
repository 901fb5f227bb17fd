"""The layering of docs/design.md, checked on the source tree (no import-linter needed).

The folders are the architecture: the shared core at the bottom, the CNI protocol layer on
it, one package per product (meta-plugin, binding CNI, domain translation, sidecar), and
the lab and the ``kvnet`` command on top. One module owns each outside library; no bare
``except``.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
# kvnet/sidecar and kvnet/templates are links to the top-level folders: list each file once.
SOURCES = sorted(
    p
    for top in ("kvnet", "sidecar", "templates")
    for p in (REPO / top).rglob("*.py")
    if "_pb2" not in p.name and p.relative_to(REPO).parts[:2] not in (("kvnet", "sidecar"), ("kvnet", "templates"))
)

# library -> the only modules (repo-relative) allowed to import it
OWNERS: dict[str, set[str]] = {
    "pyroute2": {"kvnet/binding/netlink.py"},
    "kubernetes": {"kvnet/meta/k8s.py", "kvnet/policy/agent.py"},  # the policy agent's list+watch
    "prometheus_client": {"kvnet/meta/metrics.py"},
    "jinja2": {"kvnet/domain/render.py"},
    "libvirt": {"kvnet/lab/libvirtd.py"},
    "scapy": {"kvnet/guestnet/codec.py"},
}

# layer -> the kvnet layers it may import (besides itself); the order is bottom to top
MAY_IMPORT: dict[str, set[str]] = {
    "kvnet.core": set(),
    "kvnet.cni": {"kvnet.core"},
    "kvnet.binding": {"kvnet.core", "kvnet.cni"},
    "kvnet.mirror": {"kvnet.core", "kvnet.cni"},  # the chained port-mirroring plugin
    "kvnet.meta": {"kvnet.core", "kvnet.cni", "kvnet.binding"},  # the in-process binding, SR-IOV sysfs
    "kvnet.domain": {"kvnet.core"},
    "kvnet.guestnet": {"kvnet.core"},
    "kvnet.templates": set(),
    "kvnet.sidecar": {"kvnet.core", "kvnet.domain", "kvnet.templates"},
    "kvnet.policy": {"kvnet.core", "kvnet.meta"},  # MultiNetworkPolicy: reads network-status, kubeconfigs
    "kvnet.lab": {
        "kvnet.core",
        "kvnet.cni",
        "kvnet.binding",
        "kvnet.mirror",
        "kvnet.meta",
        "kvnet.domain",
        "kvnet.sidecar",
    },
    "kvnet.commands": {
        "kvnet.core",
        "kvnet.cni",
        "kvnet.binding",
        "kvnet.meta",
        "kvnet.domain",
        "kvnet.sidecar",
        "kvnet.policy",
        "kvnet.lab",
    },
    "kvnet.cli": {"kvnet.core", "kvnet.commands"},
    "kvnet": set(),
}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    if parts[0] in ("sidecar", "templates"):
        parts = ["kvnet", *parts]
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def layer(module: str) -> str:
    parts = module.split(".")
    return ".".join(parts[:2]) if len(parts) > 1 else module


def imports(path: Path) -> Iterator[str]:
    tree = ast.parse(path.read_text(), str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from (a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            yield node.module
        elif isinstance(node, ast.ImportFrom) and node.level:
            base = module_name(path).split(".")
            if path.name != "__init__.py":
                base = base[:-1]
            base = base[: len(base) - (node.level - 1)]
            yield ".".join([*base, node.module] if node.module else base)


def test_sources_found() -> None:
    names = {module_name(p) for p in SOURCES}
    assert {"kvnet.core.model", "kvnet.meta.commands", "kvnet.binding.plan", "kvnet.sidecar.hooks"} <= names
    assert all(layer(n) in MAY_IMPORT for n in names), sorted(n for n in names if layer(n) not in MAY_IMPORT)


def test_layers_are_folders() -> None:
    """Every module sits in a layer package; nothing but the package marker and the CLI at the root."""
    root = sorted(p.name for p in (REPO / "kvnet").glob("*.py"))
    assert root == ["__init__.py", "cli.py"]


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(REPO)))
def test_library_owners(path: Path) -> None:
    rel = str(path.relative_to(REPO))
    for name in imports(path):
        top = name.split(".")[0]
        if top in OWNERS:
            assert rel in OWNERS[top], f"{rel} imports {name}; only {sorted(OWNERS[top])} may"


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(REPO)))
def test_layering(path: Path) -> None:
    me = module_name(path)
    mine = layer(me)
    for name in imports(path):
        if name.split(".")[0] != "kvnet" or name == "kvnet":
            continue
        theirs = layer(name)
        assert theirs == mine or theirs in MAY_IMPORT[mine], f"{me} ({mine}) imports {name} ({theirs})"


@pytest.mark.parametrize(
    ("low", "high"),
    [
        ("kvnet.meta", "kvnet.domain"),
        ("kvnet.meta", "kvnet.sidecar"),
        ("kvnet.binding", "kvnet.meta"),
        ("kvnet.sidecar", "kvnet.meta"),
        ("kvnet.sidecar", "kvnet.binding"),
        ("kvnet.sidecar", "kvnet.cni"),
        ("kvnet.domain", "kvnet.cni"),
        ("kvnet.domain", "kvnet.sidecar"),  # the translation reads no sysfs: the sidecar reads first
        ("kvnet.domain", "kvnet.binding"),
        ("kvnet.core", "kvnet.cni"),
    ],
)
def test_named_rules(low: str, high: str) -> None:
    """The rules a reader looks for, spelled out (the table above already implies them)."""
    assert high not in MAY_IMPORT[low]


# what reading or writing the world takes: a module that does no I/O imports none of these
IO_MODULES = frozenset(
    {"subprocess", "socket", "grpc", "libvirt", "os", "pathlib", "io", "fcntl", "shutil", "glob", "tempfile", "mmap"}
)


def _calls_open(path: Path) -> list[int]:
    tree = ast.parse(path.read_text(), str(path))
    return [
        n.lineno
        for n in ast.walk(tree)
        if isinstance(n, ast.Call) and isinstance(n.func, ast.Name) and n.func.id in ("open", "input", "print")
    ]


@pytest.mark.parametrize(
    "path",
    [p for p in SOURCES if layer(module_name(p)) in ("kvnet.domain", "kvnet.core")],
    ids=lambda p: str(p.relative_to(REPO)),
)
def test_translation_and_contract_do_no_io(path: Path) -> None:
    """The domain translates values read up front (docs/design.md §4) and the shared contract
    is values and rules: neither reads sysfs, files or sockets (render reads its templates)."""
    if module_name(path) == "kvnet.domain.render":
        return
    for name in imports(path):
        assert name.split(".")[0] not in IO_MODULES, f"{path} imports {name}"
    assert not _calls_open(path), f"{path} calls open/input/print at lines {_calls_open(path)}"


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(REPO)))
def test_no_bare_except(path: Path) -> None:
    tree = ast.parse(path.read_text(), str(path))
    bare = [n.lineno for n in ast.walk(tree) if isinstance(n, ast.ExceptHandler) and n.type is None]
    assert not bare, f"bare except at lines {bare}"


# lab modules that are data and pure builders only: the VM demo's scenario and its report
PURE_LAB = ("kvnet.lab.vm.scenario", "kvnet.lab.vm.report")
LAB_IO_MODULES = ("subprocess", "socket", "grpc", "libvirt", "os", "shutil", "tempfile")


@pytest.mark.parametrize("module", PURE_LAB)
def test_pure_lab_modules_do_no_io(module: str) -> None:
    """The demo's I/O lives in its run (``kvnet.lab.vm.run``) and the shared teardown."""
    [path] = [p for p in SOURCES if module_name(p) == module]
    for name in imports(path):
        assert name.split(".")[0] not in LAB_IO_MODULES, f"{module} imports {name}"
        assert name not in ("kvnet.lab.vm.run", "kvnet.lab.apiserver", "kvnet.lab.libvirtd", "kvnet.lab.launcher"), (
            f"{module} imports {name}"
        )
