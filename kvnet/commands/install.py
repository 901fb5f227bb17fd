"""``kvnet install``: put kvnet's CNI programs and config on a node, idempotently.

What Multus's entrypoint does for a node, for kvnet: the CNI binaries go into the CNI
bin dir (symlinks to this installation, or copies with ``--copy``) and a config file
``00-kvnet.conflist`` goes into the CNI conf dir, so the runtime picks kvnet first. The
main network is ``--cluster-network`` when given, else the node's current default
network (the first other config in the conf dir) embedded as ``delegates[0]``, as
Multus's auto-configuration does. Running it again changes nothing unless an input did.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

from kvnet.core.errors import InvalidConfig, IOFailure

CONF_NAME = "00-kvnet.conflist"
BINARIES = {"kvnet-cni": "kvnet", "kvnet-binding": "kvnet-binding"}
SHIM = "kvnet-shim"  # written as a self-contained script for ``python -I -S`` (see kvnet.meta.shim)
_CONF_EXTS = (".conf", ".conflist", ".json")


def register(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--bin-dir", default="/opt/cni/bin", help="CNI bin dir (default /opt/cni/bin)")
    parser.add_argument("--conf-dir", default="/etc/cni/net.d", help="CNI conf dir (default /etc/cni/net.d)")
    parser.add_argument("--kubeconfig", help="kubeconfig the meta-plugin uses to read pods and NADs")
    parser.add_argument(
        "--cni-dir",
        default="/var/lib/cni/multus",
        help="delegate cache dir (default Multus's /var/lib/cni/multus, so a node can switch)",
    )
    parser.add_argument(
        "--cluster-network", help="the main network (NAD or conf name); default: the node's current one"
    )
    parser.add_argument(
        "--mode",
        choices=("thin", "thick"),
        default="thin",
        help="thin: kvnet-cni per call; thick: kvnet-shim to a kvnet daemon",
    )
    parser.add_argument("--socket", default="/run/kvnet/kvnet.sock", help="daemon socket for --mode thick")
    parser.add_argument(
        "--plugin-name",
        default="kvnet",
        help="the plugin type/binary name for the meta-plugin (e.g. multus to stand in for it)",
    )
    parser.add_argument("--copy", action="store_true", help="copy the programs instead of symlinking them")
    parser.add_argument("--cni-version", default="1.0.0", help="cniVersion of the written config")
    parser.set_defaults(func=run)


def _scripts_dir() -> Path:
    found = shutil.which("kvnet-cni")
    return Path(found).parent if found else Path(sys.executable).parent


def install_binary(src: Path, dst: Path, *, copy: bool) -> str:
    """Symlink (or copy) ``src`` to ``dst``; returns "unchanged", "installed" or "updated"."""
    if not src.exists():
        raise IOFailure(f"kvnet install: {src} does not exist (is kvnet installed?)")
    existed = dst.exists() or dst.is_symlink()
    if copy:
        if existed and not dst.is_symlink() and dst.read_bytes() == src.read_bytes():
            return "unchanged"
        tmp = dst.with_name(f".{dst.name}.tmp")
        shutil.copy2(src, tmp)
        os.replace(tmp, dst)
    else:
        if dst.is_symlink() and os.readlink(dst) == str(src):
            return "unchanged"
        tmp = dst.with_name(f".{dst.name}.tmp")
        tmp.unlink(missing_ok=True)
        tmp.symlink_to(src)
        os.replace(tmp, dst)
    return "updated" if existed else "installed"


def install_shim(dst: Path) -> str:
    """``kvnet-shim`` as a standalone stdlib script: it starts without ``site``."""
    from kvnet.meta.shim import standalone_script

    if dst.is_symlink():
        dst.unlink()
    state = write_if_changed(dst, standalone_script(sys.executable))
    os.chmod(dst, 0o755)
    return state


def current_default_network(conf_dir: Path) -> dict[str, Any] | None:
    """The first config (by file name) in ``conf_dir`` that is not kvnet's own."""
    if not conf_dir.is_dir():
        return None
    for path in sorted(conf_dir.iterdir()):
        if path.name == CONF_NAME or path.suffix not in _CONF_EXTS or not path.is_file():
            continue
        try:
            conf = json.loads(path.read_text())
        except (OSError, ValueError) as err:
            raise InvalidConfig(f"kvnet install: cannot read the default network config {path}: {err}") from err
        if isinstance(conf, dict) and (conf.get("type") or conf.get("plugins")):
            return conf
    return None


def build_config(args: argparse.Namespace) -> dict[str, Any]:
    plugin: dict[str, Any] = {
        "type": args.plugin_name if args.mode == "thin" else "kvnet-shim",
        "cniDir": args.cni_dir,
        "binDir": args.bin_dir,
        "logToStderr": True,
        "logLevel": "error",
    }
    if args.kubeconfig:
        plugin["kubeconfig"] = args.kubeconfig
    if args.mode == "thick":
        plugin["socketPath"] = args.socket
    if args.cluster_network:
        if not args.kubeconfig:
            raise InvalidConfig("kvnet install: --cluster-network needs --kubeconfig (it may name a NAD)")
        plugin["confDir"] = args.conf_dir
        plugin["clusterNetwork"] = args.cluster_network
    else:
        main = current_default_network(Path(args.conf_dir))
        if main is None:
            raise InvalidConfig(
                f"kvnet install: no default network config in {args.conf_dir}; install one or pass --cluster-network"
            )
        plugin["delegates"] = [main]
    return {"cniVersion": args.cni_version, "name": "kvnet-cni-network", "plugins": [plugin]}


def write_if_changed(path: Path, text: str) -> str:
    if path.exists() and path.read_text() == text:
        return "unchanged"
    existed = path.exists()
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    with os.fdopen(fd, "w") as fh:
        fh.write(text)
    os.chmod(tmp, 0o644)
    os.replace(tmp, path)
    return "updated" if existed else "installed"


def run(args: argparse.Namespace) -> int:
    scripts = _scripts_dir()
    bin_dir = Path(args.bin_dir)
    try:
        bin_dir.mkdir(parents=True, exist_ok=True)
        config = build_config(args)
        for script, name in BINARIES.items():
            target = args.plugin_name if script == "kvnet-cni" else name
            state = install_binary(scripts / script, bin_dir / target, copy=args.copy)
            print(f"{state}: {bin_dir / target}")
        state = install_shim(bin_dir / SHIM)
        print(f"{state}: {bin_dir / SHIM}")
        conf_path = Path(args.conf_dir) / CONF_NAME
        state = write_if_changed(conf_path, json.dumps(config, indent=2) + "\n")
    except OSError as err:
        raise IOFailure(f"kvnet install: {err}") from err
    print(f"{state}: {conf_path}")
    return 0
