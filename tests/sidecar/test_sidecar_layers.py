"""The sidecar package never imports the lab (the lab's launcher client imports the sidecar's
generated messages and its cloud-init mapping, not the other way round)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SIDECAR = Path(__file__).resolve().parents[2] / "sidecar"
SOURCES = sorted(p for p in SIDECAR.rglob("*.py") if "_pb2" not in p.name)


def _imports(path: Path) -> set[str]:
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            out.add(node.module)
    return out


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(SIDECAR)))
def test_sidecar_does_not_import_the_lab(path: Path) -> None:
    assert not [name for name in _imports(path) if name == "kvnet.lab" or name.startswith("kvnet.lab.")]


def test_sources_found() -> None:
    assert any(p.name == "hooks.py" for p in SOURCES)
