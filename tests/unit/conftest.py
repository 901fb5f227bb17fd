"""Unit-lane options: ``--regen-golden`` rewrites tests/golden/<case>/expected-* from the code.

Run it as ``pytest tests/unit/test_golden.py --regen-golden`` (the option lives in this
conftest, which pytest loads early only when tests/unit is on the command line); the
environment variable ``KVNET_REGEN_GOLDEN=1`` does the same from anywhere.
"""

from __future__ import annotations

import os

import pytest


def pytest_addoption(parser: pytest.Parser) -> None:
    try:
        parser.addoption("--regen-golden", action="store_true", default=False, help="rewrite the golden expected files")
    except ValueError:
        pass  # already declared by a conftest closer to the root


@pytest.fixture
def regen_golden(request: pytest.FixtureRequest) -> bool:
    return (
        bool(request.config.getoption("--regen-golden", default=False)) or os.environ.get("KVNET_REGEN_GOLDEN") == "1"
    )
