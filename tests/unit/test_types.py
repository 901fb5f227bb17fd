"""mypy --strict over the whole package, as it installs (sidecar/ becomes kvnet.sidecar).

The source tree maps top-level folders into the package, which mypy cannot follow, so the
test lays the package out as installed (symlinks in a temp folder) and checks that.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def installed_layout(root: Path) -> Path:
    pkg = root / "kvnet"
    pkg.mkdir(parents=True)
    for entry in (REPO / "kvnet").iterdir():
        if entry.name != "__pycache__":
            (pkg / entry.name).symlink_to(entry)
    (pkg / "sidecar").symlink_to(REPO / "sidecar")
    (pkg / "templates").symlink_to(REPO / "templates")
    return root


def test_mypy_strict(tmp_path: Path) -> None:
    pytest.importorskip("mypy", reason="mypy is not installed (pip install -e '.[test]')")
    root = installed_layout(tmp_path / "src")
    env = dict(os.environ, MYPYPATH=str(root))
    proc = subprocess.run(
        [sys.executable, "-m", "mypy", "--config-file", str(REPO / "pyproject.toml"),
         "--cache-dir", str(tmp_path / "cache"), "kvnet"],
        cwd=root, env=env, capture_output=True, text=True, timeout=900,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
