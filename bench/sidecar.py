"""OnDefineDomain latency of kvnet-sidecar against an echo sidecar, and its memory.

Both sidecars are ``kvnet-sidecar`` processes on unix sockets with the same server code;
the echo one (``--echo``) answers with the domain it got. For 0, 1, 16, 64 and 256 kvnet
bridge NICs a fake pod (a /sys/class/net tree as kvnet-binding leaves it, and a
network-info file) is built, a kvnet sidecar is started on it, and both sidecars get the
same request: the domain KubeVirt's converter makes for the VMI (``kubevirt-peer domain``,
KubeVirt v1.8.4; build it with ``make peers``).

Two clients: the project's ``LauncherClient`` on one kept channel, for per-call latency;
and KubeVirt's own hook manager (``kubevirt-peer hooks``), for what kvnet costs in a whole
virt-launcher start (Info, PreCloudInitIso, the 2-3 OnDefineDomain calls each fed the
previous answer, Shutdown), against the echo in the same run. Prints Markdown and writes
docs/bench/sidecar.md.

    .venv/bin/python -m bench.sidecar [--calls 200] [--starts 5]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from kvnet.core.model import GuestIpConfig
from kvnet.core.naming import hashed_pod_iface
from kvnet.lab.fake_pod import add_bridge_binding, network_info, write_link
from kvnet.lab.launcher import LauncherClient, LauncherError
from kvnet.lab.vm.kubevirt import deploy_kubevirt_cr

REPO = Path(__file__).resolve().parent.parent
SIZES = (0, 1, 16, 64, 256)  # 0: a VMI without kvnet interfaces (the domain goes back as is)
IMAGE_ENV = {"MALLOC_ARENA_MAX": "2"}  # as deploy/Containerfile.sidecar sets it
PEER = Path(os.environ.get("KVNET_PEERS", REPO / "build" / "peers")) / "bin" / "kubevirt-peer"
KUBEVIRT_CR = deploy_kubevirt_cr()  # the cluster's CR as deploy/ registers kvnet


def peer(sub: str, payload: dict[str, Any]) -> str:
    """stdout of ``kubevirt-peer <sub>`` (KubeVirt's own code, peers/kubevirt/)."""
    if not PEER.exists():
        raise SystemExit(f"{PEER} is not built (make peers)")
    proc = subprocess.run([str(PEER), sub], input=json.dumps(payload), capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise SystemExit(f"kubevirt-peer {sub} failed: {proc.stderr}")
    return proc.stdout


def converter_domain(n: int) -> str:
    """The domain virt-launcher's converter makes for ``vmi(n)`` (kvnet's NICs are not in it)."""
    return peer("domain", {"vmi": vmi(n), "kubevirt": KUBEVIRT_CR}).rstrip("\n")


def networks(n: int) -> list[str]:
    return [f"net{i:03d}x" for i in range(n)]  # not net<N>: that would switch to ordinal naming


def vmi(n: int) -> dict[str, Any]:
    nets = networks(n)
    return {
        "apiVersion": "kubevirt.io/v1",
        "kind": "VirtualMachineInstance",
        "metadata": {"name": "vmi-bench", "namespace": "default", "uid": "5d307ca9-b3ef-428c-8861-06e72d69f223"},
        "spec": {
            "domain": {
                "firmware": {"uuid": "2f0dc1b4-9f5e-5a3c-8d7e-6b1a0c9e4f21"},
                "devices": {
                    "interfaces": [{"name": "default", "masquerade": {}}]
                    + [{"name": x, "binding": {"name": "kvnet"}} for x in nets],
                    # a cloud-init volume: virt-launcher 1.8.4 has no cloud-init data without one
                    # and its hook manager then fails on a PreCloudInitIso sidecar (kvnet subscribes)
                    "disks": [{"name": "cloudinitdisk", "disk": {"bus": "virtio"}}],
                },
            },
            "networks": [{"name": "default", "pod": {}}]
            + [{"name": x, "multus": {"networkName": f"default/{x}"}} for x in nets],
            "volumes": [{"name": "cloudinitdisk", "cloudInitNoCloud": {"userData": "#cloud-config\n"}}],
        },
        "status": {"interfaces": [{"name": x, "interfaceName": hashed_pod_iface(x)} for x in nets]},
    }


def make_pod(root: Path, n: int) -> tuple[Path, Path]:
    """A pod after kvnet-binding ran for ``n`` bridge attachments (``kvnet.lab.fake_pod``)."""
    scn, info = root / "sys-class-net", root / "network-info"
    scn.mkdir(parents=True)
    write_link(scn, "eth0", mac="0a:58:0a:f4:00:0c", mtu=1480)
    entries = {}
    for i, net in enumerate(networks(n)):
        mac = f"02:00:00:00:{i // 256:02x}:{i % 256:02x}"
        add_bridge_binding(scn, net, original_mac=mac, mtu=1500, ip=GuestIpConfig((f"10.{i // 256}.{i % 256}.5/16",)))
        entries[net] = {"mac": mac}
    info.write_text(network_info(entries))
    return scn, info


class Sidecar:
    """A ``kvnet-sidecar`` process alone in its hooks folder, called through the
    virt-launcher-like client (Info with the 1 s deadline, v1alpha3) on one kept channel."""

    def __init__(self, hooks_dir: Path, name: str, *args: str, env: dict[str, str] | None = None) -> None:
        exe = Path(sys.executable).parent / "kvnet-sidecar"
        hooks_dir.mkdir(parents=True)
        self.proc = subprocess.Popen(
            [str(exe), "--hooks-dir", str(hooks_dir), "--name", name, *args],
            env={**os.environ, **IMAGE_ENV, **(env or {})},
            stderr=subprocess.DEVNULL,
        )
        self.client = LauncherClient(hooks_dir, keep_channels=True)
        try:
            [found] = self.client.collect(1, timeout=30)
        except LauncherError as err:
            self.proc.kill()
            raise SystemExit(f"sidecar {name} did not start: {err.msg}") from None
        assert found.version == "v1alpha3", found

    def call(self, domain: bytes, vmi: bytes) -> bytes:
        return self.client.define_domain_bytes(domain, vmi, timeout=60)

    def memory_mib(self) -> dict[str, float]:
        """VmRSS and its split into anonymous and file-backed pages (shared libraries)."""
        out = {}
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            key = line.split(":", 1)[0]
            if key in ("VmRSS", "RssAnon", "RssFile"):
                out[key] = int(line.split()[1]) / 1024
        return out

    def close(self) -> None:
        self.client.close()
        self.proc.terminate()
        self.proc.wait(timeout=10)


def start_process(hooks_dir: Path, name: str, *args: str, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    """A ``kvnet-sidecar`` in ``hooks_dir/hook-sidecar-0`` (virt-launcher's layout), its socket there."""
    exe = Path(sys.executable).parent / "kvnet-sidecar"
    sub = hooks_dir / "hook-sidecar-0"
    sub.mkdir(parents=True)
    proc = subprocess.Popen(
        [str(exe), "--hooks-dir", str(sub), "--name", name, *args],
        env={**os.environ, **IMAGE_ENV, **(env or {})},
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 30
    while not (sub / f"{name}.sock").exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            raise SystemExit(f"sidecar {name} did not start")
        time.sleep(0.01)
    return proc


Start = tuple[float, int]  # wall ms of one kubevirt-peer hooks run, OnDefineDomain calls in it


def kubevirt_start(hooks_dir: Path, n: int, domain: str, proc: subprocess.Popen[bytes], kvnet: bool) -> Start:
    """One virt-launcher start by KubeVirt's hook manager (a ``kubevirt-peer hooks`` process:
    its own start-up and mount namespace included, the sidecar's start-up not)."""
    payload = {"hooksDir": str(hooks_dir), "sidecars": 1, "vmi": vmi(n), "kubevirt": KUBEVIRT_CR, "domainXML": domain}
    t0 = time.perf_counter()
    out = json.loads(peer("hooks", payload))
    ms = (time.perf_counter() - t0) * 1000
    final = out["domainXML"]
    assert out["shutdown"] == "ok" and proc.wait(timeout=10) == 0, out["shutdown"]
    assert final.count('<alias name="ua-net') == (n if kvnet else 0), "the sidecar's NICs are not in the last answer"
    return ms, len(out["onDefineDomain"])


def kubevirt_starts(
    work: Path, n: int, scn: Path, info: Path, domain: str, starts: int
) -> tuple[list[Start], list[Start]]:
    """``starts`` starts against a fresh echo and a fresh kvnet sidecar in turn (Shutdown ends each)."""
    env = {"KVNET_SYS_CLASS_NET": str(scn), "KVNET_NETWORK_INFO": str(info)}
    echo, kv = [], []
    for i in range(starts + 1):  # the first pair warms the page cache and is not counted
        h = work / f"ks-echo{n}-{i}"
        e = kubevirt_start(h, n, domain, start_process(h, "echo", "--echo"), kvnet=False)
        h = work / f"ks-kvnet{n}-{i}"
        k = kubevirt_start(h, n, domain, start_process(h, "kvnet", env=env), kvnet=True)
        if i:
            echo.append(e)
            kv.append(k)
    return echo, kv


def timed(a: Sidecar, b: Sidecar, domain: bytes, vmi_json: bytes, calls: int) -> tuple[list[float], list[float]]:
    """Call ``a`` and ``b`` in turn, so both see the same machine load; ms per call for each."""
    for _ in range(max(5, calls // 10)):  # warm up: imports, template compilation, page cache
        a.call(domain, vmi_json)
        b.call(domain, vmi_json)
    ta, tb = [], []
    for _ in range(calls):
        t0 = time.perf_counter()
        a.call(domain, vmi_json)
        t1 = time.perf_counter()
        b.call(domain, vmi_json)
        t2 = time.perf_counter()
        ta.append((t1 - t0) * 1000)
        tb.append((t2 - t1) * 1000)
    return ta, tb


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="bench.sidecar")
    p.add_argument("--calls", type=int, default=200, help="timed calls per size and sidecar")
    p.add_argument("--starts", type=int, default=5, help="KubeVirt hook-manager starts per size and sidecar")
    p.add_argument("--out", default=str(REPO / "docs" / "bench" / "sidecar.md"))
    args = p.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="kvb-"))
    load_before = os.getloadavg()
    rows: list[tuple[int, int, float, float, float, int]] = []
    rss: dict[int, dict[str, float]] = {}
    phases: list[Phases] = []
    starts: dict[int, tuple[list[Start], list[Start]]] = {}
    domain_text = converter_domain(0)
    try:
        echo = Sidecar(work / "h-echo", "echo", "--echo")
        try:
            for n in SIZES:
                scn, info = make_pod(work / f"pod{n}", n)
                kv = Sidecar(
                    work / f"h-kvnet{n}",
                    "kvnet",
                    env={"KVNET_SYS_CLASS_NET": str(scn), "KVNET_NETWORK_INFO": str(info)},
                )
                try:
                    assert converter_domain(n) == domain_text  # kvnet's NICs are not in it
                    domain, vmi_json = domain_text.encode(), json.dumps(vmi(n)).encode()
                    out = kv.call(domain, vmi_json)
                    assert out.count(b'<alias name="ua-net') == n, "kvnet sidecar did not add every NIC"
                    assert n or out == domain
                    calls = args.calls if n <= 64 else max(20, args.calls // 4)
                    e, k = timed(echo, kv, domain, vmi_json, calls)
                    rows.append((n, calls, statistics.median(e), statistics.median(k), _p95(k), len(out)))
                    rss[n] = kv.memory_mib()
                    if n:
                        phases.append(breakdown(scn, info, n, domain_text))
                finally:
                    kv.close()
                starts[n] = kubevirt_starts(work, n, scn, info, domain_text, args.starts)
            echo_rss = echo.memory_mib()
        finally:
            echo.close()
    finally:
        shutil.rmtree(work, ignore_errors=True)
    table = (
        render(rows, rss, echo_rss, phases, args.calls, starts, args.starts)
        + notes(rows, rss, echo_rss, phases, baseline_rss())
        + load_note(load_before, os.getloadavg())
    )
    print(table)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(table)
    return 0


def _p95(values: list[float]) -> float:
    return sorted(values)[max(0, int(len(values) * 0.95) - 1)]


IMPORT_STEPS = (
    ("python", "pass"),
    ("+ import grpc", "import grpc"),
    ("+ the hook server (protobuf, generated messages)", "import kvnet.sidecar.server"),
    ("+ jinja2", "import jinja2"),
    ("+ PyYAML", "import yaml"),
    (
        "+ the domain pipeline (kvnet model, translation, templates compiled)",
        "from kvnet.domain import pipeline, render; render.template('interface_tap.xml.j2'); render.template('hostdev_pci.xml.j2')",
    ),
)


def baseline_rss() -> dict[str, float]:
    """RSS (MiB) of one Python process after each import step of the sidecar, in order."""
    probe = "\n".join(
        f"{code}\nprint(re.search(r'VmRSS:\\s+(\\d+)', open('/proc/self/status').read())[1])"
        for _, code in IMPORT_STEPS
    )
    out = subprocess.run(
        [sys.executable, "-c", "import re\n" + probe],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, **IMAGE_ENV},
    ).stdout.split()
    return {label: int(kib) / 1024 for (label, _), kib in zip(IMPORT_STEPS, out, strict=False)}


STEPS = (
    "parse VMI + domain",
    "read network-info + the links the VMI names",
    "translate",
    "render",
    "splice",
    "check result",
)
Phases = tuple[int, dict[str, float]]


def breakdown(scn: Path, info: Path, n: int, domain_text: str, repeat: int = 20) -> Phases:
    """In-process medians (ms) of the steps of one OnDefineDomain, as ``KvnetHooks`` runs them."""
    from kvnet.domain.pipeline import plan_for
    from kvnet.domain.render import render_plan
    from kvnet.domain.splice import splice
    from kvnet.domain.translate import pod_link_query
    from kvnet.domain.vmi import parse_vmi as vmi_spec
    from kvnet.sidecar.hooks import bound_interfaces, check_domain, parse_vmi, read_domain
    from kvnet.sidecar.wiring import SidecarSettings, build_hooks

    hooks: Any = build_hooks(SidecarSettings(network_info=str(info), sys_class_net=str(scn)))
    domain, vmi_json = domain_text.encode(), json.dumps(vmi(n)).encode()
    hooks.on_define_domain(domain, vmi_json)  # warm up
    times: dict[str, list[float]] = {step: [] for step in STEPS}
    for _ in range(repeat):
        t = [time.perf_counter()]
        raw = parse_vmi(vmi_json)
        names = bound_interfaces(raw, "kvnet")
        parsed = read_domain(domain)
        spec = vmi_spec(raw)
        t.append(time.perf_counter())
        pod = hooks.facts.read(names, pod_link_query(spec, binding_name="kvnet"))
        t.append(time.perf_counter())
        plan = plan_for(spec, pod, binding_name="kvnet", domain_xml=parsed)
        t.append(time.perf_counter())
        elements = render_plan(plan)
        t.append(time.perf_counter())
        out = splice(parsed, elements)
        t.append(time.perf_counter())
        check_domain(out)
        t.append(time.perf_counter())
        for i, step in enumerate(STEPS):
            times[step].append((t[i + 1] - t[i]) * 1000)
    return n, {step: statistics.median(v) for step, v in times.items()}


def render(
    rows: list[tuple[int, int, float, float, float, int]],
    rss: dict[int, dict[str, float]],
    echo_rss: dict[str, float],
    phases: list[Phases],
    calls: int,
    starts: dict[int, tuple[list[Start], list[Start]]],
    start_count: int,
) -> str:
    lines = [
        "# kvnet-sidecar: OnDefineDomain latency and memory",
        "",
        f"`python -m bench.sidecar --calls {calls} --starts {start_count}` on {platform.machine()}, Python"
        f" {platform.python_version()}, {os.cpu_count()} CPUs. Both sidecars are `kvnet-sidecar` processes (same gRPC"
        f" server code), run with {' '.join(f'{k}={v}' for k, v in IMAGE_ENV.items())} as deploy/Containerfile.sidecar"
        " runs them; the echo one runs with `--echo` and returns the domain it gets. The domain sent is the one"
        " KubeVirt's converter makes for the VMI (`kubevirt-peer domain`, KubeVirt v1.8.4: the masquerade interface,"
        " a cloud-init disk, controllers, serial, VNC; the kvnet NICs are not in it), the same for every size."
        " The pod is a fake /sys/class/net tree (three links per bridge attachment, as kvnet-binding leaves"
        " them) on the local disk.",
        "",
        "## One OnDefineDomain call (the project's client, one kept channel)",
        "",
        "`kvnet.lab.launcher.LauncherClient` with one persistent channel per sidecar, v1alpha3, the same"
        " request to both, the two called in turn (so both see the same machine load); medians over the timed"
        " calls after a warm-up. KubeVirt's client dials anew for every call; this isolates the sidecar's own"
        " cost per call.",
        "",
        "| kvnet NICs | calls | echo median (ms) | kvnet median (ms) | kvnet p95 (ms) | kvnet / echo | kvnet ms per NIC | reply bytes | kvnet RSS after (MiB) |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for n, c, e, k, k95, size in rows:
        per_nic = f"{k / n:.3f}" if n else "-"
        lines.append(
            f"| {n} | {c} | {e:.3f} | {k:.3f} | {k95:.3f} | {k / e:.2f}x | {per_nic} | {size} | {rss[n]['VmRSS']:.1f} |"
        )
    lines += [
        "",
        "## A whole start under KubeVirt's hook manager (`kubevirt-peer hooks`)",
        "",
        "virt-launcher's own hook code (`hooks.GetManager()`: Collect with Info, PreCloudInitIso, the"
        " OnDefineDomain calls of `allocateHotplugPorts`, each fed the previous answer after KubeVirt's"
        " DomainSpec round trip, then Shutdown) on the sidecar's `hook-sidecar-0` sub-folder. One"
        " `kubevirt-peer hooks` process per start, timed from spawn to exit (so its own start-up and mount"
        f" namespace are in both columns); a fresh sidecar for each start (Shutdown ends it), its start-up not"
        f" timed. Echo and kvnet in turn, {start_count} starts each after one warm-up pair; medians (ms).",
        "",
        "| kvnet NICs | OnDefineDomain calls | echo start (ms) | kvnet start (ms) | kvnet - echo (ms) | kvnet / echo |",
        "|---:|---:|---:|---:|---:|---:|",
    ]
    for n, (e_runs, k_runs) in starts.items():
        em = statistics.median(ms for ms, _ in e_runs)
        km = statistics.median(ms for ms, _ in k_runs)
        calls_in = sorted({c for _, c in k_runs} | {c for _, c in e_runs})
        lines.append(
            f"| {n} | {'/'.join(map(str, calls_in))} | {em:.1f} | {km:.1f} | {km - em:+.1f} | {km / em:.2f}x |"
        )
    lines += [
        "",
        "Where one kvnet call spends its time (in-process, same inputs as `KvnetHooks.on_define_domain`,"
        " medians of 20, ms):",
        "",
        "| kvnet NICs | " + " | ".join(STEPS) + " |",
        "|---:|" + "---:|" * len(STEPS),
    ]
    for count, steps in phases:
        lines.append(f"| {count} | " + " | ".join(f"{steps[s]:.3f}" for s in STEPS) + " |")
    lines += [
        "",
        "Memory (MiB, from /proc/<pid>/status after the runs):",
        "",
        "| sidecar | VmRSS | RssAnon | RssFile |",
        "|---|---:|---:|---:|",
        f"| echo | {echo_rss['VmRSS']:.1f} | {echo_rss['RssAnon']:.1f} | {echo_rss['RssFile']:.1f} |",
    ]
    for n, m in rss.items():
        lines.append(f"| kvnet, {n} NICs | {m['VmRSS']:.1f} | {m['RssAnon']:.1f} | {m['RssFile']:.1f} |")
    lines.append("")
    return "\n".join(lines)


def notes(
    rows: list[tuple[int, int, float, float, float, int]],
    rss: dict[int, dict[str, float]],
    echo_rss: dict[str, float],
    phases: list[Phases],
    base: dict[str, float],
) -> str:
    """What the numbers of this run say against the targets (written from the same run)."""
    by_n = {r[0]: r for r in rows}
    ph = dict(phases)
    r16 = by_n[16][3] / by_n[16][2]
    slope = [(a, b, (by_n[b][3] - by_n[a][3]) / (b - a)) for a, b in ((16, 64), (64, 256))]
    worst = max(m["VmRSS"] for m in rss.values())
    linear = slope[1][2] <= 1.25 * slope[0][2]
    met = r16 <= 1.5
    budget = 1.5 * by_n[16][2]
    steps16 = ", ".join(f"{name} {ph[16][name]:.2f}" for name in STEPS)
    labels = list(base)
    import_rows = [
        f"| {label} | {base[label]:.1f} | {base[label] - base[labels[i - 1]]:+.1f} |"
        if i
        else f"| {label} | {base[label]:.1f} | |"
        for i, label in enumerate(labels)
    ]
    lines = [
        "",
        "## Against the targets",
        "",
        f"- **At most 1.5x the echo at 16 NICs: {'met' if met else 'not met'} ({r16:.1f}x).** The echo is the bare cost of a"
        f" gRPC call into a Python server over a unix socket ({by_n[16][2]:.2f} ms), so the target leaves kvnet"
        f" {budget - by_n[16][2]:.2f} ms for 16 NICs; it takes {by_n[16][3] - by_n[16][2]:.2f} ms more than the echo."
        f" In-process at 16 NICs (ms): {steps16} (the split is measured in-process, so it does not add up exactly"
        " to the gRPC median). A VMI without kvnet interfaces costs about what the echo costs"
        f" ({by_n[0][3]:.2f} ms vs {by_n[0][2]:.2f} ms): nothing is read for it.",
        f"- **Linear growth after 16: {'met' if linear else 'not met'}.** Marginal cost per added NIC: "
        + ", ".join(f"{sl:.3f} ms from {a} to {b}" for a, b, sl in slope)
        + "."
        " No step is quadratic any more: the pod's naming scheme (hashed or ordinal net<N>) is decided once per"
        " call from the listed link names, and the splice finds replaced devices by alias in one pass.",
        "- **How the hot path reads the pod.** Pod facts are read afresh on every call (no cache: OnDefineDomain"
        " also runs on migration targets, and a stale view would give a wrong domain). network-info is read and"
        " /sys/class/net listed once; then the links the VMI's kvnet interfaces name are read up front, before"
        " translating, each link's files with os.open/os.read relative to its folder (a bridge attachment needs"
        " its tap and its pod link, not the bridge or the primary interface). Reading one link is about ten small sysfs reads. The binding record"
        " in the pod link's ifalias is read every time; its decoding (JSON, then every address checked with"
        " ipaddress) is remembered by the alias text, so an unchanged alias is not decoded again. Templates are compiled once per process; each rendered"
        " fragment is still parsed (a broken one never reaches the domain) and the new devices are written"
        " with ElementTree's own rules (same bytes; a test compares them) but without its per-call tree walk.",
        f"- **RSS at most 40 MiB: not met ({worst:.1f} MiB at most for kvnet, {echo_rss['VmRSS']:.1f} MiB for the"
        " echo).** The floor is the gRPC runtime, before any kvnet code runs; one Python process importing the"
        " sidecar's pieces in order:",
        "",
        "| after | RSS (MiB) | step |",
        "|---|---:|---:|",
        *import_rows,
        "",
        f"  `import grpc` alone is {base[labels[1]]:.1f} MiB, mostly file-backed pages of grpcio's 17 MB shared"
        " library (RssFile above), and the echo sidecar, which runs none of kvnet's translation, already ends"
        f" above 40 MiB ({echo_rss['VmRSS']:.1f}). What kvnet adds on top is jinja2, PyYAML and its own modules"
        f" ({base[labels[-1]] - base[labels[2]]:.1f} MiB), imported before the socket appears on purpose (a broken"
        " install fails at start, not at the first VM), plus what a call's working set leaves behind, which grows"
        " with the domain size. MALLOC_ARENA_MAX=2 (set in the image) keeps glibc from giving each gRPC worker"
        " thread its own arena. 40 MiB would need a smaller gRPC runtime than grpcio, not changes in kvnet.",
        "",
    ]
    return "\n".join(lines)


def load_note(before: tuple[float, float, float], after: tuple[float, float, float]) -> str:
    return (
        "\n## The machine\n\n"
        f"Load average {before[0]:.1f} / {before[1]:.1f} / {before[2]:.1f} (1 / 5 / 15 min) when the run began and"
        f" {after[0]:.1f} / {after[1]:.1f} / {after[2]:.1f} when it ended, on {os.cpu_count()} CPUs. With other"
        " work running on the machine the absolute figures are noisy (the p95 column most); the echo and"
        " kvnet columns of each table come from the same run, called in turn, so their ratio is the"
        " like-with-like figure.\n"
    )


if __name__ == "__main__":
    sys.exit(main())
