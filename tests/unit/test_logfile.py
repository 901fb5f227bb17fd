"""logFile with logOptions: rotation, compression and pruning as Multus's lumberjack does them."""

from __future__ import annotations

import gzip
import logging
import os
import time
from pathlib import Path

import pytest

from kvnet.meta.logfile import RotatingLog, backup_name


def test_backup_name_is_lumberjacks() -> None:
    assert backup_name("/var/log/kvnet.log", 1_700_000_000.123) == "/var/log/kvnet-2023-11-14T22-13-20.123.log"


def fill(handler: RotatingLog, megabytes: float) -> None:
    logger = logging.Logger("kvnet.test.logfile")
    logger.addHandler(handler)
    line = "x" * 1023
    for _ in range(int(megabytes * 1024)):
        logger.error(line)
    handler.close()


@pytest.mark.parametrize("compress", [True, False])
def test_rotates_past_max_size(tmp_path: Path, compress: bool) -> None:
    path = tmp_path / "kvnet.log"
    handler = RotatingLog(str(path), {"maxSize": 1, "compress": compress})
    fill(handler, 2.5)
    backups = handler.backups()
    assert len(backups) == 2
    assert all(b.endswith(".log.gz" if compress else ".log") for b in backups)
    assert os.path.getsize(path) <= 1024 * 1024
    first = backups[-1]
    data = gzip.decompress(Path(first).read_bytes()) if compress else Path(first).read_bytes()
    assert 1024 * 1024 - 1024 <= len(data) <= 1024 * 1024


def test_keeps_max_backups_and_drops_old_ones(tmp_path: Path) -> None:
    path = tmp_path / "kvnet.log"
    old = tmp_path / "kvnet-2020-01-01T00-00-00.000.log.gz"
    old.write_bytes(b"")
    os.utime(old, (time.time() - 30 * 86400,) * 2)
    handler = RotatingLog(str(path), {"maxSize": 1, "maxBackups": 2, "maxAge": 7})
    fill(handler, 4.5)
    backups = handler.backups()
    assert len(backups) == 2 and str(old) not in backups


def test_multus_defaults(tmp_path: Path) -> None:
    handler = RotatingLog(str(tmp_path / "kvnet.log"))
    assert (handler.maxBytes, handler.max_backups, handler.max_age_days, handler.compress) == (
        100 * 1024 * 1024,
        5,
        5,
        True,
    )
    handler.close()
