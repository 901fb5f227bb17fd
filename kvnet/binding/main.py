"""The ``kvnet-binding`` CNI entry point: env + stdin in, result or CNI error out.

Thin on purpose: logging is set up from the conf's ``logFile``/``logLevel`` (never
stdout, which carries the result), then ADD, DEL and CHECK go to ``kvnet.binding.plan``.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Mapping
from typing import Any, BinaryIO, TextIO

from kvnet.binding import plan as binding
from kvnet.cni.protocol import CniRequest, Handler, plugin_main

ABOUT = "kvnet-binding: plumbs a virt-launcher pod interface for the VM (KubeVirt network binding CNI)"
_LEVELS = {"debug": logging.DEBUG, "verbose": logging.INFO, "error": logging.ERROR, "panic": logging.CRITICAL}


def _setup_logging(conf: Mapping[str, Any]) -> None:
    """Multus-style: ``logFile`` gets the log at ``logLevel``; stderr gets errors only."""
    logger = logging.getLogger("kvnet")
    if logger.handlers:
        return
    level = _LEVELS.get(str(conf.get("logLevel", "error")), logging.ERROR)
    log_file = conf.get("logFile")
    handler: logging.Handler
    if isinstance(log_file, str) and log_file:
        handler = logging.FileHandler(log_file)
    else:
        handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s kvnet-binding pid=%(process)d %(message)s"))
    logger.addHandler(handler)
    logger.setLevel(level)


def _with_logging(fn: Any) -> Any:
    def handler(request: CniRequest) -> Mapping[str, Any] | None:
        _setup_logging(request.config)
        result: Mapping[str, Any] | None = fn(request)
        return result

    return handler


def handlers(*, own_logging: bool = True) -> dict[str, Handler]:
    """ADD, DEL and CHECK; ``own_logging=False`` when a host process already set logging up."""
    wrap = _with_logging if own_logging else (lambda fn: fn)
    return {"ADD": wrap(binding.add), "DEL": wrap(binding.delete), "CHECK": wrap(binding.check)}


def run(
    environ: Mapping[str, str] | None = None,
    stdin: BinaryIO | None = None,
    stdout: TextIO | None = None,
    *,
    own_logging: bool = True,
) -> int:
    """One CNI call; the meta-plugin also runs it in-process (kvnet.meta.wiring.InProcessBinding)."""
    return plugin_main(handlers(own_logging=own_logging), about=ABOUT, environ=environ, stdin=stdin, stdout=stdout)


def main() -> int:
    return run()


if __name__ == "__main__":
    raise SystemExit(main())
