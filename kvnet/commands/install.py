"""``kvnet install``: put kvnet's CNI programs and config on a node, idempotently.

What Multus's entrypoint does for a node, for kvnet: the CNI binaries go into the CNI
bin dir (symlinks to this installation, or copies with ``--copy``) and a config file
``00-kvnet.conflist`` goes into the CNI conf dir, so the runtime picks kvnet first. The
main network is ``--cluster-network`` when given, else the node's current default
network (the first other config in the conf dir) embedded as ``delegates[0]``, as
Multus's auto-configuration does. Running it again changes nothing unless an input did.

With ``--token-file`` (or ``--in-cluster``, a pod's own ServiceAccount) it also writes the
``--kubeconfig`` file, as a DaemonSet's install step would: the API server (``--server``,
else the in-cluster ``KUBERNETES_SERVICE_HOST``/``KUBERNETES_SERVICE_PORT``), its CA file
and the token by ``tokenFile``, so both API clients re-read a rotated token (the kubelet
rotates projected tokens) without a restart. The kubeconfig and the conflist are written
0600: the runtime reads them as root, and the embedded default network may carry
secrets (docs/meta-plugin.md, "Identity and RBAC").

Thin mode's ``kvnet-cni`` runs on the node, outside the pod whose ServiceAccount token the
kubelet projects: a ``tokenFile`` naming the pod's path would not be there. So with
``--mode thin --in-cluster`` the kubeconfig carries the token and the CA themselves
(``token``, ``certificate-authority-data``), as Multus's thin entrypoint writes
``multus.kubeconfig``; ``--watch SECONDS`` keeps running and rewrites what changed (the
token the kubelet rotated, a binary or the conflist someone removed) every SECONDS, until
SIGTERM. ``--kubeconfig-only`` writes the kubeconfig and nothing else (the policy agent's
install step, docs/operations.md).
"""

from __future__ import annotations

import argparse
import base64
import json
import logging
import os
import shutil
import signal
import stat
import sys
import tempfile
import threading
import types
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from kvnet.core.errors import InvalidConfig, IOFailure, KvnetError

log = logging.getLogger("kvnet.install")
CONF_NAME = "00-kvnet.conflist"
SECRET_MODE = 0o600  # the kubeconfig and the conflist, as Multus writes its own
# where the kubelet projects a pod's ServiceAccount token and the cluster's CA
SERVICE_ACCOUNT_DIR = "/var/run/secrets/kubernetes.io/serviceaccount"
SERVICE_ACCOUNT_TOKEN = f"{SERVICE_ACCOUNT_DIR}/token"
SERVICE_ACCOUNT_CA = f"{SERVICE_ACCOUNT_DIR}/ca.crt"
BINARIES = {"kvnet-cni": "kvnet", "kvnet-binding": "kvnet-binding", "kvnet-mirror": "kvnet-mirror"}
SHIM = "kvnet-shim"  # written as a self-contained script for ``python -I -S`` (see kvnet.meta.shim)
_CONF_EXTS = (".conf", ".conflist", ".json")


def register(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--bin-dir", default="/opt/cni/bin", help="CNI bin dir (default /opt/cni/bin)")
    parser.add_argument("--conf-dir", default="/etc/cni/net.d", help="CNI conf dir (default /etc/cni/net.d)")
    parser.add_argument(
        "--kubeconfig",
        help="kubeconfig the meta-plugin uses to read pods and NADs (written here with --token-file/--in-cluster)",
    )
    parser.add_argument(
        "--token-file",
        help="write --kubeconfig for this ServiceAccount token file (named as tokenFile: re-read when it rotates)",
    )
    parser.add_argument("--ca-file", help="the API server's CA bundle for the written kubeconfig")
    parser.add_argument(
        "--server",
        help="the API server URL for the written kubeconfig "
        "(default https://$KUBERNETES_SERVICE_HOST:$KUBERNETES_SERVICE_PORT)",
    )
    parser.add_argument(
        "--in-cluster",
        action="store_true",
        help=f"use this pod's ServiceAccount: --token-file {SERVICE_ACCOUNT_TOKEN}, --ca-file {SERVICE_ACCOUNT_CA}, "
        "the server from KUBERNETES_SERVICE_HOST/PORT (explicit options win)",
    )
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
    parser.add_argument(
        "--shim-python",
        default=sys.executable,
        help="the Python that runs kvnet-shim on the node (default this one; a container names the node's)",
    )
    parser.add_argument("--cni-version", default="1.0.0", help="cniVersion of the written config")
    parser.add_argument(
        "--kubeconfig-only",
        action="store_true",
        help="write only --kubeconfig (with --token-file/--in-cluster): no programs, no conflist",
    )
    parser.add_argument(
        "--watch",
        type=float,
        metavar="SECONDS",
        help="keep running: install again every SECONDS (a rotated token, a removed file) until SIGTERM",
    )
    parser.set_defaults(func=run)


def _scripts_dir() -> Path:
    found = shutil.which("kvnet-cni")
    return Path(found).parent if found else Path(sys.executable).parent


def install_binary(src: Path, dst: Path, *, copy: bool) -> str:
    """Symlink (or copy) ``src`` to ``dst``; returns "unchanged", "installed" or "updated"."""
    if not src.exists():
        raise IOFailure(f"{src} does not exist (is kvnet installed?)")
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


def install_shim(dst: Path, python: str = sys.executable) -> str:
    """``kvnet-shim`` as a standalone stdlib script: it starts without ``site``."""
    from kvnet.meta.shim import standalone_script

    if dst.is_symlink():
        dst.unlink()
    return write_if_changed(dst, standalone_script(python), mode=0o755)


def in_cluster_server(environ: Mapping[str, str]) -> str:
    """The API server as a pod sees it (client-go's ``InClusterConfig``, Multus's entrypoint)."""
    host, port = environ.get("KUBERNETES_SERVICE_HOST", ""), environ.get("KUBERNETES_SERVICE_PORT", "")
    if not host or not port:
        raise InvalidConfig(
            "the kubeconfig needs --server, or KUBERNETES_SERVICE_HOST and KUBERNETES_SERVICE_PORT (set in every pod)"
        )
    scheme = environ.get("KUBERNETES_SERVICE_PROTOCOL") or "https"
    return f"{scheme}://[{host}]:{port}" if ":" in host else f"{scheme}://{host}:{port}"


def _readable(option: str, path: str, *, nonempty: bool = False) -> None:
    try:
        with open(path, "rb") as fh:
            empty = not fh.read().strip()
    except OSError as err:
        raise InvalidConfig(f"cannot read {option} {path}: {err.strerror or err}") from None
    if nonempty and empty:
        raise InvalidConfig(f"{option} {path} is empty")


def service_account_kubeconfig(
    args: argparse.Namespace, environ: Mapping[str, str] = os.environ
) -> dict[str, Any] | None:
    """The kubeconfig to write for a ServiceAccount token file, or None when none is asked for.

    The token is named by ``tokenFile``, never copied in: client-go and both of kvnet's
    clients re-read it, so a token the kubelet rotates is used without a restart. Except
    for thin mode in a pod (``--mode thin --in-cluster``): the node runs ``kvnet-cni``,
    where the pod's files are not, so the token and the CA go into the kubeconfig.
    """
    token_file = args.token_file or (SERVICE_ACCOUNT_TOKEN if args.in_cluster else None)
    if not token_file:
        if args.ca_file or args.server:
            raise InvalidConfig("--ca-file and --server describe a kubeconfig to write: add --token-file")
        return None
    if not args.kubeconfig:
        raise InvalidConfig("--token-file needs --kubeconfig (where to write the kubeconfig)")
    ca_file = args.ca_file or (SERVICE_ACCOUNT_CA if args.in_cluster else None)
    server = args.server or in_cluster_server(environ)
    _readable("--token-file", token_file, nonempty=True)
    embed = embeds_credentials(args)
    cluster: dict[str, Any] = {"server": server}
    if ca_file:
        _readable("--ca-file", ca_file)
        if embed:
            cluster["certificate-authority-data"] = base64.b64encode(Path(ca_file).read_bytes()).decode()
        else:
            cluster["certificate-authority"] = os.path.abspath(ca_file)
    user = {"token": Path(token_file).read_text().strip()} if embed else {"tokenFile": os.path.abspath(token_file)}
    return {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "kvnet", "cluster": cluster}],
        "users": [{"name": "kvnet", "user": user}],
        "contexts": [{"name": "kvnet", "context": {"cluster": "kvnet", "user": "kvnet"}}],
        "current-context": "kvnet",
    }


def embeds_credentials(args: argparse.Namespace) -> bool:
    """Thin mode installed from a pod: the kubeconfig is for ``kvnet-cni`` on the node, which
    cannot read the pod's projected token and CA, so they are written into it."""
    return bool(args.in_cluster and args.mode == "thin" and not args.kubeconfig_only)


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
            raise InvalidConfig(f"cannot read the default network config {path}: {err}") from err
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
            raise InvalidConfig("--cluster-network needs --kubeconfig (it may name a NAD)")
        plugin["confDir"] = args.conf_dir
        plugin["clusterNetwork"] = args.cluster_network
    else:
        main = current_default_network(Path(args.conf_dir))
        if main is None:
            raise InvalidConfig(f"no default network config in {args.conf_dir}; install one or pass --cluster-network")
        plugin["delegates"] = [main]
    return {"cniVersion": args.cni_version, "name": "kvnet-cni-network", "plugins": [plugin]}


def write_if_changed(path: Path, text: str, *, mode: int = SECRET_MODE) -> str:
    """Write ``text`` atomically with ``mode`` (a temp file never readable by others);
    "unchanged" when content and mode are already so."""
    existed = path.exists()
    if existed and path.read_text() == text:
        if stat.S_IMODE(path.stat().st_mode) == mode:
            return "unchanged"
        os.chmod(path, mode)
        return "updated"
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)  # 0600 from the start
    with os.fdopen(fd, "w") as fh:
        fh.write(text)
    os.chmod(tmp, mode)
    os.replace(tmp, path)
    return "updated" if existed else "installed"


def install_once(args: argparse.Namespace) -> list[tuple[str, str]]:
    """One install: (state, path) of each file, in the order written."""
    scripts = _scripts_dir()
    bin_dir = Path(args.bin_dir)
    done: list[tuple[str, str]] = []
    try:
        kubeconfig = service_account_kubeconfig(args)
        if args.kubeconfig_only:
            if kubeconfig is None:
                raise InvalidConfig("--kubeconfig-only needs --token-file or --in-cluster (the kubeconfig to write)")
            state = write_if_changed(Path(args.kubeconfig), yaml.safe_dump(kubeconfig, sort_keys=False))
            return [(state, args.kubeconfig)]
        bin_dir.mkdir(parents=True, exist_ok=True)
        config = build_config(args)
        for script, name in BINARIES.items():
            target = args.plugin_name if script == "kvnet-cni" else name
            state = install_binary(scripts / script, bin_dir / target, copy=args.copy)
            done.append((state, str(bin_dir / target)))
        state = install_shim(bin_dir / SHIM, args.shim_python)
        done.append((state, str(bin_dir / SHIM)))
        if kubeconfig is not None:  # before the conflist that names it
            state = write_if_changed(Path(args.kubeconfig), yaml.safe_dump(kubeconfig, sort_keys=False))
            done.append((state, args.kubeconfig))
        conf_path = Path(args.conf_dir) / CONF_NAME
        state = write_if_changed(conf_path, json.dumps(config, indent=2) + "\n")
        done.append((state, str(conf_path)))
    except OSError as err:
        raise IOFailure(f"{err}") from err
    return done


def watch(args: argparse.Namespace, stop: threading.Event, interval: float) -> None:
    """Install again every ``interval`` seconds until ``stop``; print what changed. A failed
    round (a token file the kubelet is swapping, a full disk) is logged and tried again."""
    while not stop.wait(interval):
        try:
            changed = [(state, path) for state, path in install_once(args) if state != "unchanged"]
        except KvnetError as err:
            log.error("install failed: %s %s", err.msg, err.details or "")
            continue
        for state, path in changed:
            print(f"{state}: {path}", flush=True)


def run(args: argparse.Namespace) -> int:
    if args.watch is not None and args.watch <= 0:
        raise InvalidConfig("--watch needs a positive number of seconds")
    for state, path in install_once(args):
        print(f"{state}: {path}", flush=True)
    if args.watch is None:
        return 0
    stop = threading.Event()

    def on_signal(signum: int, frame: types.FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    log.info("keeping the node's files in place (every %g s)", args.watch)
    watch(args, stop, args.watch)
    log.info("stopped; the files stay in place")
    return 0
