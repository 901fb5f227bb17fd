"""The ``kvnet`` command: a thin dispatcher over ``kvnet.commands.*``.

Each subcommand lives in its own module, imported only when used, so ``kvnet render``
never pays for the Kubernetes client and ``kvnet daemon`` never pays for libvirt.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

from kvnet.core.errors import KvnetError

# subcommand -> (module, one-line help)
SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "render": ("kvnet.commands.render", "print the libvirt NICs and guest network data a VM would get"),
    "install": ("kvnet.commands.install", "install kvnet's CNI binaries and config on this node"),
    "daemon": ("kvnet.commands.daemon", "run the thick-mode CNI daemon on a unix socket"),
    "apiserver": ("kvnet.commands.apiserver", "run the local Kubernetes API stand-in (tests, demo)"),
    "demo": ("kvnet.commands.demo", "run the local end-to-end demo"),
    "guest": ("kvnet.commands.guest", "build the tiny test guest image"),
    "explain": ("kvnet.commands.explain", "say why a pod has or lacks each network it asked for"),
    "policy": ("kvnet.commands.policy", "enforce MultiNetworkPolicies on this node's pod attachments"),
}


def build_parser(argv: list[str]) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="kvnet", description=__doc__.splitlines()[0])
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logs on stderr")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    wanted = next((a for a in argv if a in SUBCOMMANDS), None)
    for name, (module, help_text) in SUBCOMMANDS.items():
        if name == wanted:
            importlib.import_module(module).register(sub.add_parser(name, help=help_text))
        else:
            sub.add_parser(name, help=help_text, add_help=False)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = build_parser(argv).parse_args(argv)
    logging.basicConfig(
        stream=sys.stderr,
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(levelname)s %(name)s: %(message)s",
    )
    try:
        return int(args.func(args) or 0)
    except KvnetError as err:
        print(f"kvnet {args.command}: {err.msg}", file=sys.stderr)
        if err.details:
            print(err.details, file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
