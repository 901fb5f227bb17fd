"""libcni's result cache (``<cacheDir>/results/<network>-<containerID>-<ifname>``).

libcni (and so Multus, containerd and CRI-O) writes one JSON file per attachment after
a successful ADD and reads it back for DEL and CHECK. kvnet writes and reads the same
files in the same ``cniCacheV1`` format, so a node can switch between Multus and kvnet
while pods are running. Names are checked before they become a path, so a container ID
or network name can never escape the cache directory, and a name too long for one file
(``NAME_MAX``) is refused when the file would be written (code 7, naming the network)
while DEL and CHECK read it as absent: no such file can exist.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kvnet.core.errors import InvalidConfig, InvalidEnvironment, IOFailure
from kvnet.core.naming import NAME_MAX, cni_name_ok, file_name_fits, ifname_problem, libcni_cache_name, name_bytes

CACHE_KIND = "cniCacheV1"
RESULTS_DIR = "results"


@dataclass(frozen=True)
class CachedAttachment:
    """One cached attachment: what was configured, with which args, and its final result."""

    network_name: str
    container_id: str
    ifname: str
    config: bytes
    netns: str = ""
    cni_args: tuple[tuple[str, str], ...] = ()
    capability_args: Mapping[str, Any] = field(default_factory=dict)
    result: Mapping[str, Any] | None = None


def cache_path(cache_dir: str | os.PathLike[str], network_name: str, container_id: str, ifname: str) -> Path:
    """The result file for one attachment; rejects names that would leave the directory."""
    if not cni_name_ok(network_name):
        raise InvalidConfig("invalid characters found in network name", str(network_name))
    if not cni_name_ok(container_id):
        raise InvalidEnvironment("invalid characters in containerID", str(container_id))
    problem = ifname_problem(ifname)
    if problem:
        raise InvalidEnvironment(problem)
    return Path(cache_dir, RESULTS_DIR, libcni_cache_name(network_name, container_id, ifname))


def _fits(path: Path) -> bool:
    return file_name_fits(path.name)


def _too_long(path: Path, network_name: str) -> InvalidConfig:
    return InvalidConfig(
        f"network name {network_name!r} is too long for libcni's results cache: the file "
        f"<network>-<containerID>-<ifname> would be {name_bytes(path.name)} bytes, more than NAME_MAX {NAME_MAX}"
    )


def _tmp_name(path: Path) -> Path:
    """The temp file beside ``path``, kept within NAME_MAX whatever the length of ``path``."""
    return path.with_name(f".{path.name[: NAME_MAX - 32]}.tmp{os.getpid()}")


def args_pairs(cni_args: str) -> tuple[tuple[str, str], ...]:
    """``K=V;K=V`` as libcni's ``[][2]string`` (the order kept, empty segments skipped)."""
    pairs = []
    for item in cni_args.split(";"):
        if item:
            k, _, v = item.partition("=")
            pairs.append((k, v))
    return tuple(pairs)


def write_result(cache_dir: str | os.PathLike[str], attachment: CachedAttachment) -> Path:
    """Write (atomically) the cniCacheV1 file: dir mode 0700, file mode 0600, like libcni."""
    path = cache_path(cache_dir, attachment.network_name, attachment.container_id, attachment.ifname)
    if not _fits(path):
        raise _too_long(path, attachment.network_name)
    doc: dict[str, Any] = {
        "kind": CACHE_KIND,
        "containerId": attachment.container_id,
        "config": base64.b64encode(attachment.config).decode("ascii"),
        "ifName": attachment.ifname,
        "networkName": attachment.network_name,
    }
    if attachment.netns:
        doc["netns"] = attachment.netns
    if attachment.cni_args:
        doc["cniArgs"] = [list(p) for p in attachment.cni_args]
    if attachment.capability_args:
        doc["capabilityArgs"] = dict(attachment.capability_args)
    if attachment.result:
        doc["result"] = dict(attachment.result)
    tmp = _tmp_name(path)
    try:
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(json.dumps(doc))  # dumps runs the C encoder, dump the pure-Python one (same bytes)
        os.replace(tmp, path)
    except OSError as e:
        with contextlib.suppress(OSError):  # the write's error is the one to report
            tmp.unlink(missing_ok=True)
        raise IOFailure(f"failed to set network {attachment.network_name!r} cached result: {e}") from None
    return path


def _decode(doc: Any, path: Path) -> CachedAttachment | None:
    if not isinstance(doc, dict):
        return None
    if doc.get("kind") != CACHE_KIND:
        # A pre-cniCacheV1 file holds the bare result; libcni still reads those.
        if "cniVersion" in doc:
            net, cid, ifn = _split_name(path.name)
            return CachedAttachment(net, cid, ifn, b"", result=doc)
        return None
    try:
        config = base64.b64decode(doc.get("config") or "", validate=True)
    except ValueError:
        config = b""
    raw_args = doc.get("cniArgs") or []
    pairs = tuple((str(p[0]), str(p[1])) for p in raw_args if isinstance(p, Sequence) and len(p) == 2)
    result = doc.get("result")
    return CachedAttachment(
        network_name=str(doc.get("networkName", "")),
        container_id=str(doc.get("containerId", "")),
        ifname=str(doc.get("ifName", "")),
        config=config,
        netns=str(doc.get("netns", "")),
        cni_args=pairs,
        capability_args=doc.get("capabilityArgs") or {},
        result=result if isinstance(result, dict) and result else None,
    )


def _split_name(name: str) -> tuple[str, str, str]:
    parts = name.rsplit("-", 2)
    return (parts[0], parts[1], parts[2]) if len(parts) == 3 else (name, "", "")


def read_result(
    cache_dir: str | os.PathLike[str], network_name: str, container_id: str, ifname: str
) -> CachedAttachment | None:
    """The cached attachment, or None when there is no file or it cannot be understood."""
    path = cache_path(cache_dir, network_name, container_id, ifname)
    if not _fits(path):
        return None
    try:
        doc = json.loads(path.read_bytes())
    except FileNotFoundError:
        return None
    except (OSError, ValueError):
        return None
    return _decode(doc, path)


def delete_result(cache_dir: str | os.PathLike[str], network_name: str, container_id: str, ifname: str) -> bool:
    """Remove the file; True when one was there."""
    path = cache_path(cache_dir, network_name, container_id, ifname)
    if not _fits(path):
        return False
    try:
        path.unlink()
    except FileNotFoundError:
        return False
    except OSError as e:
        raise IOFailure(f"failed to delete network {network_name!r} cached result {path.name}: {e}") from None
    return True


def list_attachments(cache_dir: str | os.PathLike[str], container_id: str = "") -> list[CachedAttachment]:
    """Every cniCacheV1 attachment in the cache (optionally of one container), sorted by file name."""
    base = Path(cache_dir, RESULTS_DIR)
    try:
        names = sorted(p.name for p in base.iterdir() if not p.name.startswith("."))
    except FileNotFoundError:
        return []
    except OSError as e:
        raise IOFailure(f"failed to list cached attachments in {base}: {e}") from None
    out = []
    for name in names:
        if container_id and f"-{container_id}-" not in name:
            continue
        try:
            doc = json.loads((base / name).read_bytes())
        except (OSError, ValueError):
            continue
        if not isinstance(doc, dict) or doc.get("kind") != CACHE_KIND:
            continue
        att = _decode(doc, base / name)
        if att is None or not att.ifname or not att.network_name:
            continue
        if container_id and att.container_id != container_id:
            continue
        out.append(att)
    return out
