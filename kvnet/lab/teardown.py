"""How the lab's demos end: undo what they made, last made first, and say what is left.

Both demos (the pod demo, :mod:`kvnet.lab.pod_demo`, and the VM demo, :mod:`kvnet.lab.vm`)
end the same way: what a CNI DEL must have removed is checked while the namespaces still
exist (the pod's links, host-local's leases, the CNI cache files), everything the run
made is removed in reverse (:class:`Teardown`), and a last sweep looks for what survived
that (namespaces, root links, leases, cache files, processes: :func:`leftovers`). The
checks only read; the findings are sentences for the report (:func:`report_groups` for
the pod demo's per-kind lines, :func:`report_list` for the VM demo's list).
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

from kvnet.lab.netns import NetnsLike, delete_netns, ip

POD_LINKS_KEPT = frozenset({"lo"})  # what a pod netns holds before CNI ADD and after DEL


class Teardown:
    """What a run made, undone in reverse on the way out (also on error), and what the
    checks registered among the undo steps found left behind (``found``, in the order the
    checks ran). ``netns``, ``root_links`` and ``pids`` name what was made, for the last
    sweep (:func:`leftovers`) after everything was undone."""

    def __init__(self) -> None:
        self._stack = contextlib.ExitStack()
        self.found: list[str] = []
        self.netns: list[str] = []  # every netns made (each deleted on the way out)
        self.root_links: list[str] = []  # links made in the root netns (each deleted)
        self.pids: list[int] = []  # long-lived processes whose command line may not name the workdir

    def __enter__(self) -> Teardown:
        self._stack.__enter__()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> bool:
        return bool(self._stack.__exit__(exc_type, exc, tb))

    def undo(self, fn: Callable[..., object], /, *args: Any, **kwargs: Any) -> None:
        """Call ``fn(*args, **kwargs)`` on the way out, before everything registered earlier."""
        self._stack.callback(fn, *args, **kwargs)

    def check(self, fn: Callable[[], Iterable[str]]) -> None:
        """Run the check ``fn`` at this point of the way out and keep what it finds."""
        self._stack.callback(lambda: self.found.extend(fn()))

    def netns_made(self, ns: NetnsLike) -> NetnsLike:
        """``ns`` is the run's: it is deleted on the way out, and the sweep looks for it."""
        self.netns.append(ns.name)
        self.undo(delete_netns, ns)
        return ns

    def root_link_made(self, name: str) -> None:
        """The root-netns link ``name`` is the run's: deleted on the way out, looked for after."""
        self.root_links.append(name)
        self.undo(ip, "link", "delete", name, check=False)

    def process_started(self, pid: int) -> None:
        """A process the sweep must find gone (for one whose command line does not name the workdir)."""
        self.pids.append(pid)


# ------------------------------------------------------------------------------------
# What a clean CNI DEL must have removed (checked before the namespaces go)
# ------------------------------------------------------------------------------------


def _link_names(ns: str) -> list[str]:
    """The links of the netns ``ns`` (``ip -j link show``); ValueError, KeyError or TypeError
    when they cannot be listed."""
    done = ip("-n", ns, "-j", "link", "show", check=False)
    if done.returncode != 0:
        raise ValueError(done.stderr.strip())
    return [str(link["ifname"]) for link in json.loads(done.stdout or "[]")]


def extra_links(names: Iterable[str], kept: Collection[str] = POD_LINKS_KEPT) -> list[str]:
    """The links of ``names`` a run must not leave (all but ``kept``), in their order."""
    return [name for name in names if name not in kept]


def links_left(ns: str, kept: Collection[str], where: str) -> list[str]:
    """Links in the netns ``ns`` beyond ``kept``, as sentences naming the ``where`` netns."""
    try:
        names = _link_names(ns)
    except (ValueError, KeyError, TypeError) as err:
        return [f"links in the {where} netns {ns} could not be listed: {err}"]
    return [f"link {name} in the {where} netns {ns}" for name in extra_links(names, kept)]


def lease_files(data_dir: Path) -> list[str]:
    """host-local's lease files under ``data_dir`` (not its lock or last-reserved
    bookkeeping), relative to it, sorted."""
    if not data_dir.exists():
        return []
    return sorted(
        str(p.relative_to(data_dir))
        for p in data_dir.rglob("*")
        if p.is_file() and p.name != "lock" and not p.name.startswith("last_reserved_ip")
    )


def cache_files(cni_dir: Path) -> list[str]:
    """Every file under the CNI cache folder ``cni_dir``, relative to it, sorted."""
    if not cni_dir.exists():
        return []
    return sorted(str(p.relative_to(cni_dir)) for p in cni_dir.rglob("*") if p.is_file())


def cni_leftovers(pod_links: Iterable[str], data_dir: Path, cni_dir: Path) -> dict[str, list[str]]:
    """Everything a clean CNI DEL must have removed, by kind: the pod's links but ``lo``,
    host-local's leases in ``data_dir``, the cache files in ``cni_dir``."""
    return {
        "pod links": extra_links(pod_links),
        "host-local leases": lease_files(data_dir),
        "cache files": cache_files(cni_dir),
    }


# ------------------------------------------------------------------------------------
# What survived the teardown (the last sweep)
# ------------------------------------------------------------------------------------


def processes_naming(marker: str, skip: Collection[int] = ()) -> list[str]:
    """Processes whose command line contains ``marker`` (not this one, nor ``skip``)."""
    me = os.getpid()
    needle = marker.encode()
    found: list[str] = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or int(proc.name) == me or int(proc.name) in skip:
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes()
        except OSError:
            continue
        if needle in cmdline:
            text = cmdline.replace(b"\x00", b" ").decode(errors="replace")[:120]
            found.append(f"process {proc.name}: {text}")
    return found


def leftovers(
    workdir: Path, netns_names: Sequence[str], root_links: Sequence[str], container_id: str, pids: Sequence[int] = ()
) -> list[str]:
    """What a run in ``workdir`` left behind after its teardown: its netns, its root links,
    IP leases (``workdir/ipam``), cache files (``workdir/cni-cache`` and libcni's results
    for ``container_id``), the processes ``pids`` and any process naming the workdir."""
    found: list[str] = []
    found += [f"process {pid} (libvirtd) still running" for pid in pids if Path(f"/proc/{pid}").exists()]
    listed = ip("netns", "list", check=False).stdout.split()
    found += [f"netns {n}" for n in netns_names if n in listed]
    for link in root_links:
        if ip("link", "show", link, check=False).returncode == 0:
            found.append(f"link {link} in the root netns")
    found += [f"lease ipam/{name}" for name in lease_files(workdir / "ipam")]
    cache = workdir / "cni-cache"
    found += [f"cache file cni-cache/{name}" for name in cache_files(cache)]
    for results in (Path("/var/lib/cni/results"), cache / "results"):
        if results.exists():
            found += [f"cache file {f}" for f in results.iterdir() if container_id in f.name]
    found += processes_naming(str(workdir))
    return found


# ------------------------------------------------------------------------------------
# Reports
# ------------------------------------------------------------------------------------


def report_groups(left: Mapping[str, Sequence[str]]) -> str:
    """One line per kind (``  pod links: none``), then the verdict line."""
    lines = [f"  {what}: {', '.join(items) if items else 'none'}\n" for what, items in left.items()]
    clean = not any(left.values())
    return "".join(lines) + ("nothing left behind\n" if clean else "LEFT BEHIND: see above\n")


def report_list(found: Sequence[str], checked: str) -> str:
    """``left behind:`` and one finding a line, or that nothing of ``checked`` is left."""
    if found:
        return "left behind:\n  " + "\n  ".join(found)
    return f"teardown: nothing left ({checked})"


__all__ = [
    "POD_LINKS_KEPT",
    "Teardown",
    "cache_files",
    "cni_leftovers",
    "extra_links",
    "lease_files",
    "leftovers",
    "links_left",
    "processes_naming",
    "report_groups",
    "report_list",
]
