"""``python -m bench``: run every benchmark in turn; each writes its table to docs/bench/."""

from __future__ import annotations

import runpy
import sys

BENCHMARKS = ("bench.meta_cni", "bench.sidecar", "bench.vm_boot")


def main() -> int:
    for name in BENCHMARKS:
        print(f"== {name}", file=sys.stderr, flush=True)
        try:
            runpy.run_module(name, run_name="__main__")
        except SystemExit as done:
            if done.code not in (None, 0):
                return int(done.code) if isinstance(done.code, int) else 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
