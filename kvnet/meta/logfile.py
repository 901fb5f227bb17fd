"""Multus's ``logFile`` with ``logOptions``: a size-rotated log kept like lumberjack keeps it.

Multus writes its log through lumberjack with ``maxSize`` 100 (MB), ``maxAge`` 5 (days),
``maxBackups`` 5 and ``compress`` true unless ``logOptions`` says otherwise (its
``SetLogOptions``). :class:`RotatingLog` does the same: past ``maxSize`` megabytes the file
is renamed ``<name>-<UTC time>.<ext>`` (``2006-01-02T15-04-05.000``), gzipped when
``compress``, and backups beyond ``maxBackups`` or older than ``maxAge`` days are removed
(0 keeps them all). Imported only when a config names a ``logFile``.
"""

from __future__ import annotations

import gzip
import logging.handlers
import os
import shutil
import time
from collections.abc import Mapping
from typing import Any

DEFAULTS = {"maxSize": 100, "maxAge": 5, "maxBackups": 5, "compress": True}  # Multus's SetLogOptions
MB = 1024 * 1024


def backup_name(path: str, now: float) -> str:
    """lumberjack's backup name: the time (UTC, milliseconds) between the name and its extension."""
    folder, base = os.path.split(path)
    stem, ext = os.path.splitext(base)
    stamp = time.strftime("%Y-%m-%dT%H-%M-%S", time.gmtime(now)) + f".{int(now * 1000) % 1000:03d}"
    return os.path.join(folder, f"{stem}-{stamp}{ext}")


class RotatingLog(logging.handlers.RotatingFileHandler):
    def __init__(self, path: str, options: Mapping[str, Any] | None = None) -> None:
        opts = {**DEFAULTS, **(options or {})}
        self.max_age_days = int(opts["maxAge"])
        self.max_backups = int(opts["maxBackups"])
        self.compress = bool(opts["compress"])
        super().__init__(path, maxBytes=max(0, int(opts["maxSize"])) * MB, backupCount=0)

    def doRollover(self) -> None:
        if self.stream:
            self.stream.close()
            self.stream = None
        if os.path.exists(self.baseFilename):
            target = backup_name(self.baseFilename, time.time())
            os.rename(self.baseFilename, target)
            if self.compress:
                with open(target, "rb") as src, gzip.open(target + ".gz", "wb") as dst:
                    shutil.copyfileobj(src, dst)
                os.unlink(target)
        self._prune()
        self.stream = self._open()

    def backups(self) -> list[str]:
        """This log's backups, newest first."""
        folder, base = os.path.split(self.baseFilename)
        stem, ext = os.path.splitext(base)
        found = []
        for name in os.listdir(folder or "."):
            rest = name.removesuffix(".gz")
            if rest.startswith(f"{stem}-") and rest.endswith(ext) and rest != base:
                found.append(os.path.join(folder, name))
        return sorted(found, reverse=True)

    def _prune(self) -> None:
        cutoff = time.time() - self.max_age_days * 86400
        for i, path in enumerate(self.backups()):
            too_many = self.max_backups > 0 and i >= self.max_backups
            too_old = self.max_age_days > 0 and os.path.getmtime(path) < cutoff
            if too_many or too_old:
                try:
                    os.unlink(path)
                except FileNotFoundError:
                    pass
