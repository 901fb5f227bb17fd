"""The links and tc filters of the netns ``kvnet-mirror`` runs in (the node's), read and
changed through iproute2's ``ip`` and ``tc`` (JSON output)."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Sequence

from kvnet.core.errors import NetlinkFailure
from kvnet.mirror.plan import Filter, Link, parse_filters

_ALREADY = ("File exists", "Exclusivity flag on")
_GONE = ("Cannot find device", "No such file or directory", "Invalid handle", "Cannot find specified qdisc")


def _run(argv: Sequence[str], *, tolerate: Sequence[str] = ()) -> str:
    done = subprocess.run(list(argv), capture_output=True, text=True, check=False, timeout=30)
    if done.returncode != 0 and not any(t in done.stderr for t in tolerate):
        raise NetlinkFailure(f"{' '.join(argv)} failed: {done.stderr.strip() or f'status {done.returncode}'}")
    return done.stdout


def links() -> list[Link]:
    shown = json.loads(_run(["ip", "-j", "-d", "link", "show"]) or "[]")
    return [Link(str(x.get("ifname", "")), str((x.get("linkinfo") or {}).get("info_kind", ""))) for x in shown]


def filters(port: str) -> list[Filter]:
    """kvnet-mirror's and everyone's filters on both hooks of ``port`` ([] when it is gone)."""
    out: list[Filter] = []
    for hook in ("ingress", "egress"):
        text = _run(["tc", "-j", "filter", "show", "dev", port, hook], tolerate=_GONE)
        out += parse_filters(hook, json.loads(text) if text.strip() else [])
    return out


def ensure_clsact(port: str) -> None:
    _run(["tc", "qdisc", "add", "dev", port, "clsact"], tolerate=_ALREADY)


def tc(args: Sequence[str], *, undo: bool = False) -> None:
    """One ``tc`` command; ``undo=True`` tolerates what is already gone (DEL is idempotent)."""
    _run(["tc", *args], tolerate=_GONE if undo else ())
