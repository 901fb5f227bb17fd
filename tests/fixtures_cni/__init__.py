"""Helper CNI plugins for tests (fake plugins written into temporary bin dirs)."""

from __future__ import annotations

import json
import stat
import sys
from pathlib import Path
from typing import Any

FAKE_PLUGIN = Path(__file__).with_name("fake_plugin.py")


def make_fake_plugin(bin_dir: Path, name: str, **settings: Any) -> Path:
    """Write ``bin_dir/name``: an executable fake CNI plugin driven by ``settings``."""
    bin_dir.mkdir(parents=True, exist_ok=True)
    conf = bin_dir / f".{name}.settings.json"
    conf.write_text(json.dumps(settings))
    exe = bin_dir / name
    exe.write_text(f'#!/bin/sh\nexec "{sys.executable}" "{FAKE_PLUGIN}" "{conf}"\n')
    exe.chmod(exe.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return exe


def read_calls(record: Path) -> list[dict[str, Any]]:
    """The calls a fake plugin recorded, oldest first."""
    if not record.exists():
        return []
    return [json.loads(line) for line in record.read_text().splitlines() if line]
