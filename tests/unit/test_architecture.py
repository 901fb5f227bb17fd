"""The layering rules of STYLE.md, checked on the source tree (no import-linter needed).

One module owns each outside library; the CNI programs and the sidecar never import each
other; the translation never does I/O libraries; no bare ``except``.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SOURCES = [p for top in ("kvnet", "sidecar") for p in (REPO / top).rglob("*.py") if "_pb2" not in p.name]

# library -> the only modules (repo-relative) allowed to import it
OWNERS: dict[str, set[str]] = {
    "pyroute2": {"kvnet/netlink.py"},
    "kubernetes": {"kvnet/k8s.py"},
    "jinja2": {"kvnet/domain/render.py"},
    "libvirt": {"kvnet/lab/libvirtd.py"},
}


def module_name(path: Path) -> str:
    rel = path.relative_to(REPO).with_suffix("")
    parts = list(rel.parts)
    if parts[0] == "sidecar":
        parts = ["kvnet", "sidecar", *parts[1:]]
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


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
    assert any(p.name == "model.py" for p in SOURCES)


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(REPO)))
def test_library_owners(path: Path) -> None:
    rel = str(path.relative_to(REPO))
    for name in imports(path):
        top = name.split(".")[0]
        if top in OWNERS:
            assert rel in OWNERS[top], f"{rel} imports {name}; only {sorted(OWNERS[top])} may"


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(REPO)))
def test_cni_and_sidecar_apart(path: Path) -> None:
    me = module_name(path)
    for name in imports(path):
        if me.startswith("kvnet.cni"):
            assert not name.startswith("kvnet.sidecar"), f"{me} imports {name}"
        if me.startswith("kvnet.sidecar"):
            assert not name.startswith("kvnet.cni"), f"{me} imports {name}"
        if me in ("kvnet.model", "kvnet.naming", "kvnet.errors"):
            assert not name.startswith(("kvnet.cni", "kvnet.sidecar", "kvnet.domain", "kvnet.lab")), f"{me} imports {name}"
        if me.count(".") == 1 and me not in ("kvnet.cli",):  # the core modules directly under kvnet/
            assert not name.startswith(("kvnet.cni", "kvnet.sidecar", "kvnet.lab", "kvnet.commands")), f"{me} imports {name}"
        if me.startswith("kvnet.domain") and me != "kvnet.domain.render":
            assert name.split(".")[0] not in ("subprocess", "socket", "grpc", "libvirt"), f"{me} imports {name}"


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(REPO)))
def test_no_bare_except(path: Path) -> None:
    tree = ast.parse(path.read_text(), str(path))
    bare = [n.lineno for n in ast.walk(tree) if isinstance(n, ast.ExceptHandler) and n.type is None]
    assert not bare, f"bare except at lines {bare}"
