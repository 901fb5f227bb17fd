"""The differential lane writes its result table into docs/multus-compat.md when asked
(``KVNET_WRITE_COMPAT_TABLE=1``), and only after a run of the whole table."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from differential import harness
from differential.scenarios import DELIBERATE, GLOBAL_RULES, KNOWN, SCENARIOS

DOC = Path(__file__).resolve().parents[2] / "docs" / "multus-compat.md"


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    if os.environ.get("KVNET_WRITE_COMPAT_TABLE") != "1" or not harness.RESULTS:
        return
    missing = [f"{s.name}-{m}" for s in SCENARIOS for m in s.modes if (s.name, m) not in harness.RESULTS]
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    if missing:
        if reporter is not None:
            reporter.write_line(
                f"compat table not written: {len(missing)} rows did not run ({', '.join(missing[:5])}...)"
            )
        return
    harness.write_compat_table(DOC, harness.compat_table(harness.RESULTS, SCENARIOS, DELIBERATE, KNOWN, GLOBAL_RULES))
    if reporter is not None:
        reporter.write_line(f"compat table written to {DOC}")
