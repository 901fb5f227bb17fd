"""KubeVirt's sidecar-shim form: ``onDefineDomain`` and ``preCloudInitIso`` executables.

KubeVirt's shim image serves the gRPC protocol itself and runs these with the call's data
as arguments; they print the answer on stdout (errors on stderr, exit status 1). They call
the same ``Hooks`` as ``kvnet-sidecar``, configured from the environment.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys

from kvnet.core.errors import KvnetError
from kvnet.sidecar.hooks import Hooks, no_cloud_source
from kvnet.sidecar.wiring import SidecarSettings, build_hooks


def _setup() -> None:
    logging.basicConfig(stream=sys.stderr, level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")


def _write(data: bytes) -> None:
    sys.stdout.buffer.write(data)
    sys.stdout.flush()


def _start(
    prog: str, data: tuple[str, str], argv: list[str] | None, hooks: Hooks | None
) -> tuple[argparse.Namespace, Hooks]:
    """Both executables: ``--vmi`` and the hook point's ``data`` option (flag, help) parsed,
    logging on stderr, the hooks configured from the environment unless given."""
    p = argparse.ArgumentParser(prog=prog)
    p.add_argument("--vmi", required=True, help="the VMI as JSON")
    p.add_argument(data[0], required=True, help=data[1])
    args = p.parse_args(sys.argv[1:] if argv is None else argv)
    _setup()
    return args, hooks or build_hooks(SidecarSettings.from_env())


def on_define_domain(argv: list[str] | None = None, *, hooks: Hooks | None = None) -> int:
    """``onDefineDomain --vmi <json> --domain <xml>``: print the domain for libvirt."""
    args, hooks = _start("onDefineDomain", ("--domain", "the domain XML"), argv, hooks)
    try:
        out = hooks.on_define_domain(args.domain.encode(), args.vmi.encode())
    except KvnetError as err:
        print(f"{hooks.name} OnDefineDomain: {err.msg}", file=sys.stderr)
        return 1
    _write(out)
    return 0


def pre_cloud_init_iso(argv: list[str] | None = None, *, hooks: Hooks | None = None) -> int:
    """``preCloudInitIso --vmi <json> --cloud-init <json>``: print the CloudInitData JSON."""
    args, hooks = _start("preCloudInitIso", ("--cloud-init", "CloudInitData as JSON"), argv, hooks)
    try:
        legacy = _legacy_source(args.cloud_init)
        res = hooks.pre_cloud_init_iso(args.vmi.encode(), args.cloud_init.encode(), legacy)
    except KvnetError as err:
        print(f"{hooks.name} PreCloudInitIso: {err.msg}", file=sys.stderr)
        return 1
    _write(res.cloud_init_data)
    return 0


def _legacy_source(cloud_init: str) -> bytes:
    """The CloudInitNoCloudSource virt-launcher would send beside this CloudInitData."""
    try:
        data = json.loads(cloud_init)
    except json.JSONDecodeError:
        return b""
    if not isinstance(data, dict):
        return b""
    return no_cloud_source(data)
