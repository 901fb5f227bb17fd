"""VM boot benchmark: from the start of CNI ADD to the guest reporting all its NICs.

For 1, 4 and 8 bridge NICs in one run (same machine, same guest, same load), with the
breakdown: kvnet-cni ADD (meta-plugin + every delegate + kvnet-binding), the sidecar
(start + PreCloudInitIso + OnDefineDomain), libvirtd start, define+start of the domain,
and the guest's boot to its NIC report. Each size runs ``--reps`` times; the table shows
the median. Writes the table to docs/bench/vm_boot.md.

Run as root after ``make guest``: ``.venv/bin/python -m bench.vm_boot``. With the peers built
(``make peers``) it runs the demo's path: the real kube-apiserver, and KubeVirt's part played
by KubeVirt's own code (``kubevirt-peer``: pod annotations, network-info, the converter's
domain, virt-launcher's hook calls); without them the API stand-in and the lab's stand-ins.
"""

from __future__ import annotations

import argparse
import contextlib
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

from kvnet.lab.kube import KubeCluster, peers_built
from kvnet.lab.vm.kubevirt import KubeVirtPeer, find
from kvnet.lab.vm.run import run_scenario
from kvnet.lab.vm.scenario import bridge_scenario, kubevirt_cr

REPO = Path(__file__).resolve().parents[1]
OUT = REPO / "docs" / "bench" / "vm_boot.md"
SIZES = (1, 4, 8)
COLUMNS = (
    ("cni_add", "CNI ADD"),
    ("sidecar", "sidecar"),
    ("libvirtd_start", "libvirtd start"),
    ("define_start", "define+start"),
    ("guest_nics", "guest boot → NIC report"),
    ("add_to_nics", "ADD → all NICs (total)"),
    ("without_libvirtd", "total without libvirtd start"),
)


_STAMP = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) ")


def binding_calls(cni_log: str) -> tuple[int, int, float]:
    """From the meta-plugin's debug log: kvnet-binding VERSION probes, ADD calls, mean ADD time."""
    probes = adds = 0
    durations: list[float] = []
    started: datetime | None = None
    for line in cni_log.splitlines():
        m = _STAMP.match(line)
        when = datetime.strptime(m.group(1), "%Y-%m-%d %H:%M:%S,%f") if m else None
        if "delegate kvnet-binding (" in line and "speaks CNI" in line:
            probes += 1
        elif "delegate kvnet-binding ADD" in line:
            adds += 1
            started = when
        elif started is not None and when is not None and "from default/kvnet-binding" in line:
            durations.append((when - started).total_seconds())
            started = None
    return probes, adds, (statistics.mean(durations) if durations else 0.0)


def measure(
    guest_dir: Path, size: int, kube: KubeCluster | None, kubevirt: KubeVirtPeer | None
) -> tuple[dict[str, float], float | None]:
    result = run_scenario(guest_dir, bridge_scenario(size), failover=False, stay=0, kube=kube, kubevirt=kubevirt)
    if not result.ok:
        raise SystemExit(f"{size} NICs: the run failed\n{result.explain()}")
    t = dict(result.timings)
    probes, adds, mean_add = binding_calls(result.cni_log)
    t["binding_probes"], t["binding_adds"], t["binding_add_s"] = float(probes), float(adds), mean_add
    t["sidecar"] = t["sidecar_start"] + t["sidecar_hooks"]
    t["without_libvirtd"] = t["add_to_nics"] - t["libvirtd_start"]
    from kvnet.lab import console

    uptime = console.parse(result.console_text).nics_reported_at()
    return t, uptime


def table(rows: dict[int, dict[str, float]], uptimes: dict[int, float | None]) -> str:
    head = ["NICs", *(label for _, label in COLUMNS), "guest uptime at NIC report"]
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join("---:" for _ in head) + "|"]
    for size, t in rows.items():
        up = uptimes.get(size)
        cells = [str(size), *(f"{t[key]:.2f} s" for key, _ in COLUMNS), f"{up:.2f} s" if up is not None else "-"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def ratio_lines(rows: dict[int, dict[str, float]]) -> list[str]:
    base = rows[min(rows)]
    out = []
    for size, t in rows.items():
        if size == min(rows):
            continue
        out.append(
            f"- {size} NICs vs {min(rows)}: total ×{t['add_to_nics'] / base['add_to_nics']:.2f}, "
            f"without libvirtd start ×{t['without_libvirtd'] / base['without_libvirtd']:.2f}, "
            f"CNI ADD ×{t['cni_add'] / base['cni_add']:.2f} (+{(t['cni_add'] - base['cni_add']) / (size - min(rows)) * 1000:.0f} ms per extra NIC), "
            f"guest boot ×{t['guest_nics'] / base['guest_nics']:.2f}"
        )
    return out


def claim(rows: dict[int, dict[str, float]]) -> list[str]:
    """The target (largest size within 1.2x of the smallest) and the claim, from the numbers."""
    small, big = min(rows), max(rows)
    a, b = rows[small], rows[big]
    total = b["add_to_nics"] / a["add_to_nics"]
    per_nic_add = (b["cni_add"] - a["cni_add"]) / (big - small)
    per_nic_boot = (b["guest_nics"] - a["guest_nics"]) / (big - small)
    without = b["without_libvirtd"] / a["without_libvirtd"]
    if total <= 1.2 < without:
        verdict = (
            f"×{total:.2f} end to end, which meets the target, but only because libvirtd's start-up "
            f"({a['libvirtd_start']:.1f} s, the same for every size) is in both totals: without it ×{without:.2f}, which misses it."
        )
    else:
        verdict = (
            f"×{total:.2f} end to end, which {'meets' if total <= 1.2 else 'misses'} the target; without libvirtd's "
            f"start-up (the same for every size) ×{without:.2f}."
        )
    boot = (
        f"about {per_nic_boot * 1000:.0f} ms to the guest's boot to its NIC report"
        if per_nic_boot > 0.05
        else "no per-NIC cost to the guest's boot that stands out of this machine's noise (TCG on shared CPUs varies by seconds between runs)"
    )
    return [
        f"Target: {big} NICs within 1.2× of {small}. Measured: {verdict}",
        "",
        f"Interfaces are not free. Each extra NIC adds about {per_nic_add * 1000:.0f} ms to CNI ADD and {boot}. "
        "The CNI cost is serial work: "
        "per attachment the meta-plugin runs the bridge plugin (a process, which runs host-local) and then "
        "`kvnet-binding`, which kvnet-cni runs in its own process (no interpreter start per NIC; one pyroute2 import "
        "per pod; see docs/meta-plugin.md). "
        f"With {big} NICs the meta-plugin's log shows {b['binding_probes']:.0f} VERSION probes and "
        f"{b['binding_adds']:.0f} ADD calls of `kvnet-binding`, each ADD taking {b['binding_add_s'] * 1000:.0f} ms on average "
        f"(netlink work: a bridge, a tap, the MAC swap, addresses moved into the record): the binding's ADDs account "
        f"for about {b['binding_adds'] * b['binding_add_s']:.1f} s of the {b['cni_add']:.1f} s CNI ADD. "
        + (
            "The guest's share is one more virtio-net device to probe under TCG (no KVM here). "
            if per_nic_boot > 0.05
            else ""
        )
        + "The sidecar and define+start barely move with the NIC count. So the claim holds only in the sense that "
        "the fixed costs (libvirtd, QEMU, the guest kernel) dominate a few NICs; at "
        f"{big} NICs the per-NIC costs are already visible, and at 100 they would add about "
        f"{per_nic_add * 99:.0f} s of CNI ADD (at this rate), mostly the reference plugins' own process starts and "
        "netlink work, which no meta-plugin can make free.",
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench.vm_boot", description=__doc__.splitlines()[0])
    parser.add_argument("--guest", type=Path, default=REPO / "build" / "guest")
    parser.add_argument("--reps", type=int, default=2)
    parser.add_argument("--sizes", default=",".join(map(str, SIZES)))
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args(argv)
    sizes = [int(s) for s in args.sizes.split(",")]
    samples: dict[int, list[dict[str, float]]] = {s: [] for s in sizes}
    uptimes: dict[int, list[float]] = {s: [] for s in sizes}
    start = time.monotonic()
    kubevirt = find(kubevirt_cr())
    with contextlib.ExitStack() as stack:
        kube = None
        if not peers_built():
            workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="kvnet-bench-kube-")))
            kube = stack.enter_context(KubeCluster(workdir))
        for rep in range(args.reps):
            for size in sizes:  # interleaved, so load changes hit every size alike
                t, up = measure(args.guest, size, kube, kubevirt)
                samples[size].append(t)
                if up is not None:
                    uptimes[size].append(up)
                print(
                    f"rep {rep + 1} {size} NICs: ADD → NICs {t['add_to_nics']:.2f} s (CNI ADD {t['cni_add']:.2f} s)",
                    file=sys.stderr,
                )
    api = "the real kube-apiserver" if kube else "the API stand-in"
    part = "KubeVirt v1.8.4's own code (kubevirt-peer)" if kubevirt else "the lab's stand-ins"
    keys = [k for k, _ in COLUMNS] + ["binding_probes", "binding_adds", "binding_add_s"]
    med = {s: {k: statistics.median(x[k] for x in samples[s]) for k in keys} for s in sizes}
    med_up = {s: (statistics.median(uptimes[s]) if uptimes[s] else None) for s in sizes}
    text = table(med, med_up)
    print(text)
    ratios = ratio_lines(med)
    print("\n".join(ratios))
    cpu = subprocess.run(["nproc"], capture_output=True, text=True, check=False).stdout.strip()
    verdict = claim(med)
    report = [
        "# VM boot: CNI ADD to the guest reporting all its NICs",
        "",
        f"Measured by `bench/vm_boot.py` in one run: {', '.join(map(str, sizes))} bridge NICs (host-local IPAM, "
        f"kvnet-binding on each), median of {args.reps} interleaved runs per size, QEMU TCG, "
        f"{cpu} CPUs shared with other work, Python {platform.python_version()}, {time.monotonic() - start:.0f} s in all; "
        f"{api}, KubeVirt's part played by {part}.",
        "",
        text,
        "",
        *ratios,
        "",
        "Columns: *CNI ADD* is one `kvnet-cni` ADD (the meta-plugin, the cluster network, then per NIC the",
        "bridge plugin with host-local and `kvnet-binding`); *sidecar* is the sidecar's start until its socket",
        "answers Info plus PreCloudInitIso and OnDefineDomain (with KubeVirt's code: its converter, then its",
        "hook manager's Info, PreCloudInitIso and 2-3 OnDefineDomain calls, each a `kubevirt-peer` process);",
        "*libvirtd start* is the private libvirtd",
        "(at start it probes qemu-system-i386 and qemu-system-x86_64 for their capabilities, about 4 s each "
        "under TCG); *define+start* is defineXML (with schema",
        "validation for the lab's domain, without it for KubeVirt's, as virt-launcher) plus create; *guest boot → NIC report* runs from create until the guest's console line",
        "listing all NICs. The total runs from the start of CNI ADD to that line.",
        "",
        '## What the numbers say about "10 or 100 interfaces cost no more than one"',
        "",
        *verdict,
        "",
    ]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(report))
    print(f"written to {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
