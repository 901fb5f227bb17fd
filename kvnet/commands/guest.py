"""``kvnet guest build --out DIR``: build (or reuse) the tiny test guest image."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def register(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="guest_command", required=True, metavar="ACTION")
    build = sub.add_parser("build", help="download the Debian kernel and write kernel + initramfs")
    build.add_argument("--out", required=True, type=Path, help="build folder (cached; rebuilt when inputs change)")
    build.add_argument("--force", action="store_true", help="rebuild even when the stamp matches")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from kvnet.lab import guest

    image = guest.build(args.out, force=args.force)
    kind = "vmlinux (uncompressed)" if image.uncompressed else "vmlinuz"
    print(f"guest: {image.kernel_package} {image.kernel_version}, {kind}", file=sys.stderr)
    print(f"  kernel {image.kernel}\n  initrd {image.initrd}", file=sys.stderr)
    return 0
