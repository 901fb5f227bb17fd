"""kvnet-sidecar's gRPC server in-process, against KubeVirt's hook client where it can be.

KubeVirt's part: the domain every call gets is KubeVirt's converter output
(``KUBEVIRT_DOMAIN``, kubevirt/vmi-kvnet.xml); the successful starts (a bridge NIC added, the
VMI's MAC, three sidecars chained, no kvnet interface, PreCloudInitIso's network data) are
driven by virt-launcher's own hook manager (``kubevirt-peer hooks``: Info, PreCloudInitIso,
the 2-3 OnDefineDomain calls of a start each fed the previous answer, Shutdown), with each
server in its ``hook-sidecar-N`` sub-folder as virt-launcher looks for it. That runs in a
mount namespace (a user namespace too when not root).

The project's ``LauncherClient`` and raw stubs stay for what KubeVirt's client cannot do:
exact gRPC statuses and messages (malformed VMI, domain, cloudInitData and network-info,
translation and render errors, the network-info timeout), one call at a time on a chosen
version, concurrent and waiting calls, calls with an input KubeVirt would never send, and
PreCloudInitIso answers virt-launcher only reaches through its legacy fallback.

The pod is a fake /sys/class/net tree and a network-info file; the translation is the real
kvnet.domain pipeline.
"""

from __future__ import annotations

import json
import os
import threading
import time
import xml.etree.ElementTree as ET
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import grpc
import pytest
from kubevirt_code import SOCKET_FOLDER, kubevirt_hooks, with_cloud_init
from pod_inputs import (
    KUBEVIRT_DOMAIN,
    PodFiles,
    add_bridge_binding,
    facts_reader,
    kvnet_hooks,
    make_vmi,
    network_info,
)

from kvnet.core.errors import TranslationError
from kvnet.core.model import GuestIpConfig, PodFacts
from kvnet.lab.launcher import MODULES, LauncherClient, info
from kvnet.sidecar.hooks import EchoHooks, KvnetHooks
from kvnet.sidecar.server import SidecarServer, socket_path
from kvnet.sidecar.wiring import PipelineTranslator


def interfaces(domain_xml: str) -> dict[str, ET.Element]:
    root = ET.fromstring(domain_xml)
    devices = root.find("devices")
    assert devices is not None
    return {
        el.find("alias").get("name"): el  # type: ignore[union-attr]
        for el in devices
        if el.tag in ("interface", "hostdev") and el.find("alias") is not None
    }


def rpc_error(call: Any) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as exc:
        call()
    return exc.value


# --------------------------------------------------------------------------------------


def test_info_answers_within_the_launcher_deadline(serve: Any, hooks_dir: Path, bridge_pod: PodFiles) -> None:
    serve(kvnet_hooks(bridge_pod))
    started = time.monotonic()
    res = info(str(hooks_dir / "kvnet.sock"), timeout=1.0)
    assert time.monotonic() - started < 1.0
    assert res.name == "kvnet"
    assert [(p.name, p.priority) for p in res.hookPoints] == [
        ("OnDefineDomain", 0),
        ("PreCloudInitIso", 0),
        ("Shutdown", 0),
    ]
    assert list(res.versions) == ["v1alpha1", "v1alpha2", "v1alpha3"]
    [sidecar] = LauncherClient(hooks_dir).collect(1)
    assert sidecar.version == "v1alpha3"


def test_without_cloud_init_info_does_not_subscribe_to_pre_cloud_init_iso(
    hooks_dir: Path, bridge_pod: PodFiles
) -> None:
    """``--no-cloud-init`` / ``KVNET_CLOUD_INIT=off``: KubeVirt's hook manager dereferences a
    VMI's missing cloud-init data when any sidecar subscribes to PreCloudInitIso."""
    from kvnet.sidecar.main import parse_args
    from kvnet.sidecar.server import NO_CLOUD_INIT_HOOK_POINTS, SidecarServer, socket_path
    from kvnet.sidecar.wiring import SidecarSettings

    assert parse_args(["--no-cloud-init"]).cloud_init is False and parse_args([]).cloud_init is True
    assert SidecarSettings.from_env({"KVNET_CLOUD_INIT": "off"}).cloud_init is False
    assert SidecarSettings.from_env({}).cloud_init is True
    server = SidecarServer(
        kvnet_hooks(bridge_pod), socket_path(hooks_dir, "kvnet"), hook_points=NO_CLOUD_INIT_HOOK_POINTS
    )
    server.start()
    try:
        res = info(str(hooks_dir / "kvnet.sock"), timeout=1.0)
        assert [p.name for p in res.hookPoints] == ["OnDefineDomain", "Shutdown"]
    finally:
        server.stop(0)


def test_bridge_nic_added(serve: Any, hooks_dir: Path, bridge_pod: PodFiles) -> None:
    serve(kvnet_hooks(bridge_pod), SOCKET_FOLDER)
    run = kubevirt_hooks(hooks_dir, make_vmi({"red": "kvnet"}), domain_xml=KUBEVIRT_DOMAIN)
    # two interfaces: placeholders, the defining call (the converter's domain again), root ports
    calls = run["onDefineDomain"]
    assert [c["step"] for c in calls] == ["placeholders", "define", "root-ports"]
    sent = calls[1]["input"]
    assert sent == AS_REPARSED  # KubeVirt's domain after its own DomainSpec round trip
    out = calls[1]["output"]
    nics = interfaces(out)
    assert set(nics) == {"ua-default", "ua-red"}
    red = nics["ua-red"]
    assert red.get("type") == "ethernet"
    assert red.find("target").attrib == {"dev": "tapb1f51a511f1", "managed": "no"}  # type: ignore[union-attr]
    assert red.find("mac").get("address") == "02:00:00:aa:bb:01"  # type: ignore[union-attr]
    assert red.find("mtu").get("size") == "1400"  # type: ignore[union-attr]
    # the rest of the domain is as virt-launcher sent it
    assert ET.canonicalize(ET.tostring(nics["ua-default"]), strip_text=True) == ET.canonicalize(
        ET.tostring(interfaces(KUBEVIRT_DOMAIN)["ua-default"]), strip_text=True
    )
    assert ET.fromstring(out).find("name").text == "default_vmi-kvnet"  # type: ignore[union-attr]
    assert (
        out.startswith("<domain ") and '\n\t\t<interface type="ethernet">' in out
    )  # as KubeVirt writes it: no declaration, tabs
    end_of_default = sent.index("\t\t</interface>\n") + len("\t\t</interface>\n")
    assert out.startswith(sent[:end_of_default])  # untouched up to the new device
    # every call's answer has the NIC once; the last one is what libvirt gets
    for call in calls:
        assert [a for a in aliases(call["output"]) if a == "ua-red"] == ["ua-red"]
    assert interfaces(run["domainXML"])["ua-red"].find("target").get("dev") == "tapb1f51a511f1"  # type: ignore[union-attr]
    assert run["shutdown"] == "ok"


# what the defining call gets after the placeholder call: virt-launcher parses libvirt's
# answer into api.DomainSpec and marshals it again, which drops the root's xmlns:qemu
AS_REPARSED = KUBEVIRT_DOMAIN.replace(' xmlns:qemu="http://libvirt.org/schemas/domain/qemu/1.0"', "", 1)


def aliases(domain_xml: str) -> list[str]:
    return [a.get("name", "") for a in ET.fromstring(domain_xml).iter("alias")]


def test_vmi_mac_address_wins(serve: Any, hooks_dir: Path, bridge_pod: PodFiles) -> None:
    serve(kvnet_hooks(bridge_pod), SOCKET_FOLDER)
    vmi = make_vmi({"red": "kvnet"}, macs={"red": "02:aa:00:00:00:07"})
    out = kubevirt_hooks(hooks_dir, vmi, domain_xml=KUBEVIRT_DOMAIN)["domainXML"]
    assert interfaces(out)["ua-red"].find("mac").get("address") == "02:aa:00:00:00:07"  # type: ignore[union-attr]


@pytest.mark.parametrize("version", ["v1alpha1", "v1alpha2", "v1alpha3"])
def test_every_version_serves_on_define_domain(serve: Any, hooks_dir: Path, bridge_pod: PodFiles, version: str) -> None:
    serve(kvnet_hooks(bridge_pod))
    pb2, pb2_grpc = MODULES[version]
    with grpc.insecure_channel(f"unix:{hooks_dir / 'kvnet.sock'}") as ch:
        res = pb2_grpc.CallbacksStub(ch).OnDefineDomain(
            pb2.OnDefineDomainParams(domainXML=KUBEVIRT_DOMAIN.encode(), vmi=json.dumps(make_vmi()).encode()),
            timeout=10,
        )
    assert "ua-red" in interfaces(res.domainXML.decode())


def test_domain_unchanged_without_kvnet_interfaces(serve: Any, hooks_dir: Path, pod: PodFiles) -> None:
    # network-info stays empty: the sidecar must not even wait for it
    serve(kvnet_hooks(pod, timeout=30), SOCKET_FOLDER)
    started = time.monotonic()
    run = kubevirt_hooks(hooks_dir, make_vmi({"red": "other-binding", "blue": None}), domain_xml=KUBEVIRT_DOMAIN)
    for call in run["onDefineDomain"]:
        assert call["output"] == call["input"]  # byte for byte, every call
    assert run["onDefineDomain"][1]["output"] == AS_REPARSED
    assert time.monotonic() - started < 10


@pytest.mark.parametrize("domain", ["WITHOUT_KUBEVIRT_METADATA", "KUBEVIRT_DOMAIN"])
def test_two_sidecars_chained(serve: Any, hooks_dir: Path, pod: PodFiles, domain: str) -> None:
    """Two kvnet sidecars with different plugin names and an echo: the second gets the first's output."""
    domain = globals()[domain]
    add_bridge_binding(pod.sys_class_net, "red", original_mac="02:00:00:aa:bb:01")
    add_bridge_binding(pod.sys_class_net, "blue", original_mac="02:00:00:aa:bb:02")
    pod.network_info.write_text(network_info({"red": {}, "blue": {}}))
    serve(EchoHooks("a-echo"), "hook-sidecar-0")
    serve(kvnet_hooks(pod, "kvnet-b"), "hook-sidecar-1")
    serve(kvnet_hooks(pod, "kvnet"), "hook-sidecar-2")
    run = kubevirt_hooks(hooks_dir, make_vmi({"red": "kvnet", "blue": "kvnet-b"}), domain_xml=domain, sidecars=3)
    assert [s["name"] for s in run["sidecars"]] == ["a-echo", "kvnet-b", "kvnet"]  # sub-folder order
    out = run["onDefineDomain"][-1]["output"]
    nics = interfaces(out)
    assert set(nics) == {"ua-default", "ua-red", "ua-blue"}
    assert nics["ua-blue"].find("mac").get("address") == "02:00:00:aa:bb:02"  # type: ignore[union-attr]
    assert aliases(out).count("ua-red") == aliases(out).count("ua-blue") == 1
    if "<metadata>" in domain:  # KubeVirt's default-namespace metadata survives the splices
        assert '\t\t<kubevirt xmlns="http://kubevirt.io">\n\t\t\t<uid>' in out


WITHOUT_KUBEVIRT_METADATA = KUBEVIRT_DOMAIN.replace(
    KUBEVIRT_DOMAIN[KUBEVIRT_DOMAIN.index("\t<metadata>") : KUBEVIRT_DOMAIN.index("\t<features>")], ""
)


def test_twenty_concurrent_calls(serve: Any, hooks_dir: Path, bridge_pod: PodFiles) -> None:
    serve(kvnet_hooks(bridge_pod))
    client = LauncherClient(hooks_dir)
    client.collect(1)
    vmi = make_vmi({"red": "kvnet"})
    barrier = threading.Barrier(20)

    def call(_: int) -> str:
        barrier.wait(timeout=10)
        return client.on_define_domain(KUBEVIRT_DOMAIN, vmi)

    with ThreadPoolExecutor(20) as pool:
        results = list(pool.map(call, range(20)))
    assert len(set(results)) == 1
    assert "ua-red" in interfaces(results[0])


# --------------------------------------------------------------------------------------
# network-info: polled, bounded


def test_network_info_that_appears_late(serve: Any, hooks_dir: Path, bridge_pod: PodFiles) -> None:
    text = bridge_pod.network_info.read_text()
    bridge_pod.network_info.write_text("")
    serve(kvnet_hooks(bridge_pod, timeout=10))
    client = LauncherClient(hooks_dir)
    client.collect(1)
    timer = threading.Timer(0.5, bridge_pod.network_info.write_text, args=(text,))
    timer.start()
    try:
        started = time.monotonic()
        out = client.on_define_domain(KUBEVIRT_DOMAIN, make_vmi())
        assert time.monotonic() - started >= 0.4
    finally:
        timer.cancel()
    assert "ua-red" in interfaces(out)


@pytest.mark.parametrize("present", [True, False], ids=["empty-file", "no-file"])
def test_network_info_that_never_appears(serve: Any, hooks_dir: Path, bridge_pod: PodFiles, present: bool) -> None:
    if present:
        bridge_pod.network_info.write_text("")
    else:
        bridge_pod.network_info.unlink()
    serve(kvnet_hooks(bridge_pod, timeout=0.5))
    client = LauncherClient(hooks_dir)
    client.collect(1)
    err = rpc_error(lambda: client.on_define_domain(KUBEVIRT_DOMAIN, make_vmi()))
    assert err.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert err.details() == (
        f"kvnet OnDefineDomain: interfaces red: network-info {bridge_pod.network_info} still empty after 0.5 s "
        "(is the binding registered with downwardAPI: device-info?)"
    )


# --------------------------------------------------------------------------------------
# malformed inputs: a gRPC error naming the problem, never a half-edited domain

BAD_INPUTS = [
    pytest.param(
        "vmi",
        b"{not json",
        grpc.StatusCode.INVALID_ARGUMENT,
        "kvnet OnDefineDomain: VMI JSON is malformed: Expecting property name enclosed in double quotes: line 1 column 2 (char 1)",
        id="vmi-not-json",
    ),
    pytest.param(
        "vmi",
        b"[]",
        grpc.StatusCode.INVALID_ARGUMENT,
        "kvnet OnDefineDomain: VMI JSON is a list, expected an object",
        id="vmi-list",
    ),
    pytest.param(
        "vmi",
        b'{"metadata": {"name": "v", "namespace": "ns"}}',
        grpc.StatusCode.INVALID_ARGUMENT,
        "kvnet OnDefineDomain: VMI ns/v has no spec object",
        id="vmi-no-spec",
    ),
    pytest.param(
        "vmi",
        b'{"spec": {"domain": {"devices": {"interfaces": [{"binding": {"name": "kvnet"}}]}}}}',
        grpc.StatusCode.INVALID_ARGUMENT,
        "kvnet OnDefineDomain: VMI <unnamed>: spec.domain.devices.interfaces[0] has no name",
        id="iface-no-name",
    ),
    pytest.param(
        "domain",
        b"<domain><devices>",
        grpc.StatusCode.INVALID_ARGUMENT,
        "kvnet OnDefineDomain: interfaces red: domain XML is malformed: no element found: line 1, column 17",
        id="domain-truncated",
    ),
    pytest.param(
        "domain",
        b"<network/>",
        grpc.StatusCode.INVALID_ARGUMENT,
        "kvnet OnDefineDomain: interfaces red: domain XML has root <network>, expected <domain>",
        id="domain-not-a-domain",
    ),
    pytest.param(
        "network-info",
        b'{"interfaces": 3}',
        grpc.StatusCode.FAILED_PRECONDITION,
        "kvnet OnDefineDomain: interfaces red: network-info {ni} is malformed: network-info: interfaces must be a list",
        id="network-info-bad-shape",
    ),
    pytest.param(
        "network-info",
        b"{oops",
        grpc.StatusCode.FAILED_PRECONDITION,
        "kvnet OnDefineDomain: interfaces red: network-info {ni} is malformed: network-info is not JSON: "
        "Expecting property name enclosed in double quotes: line 1 column 2 (char 1)",
        id="network-info-not-json",
    ),
]


@pytest.mark.parametrize(("what", "bad", "code", "message"), BAD_INPUTS)
def test_malformed_input(
    serve: Any, hooks_dir: Path, bridge_pod: PodFiles, what: str, bad: bytes, code: grpc.StatusCode, message: str
) -> None:
    serve(kvnet_hooks(bridge_pod))
    client = LauncherClient(hooks_dir)
    client.collect(1)
    domain, vmi = KUBEVIRT_DOMAIN.encode(), json.dumps(make_vmi()).encode()
    if what == "vmi":
        vmi = bad
    elif what == "domain":
        domain = bad
    else:
        bridge_pod.network_info.write_bytes(bad)
    err = rpc_error(lambda: client.on_define_domain(domain, vmi))
    assert err.code() == code
    assert err.details() == message.format(ni=bridge_pod.network_info)


def test_translation_error_names_the_interface(serve: Any, hooks_dir: Path, bridge_pod: PodFiles) -> None:
    serve(kvnet_hooks(bridge_pod))
    client = LauncherClient(hooks_dir)
    client.collect(1)
    # "green" is bound to kvnet but the binding CNI never plumbed it
    err = rpc_error(lambda: client.on_define_domain(KUBEVIRT_DOMAIN, make_vmi({"red": "kvnet", "green": "kvnet"})))
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert err.details().startswith("kvnet OnDefineDomain: ")
    assert "green" in err.details()


class _BrokenTranslator(PipelineTranslator):
    def __init__(self, result: str | Exception) -> None:
        self.result = result

    def define_domain(self, domain_xml: str, vmi: Any, facts: PodFacts, *, binding_name: str) -> str:
        if isinstance(self.result, Exception):
            raise self.result
        return self.result


@pytest.mark.parametrize(
    ("result", "code", "message"),
    [
        (
            "<domain><devices>",
            grpc.StatusCode.INTERNAL,
            "kvnet OnDefineDomain: interfaces red: the domain kvnet built is malformed: no element found: line 1, column 17",
        ),
        (
            KeyError("boom"),
            grpc.StatusCode.INTERNAL,
            "kvnet OnDefineDomain: interfaces red: unexpected KeyError: 'boom'",
        ),
        (
            TranslationError("interface red: no tap"),
            grpc.StatusCode.INVALID_ARGUMENT,
            "kvnet OnDefineDomain: interface red: no tap",
        ),
    ],
)
def test_translator_failures(
    serve: Any, hooks_dir: Path, bridge_pod: PodFiles, result: Any, code: grpc.StatusCode, message: str
) -> None:
    serve(KvnetHooks("kvnet", facts_reader(bridge_pod), _BrokenTranslator(result)))
    client = LauncherClient(hooks_dir)
    client.collect(1)
    err = rpc_error(lambda: client.on_define_domain(KUBEVIRT_DOMAIN, make_vmi()))
    assert (err.code(), err.details()) == (code, message)


def snapshot(*roots: Path) -> dict[str, tuple[str, int, bytes | str]]:
    """Every entry under ``roots`` (the roots too): kind, mtime and content (file bytes,
    symlink target, folder listing; a socket by kind and mtime only), without following links."""
    out: dict[str, tuple[str, int, bytes | str]] = {}

    def add(path: Path) -> None:
        st = path.lstat()
        if path.is_symlink():
            out[str(path)] = ("link", st.st_mtime_ns, os.readlink(path))
        elif path.is_dir():
            names = sorted(os.listdir(path))
            out[str(path)] = ("dir", st.st_mtime_ns, "\n".join(names))
            for name in names:
                add(path / name)
        elif path.is_socket():
            out[str(path)] = ("socket", st.st_mtime_ns, "")
        else:
            out[str(path)] = ("file", st.st_mtime_ns, path.read_bytes())

    for root in roots:
        add(root)
    return out


def test_on_define_domain_has_no_side_effects(serve: Any, hooks_dir: Path, bridge_pod: PodFiles) -> None:
    """OnDefineDomain also runs on migration targets, whose answer virt-launcher throws away:
    the pod's links, network-info and the hooks folder are exactly as before the calls."""
    serve(kvnet_hooks(bridge_pod))
    client = LauncherClient(hooks_dir)
    client.collect(1)
    before = snapshot(bridge_pod.sys_class_net, bridge_pod.network_info, hooks_dir)
    assert any(kind == "socket" for kind, _, _ in before.values())
    assert any(kind == "link" for kind, _, _ in before.values())
    time.sleep(0.02)  # a write during the calls would show as a later mtime
    first = client.on_define_domain(KUBEVIRT_DOMAIN, make_vmi())
    # the migration target: the domain it is sent already holds kvnet's NIC
    again = client.on_define_domain(first, make_vmi())
    assert "ua-red" in interfaces(first) and again == first
    assert snapshot(bridge_pod.sys_class_net, bridge_pod.network_info, hooks_dir) == before


# --------------------------------------------------------------------------------------
# PreCloudInitIso

CLOUD_INIT = {
    "DataSource": "noCloud",
    "NoCloudMetaData": {"instance-id": "5d307ca9-b3ef-428c-8861-06e72d69f223", "local-hostname": "vmi-kvnet"},
    "ConfigDriveMetaData": None,
    "UserData": "#cloud-config\npassword: fedora\n",
    "NetworkData": "",
    "DevicesData": None,
    "VolumeName": "cloudinitdisk",
}


@pytest.fixture
def ip_pod(pod: PodFiles) -> PodFiles:
    add_bridge_binding(
        pod.sys_class_net, "red", original_mac="02:00:00:aa:bb:01", ip=GuestIpConfig(("10.1.0.5/24",), ("10.1.0.1",))
    )
    pod.network_info.write_text(network_info({"red": {}}))
    return pod


def test_pre_cloud_init_iso_adds_network_data(serve: Any, hooks_dir: Path, ip_pod: PodFiles) -> None:
    serve(kvnet_hooks(ip_pod), SOCKET_FOLDER)
    cloud = kubevirt_hooks(hooks_dir, with_cloud_init(make_vmi()))["preCloudInitIso"]
    sent, out = cloud["input"], cloud["output"]
    assert sent["NetworkData"] == "" and sent["UserData"] == "#cloud-config\n"  # KubeVirt's, from the volume
    assert {k: v for k, v in out.items() if k != "NetworkData"} == {k: v for k, v in sent.items() if k != "NetworkData"}
    nd = out["NetworkData"]
    assert "02:00:00:aa:bb:01" in nd and "10.1.0.5/24" in nd and "10.1.0.1" in nd


def test_pre_cloud_init_iso_keeps_the_users_network_data(serve: Any, hooks_dir: Path, ip_pod: PodFiles) -> None:
    serve(kvnet_hooks(ip_pod))
    client = LauncherClient(hooks_dir)
    client.collect(1)
    user = "version: 2\nethernets:\n  default:\n    match:\n      macaddress: 02:00:00:00:00:01\n    dhcp4: true\n"
    out = client.pre_cloud_init_iso(make_vmi(), {**CLOUD_INIT, "NetworkData": user})
    nd = out["NetworkData"]
    assert "02:00:00:00:00:01" in nd and "dhcp4: true" in nd  # the user's
    assert "10.1.0.5/24" in nd  # and ours


def test_pre_cloud_init_iso_conflict(serve: Any, hooks_dir: Path, ip_pod: PodFiles) -> None:
    serve(kvnet_hooks(ip_pod))
    client = LauncherClient(hooks_dir)
    client.collect(1)
    user = "version: 2\nethernets:\n  red:\n    match:\n      macaddress: 02:00:00:aa:bb:01\n    dhcp4: true\n"
    err = rpc_error(lambda: client.pre_cloud_init_iso(make_vmi(), {**CLOUD_INIT, "NetworkData": user}))
    assert (err.code(), err.details()) == (
        grpc.StatusCode.INVALID_ARGUMENT,
        "kvnet PreCloudInitIso: NetworkData conflict: the VMI's cloud-init NetworkData already defines ethernets.red, "
        "which kvnet needs for interface or bond 'red'",
    )


def test_pre_cloud_init_iso_falls_back_to_the_legacy_answer(serve: Any, hooks_dir: Path, ip_pod: PodFiles) -> None:
    """Without UserData virt-launcher reads the legacy NoCloud answer: it carries our data too."""
    serve(kvnet_hooks(ip_pod))
    client = LauncherClient(hooks_dir)
    client.collect(1)
    out = client.pre_cloud_init_iso(make_vmi(), {**CLOUD_INIT, "UserData": ""})
    assert "10.1.0.5/24" in out["NetworkData"]


def test_pre_cloud_init_iso_unchanged_without_kvnet(serve: Any, hooks_dir: Path, pod: PodFiles) -> None:
    serve(kvnet_hooks(pod, timeout=30))
    client = LauncherClient(hooks_dir)
    client.collect(1)
    assert client.pre_cloud_init_iso(make_vmi({"blue": None}), CLOUD_INIT) == CLOUD_INIT


def test_pre_cloud_init_iso_malformed_data(serve: Any, hooks_dir: Path, ip_pod: PodFiles) -> None:
    serve(kvnet_hooks(ip_pod))
    pb2, pb2_grpc = MODULES["v1alpha3"]
    with grpc.insecure_channel(f"unix:{hooks_dir / 'kvnet.sock'}") as ch:
        err = rpc_error(
            lambda: pb2_grpc.CallbacksStub(ch).PreCloudInitIso(
                pb2.PreCloudInitIsoParams(cloudInitData=b"[1]", vmi=json.dumps(make_vmi()).encode()), timeout=10
            )
        )
    assert (err.code(), err.details()) == (
        grpc.StatusCode.INVALID_ARGUMENT,
        "kvnet PreCloudInitIso: interfaces red: cloudInitData JSON is a list, expected an object",
    )


# --------------------------------------------------------------------------------------
# the server itself


def test_shutdown_ends_wait(serve: Any, hooks_dir: Path, pod: PodFiles) -> None:
    server = serve(EchoHooks("kvnet"))
    client = LauncherClient(hooks_dir)
    client.collect(1)
    assert not server.wait(0.01)
    client.shutdown()
    assert server.wait(5)


def test_socket_name_taken_by_a_live_sidecar(serve: Any, hooks_dir: Path) -> None:
    serve(EchoHooks("kvnet"))
    second = SidecarServer(EchoHooks("kvnet"), socket_path(hooks_dir, "kvnet"))
    with pytest.raises(Exception) as exc:
        second.start()
    assert (
        str(exc.value)
        == f"socket {hooks_dir / 'kvnet.sock'} is already served by another sidecar: names must be unique in the pod"
    )
    assert info(str(hooks_dir / "kvnet.sock")).name == "kvnet"  # the first one is untouched


def test_stale_socket_is_replaced(serve: Any, hooks_dir: Path) -> None:
    import socket

    stale = hooks_dir / "kvnet.sock"
    with socket.socket(socket.AF_UNIX) as s:
        s.bind(str(stale))  # bound, never listening: a leftover of a dead sidecar
    serve(EchoHooks("kvnet"))
    assert info(str(stale)).name == "kvnet"
    assert sorted(p.name for p in hooks_dir.iterdir()) == ["kvnet.sock"]  # no staging debris


@pytest.mark.parametrize(
    ("name", "problem"),
    [
        ("../evil", "sidecar name '../evil' is not usable as a socket name (letters, digits, '_', '.', '-')"),
        ("", "sidecar name '' is not usable as a socket name (letters, digits, '_', '.', '-')"),
        ("a b", "sidecar name 'a b' is not usable as a socket name (letters, digits, '_', '.', '-')"),
        ("x" * 120, None),
    ],
)
def test_socket_path_rules(name: str, problem: str | None) -> None:
    from kvnet.core.errors import InvalidConfig

    with pytest.raises(InvalidConfig) as exc:
        socket_path("/var/run/kubevirt-hooks", name)
    if problem:
        assert exc.value.msg == problem
    else:
        assert "longer than 107 bytes" in exc.value.msg


def test_socket_path_default() -> None:
    assert str(socket_path("/var/run/kubevirt-hooks", "kvnet")) == "/var/run/kubevirt-hooks/kvnet.sock"


# --------------------------------------------------------------------------------------
# guest bonds (kvnet.io/bonds): members may be sriov: {} interfaces KubeVirt already added

BONDS = json.dumps(
    [
        {
            "name": "bond0",
            "members": ["sr1", "sr2"],
            "mode": "active-backup",
            "miimon": 100,
            "failOverMac": "active",
            "addresses": ["10.3.0.5/24"],
            "gateways": ["10.3.0.1"],
        }
    ]
)


@pytest.fixture
def bond_pod(pod: PodFiles) -> PodFiles:
    pod.network_info.write_text(
        network_info(
            {
                n: {"deviceInfo": {"type": "pci", "version": "1.1.0", "pci": {"pci-address": f"0000:3b:02.{fn}"}}}
                for n, fn in (("sr1", 4), ("sr2", 5))
            }
        )
    )
    return pod


def bond_vmi() -> dict[str, Any]:
    return make_vmi(
        {"sr1": None, "sr2": None},
        macs={"sr1": "02:00:00:00:b0:01", "sr2": "02:00:00:00:b0:02"},
        annotations={"kvnet.io/bonds": BONDS},
    )


def test_bond_of_sriov_members(serve: Any, hooks_dir: Path, bond_pod: PodFiles) -> None:
    """A guest bond over ``sriov: {}`` members under KubeVirt's hook manager: the converter's
    hostdevs (from network-info) come back untouched, the bond reaches the guest's network data."""
    serve(kvnet_hooks(bond_pod), SOCKET_FOLDER)
    vmi = with_cloud_init(bond_vmi())
    info = json.loads(bond_pod.network_info.read_text())
    run = kubevirt_hooks(hooks_dir, vmi, network_info=info)
    calls = run["onDefineDomain"]
    assert [c["step"] for c in calls] == ["placeholders", "define", "root-ports"]
    for call in calls:  # the hostdevs are KubeVirt's: every domain goes back as it came
        assert call["output"] == call["input"]
    hostdevs = ET.fromstring(run["domainXML"]).iter("hostdev")
    assert sorted(h.find("alias").get("name") for h in hostdevs) == ["ua-sriov-sr1", "ua-sriov-sr2"]  # type: ignore[union-attr]
    nd = run["preCloudInitIso"]["output"]["NetworkData"]
    for expected in ("bond0", "02:00:00:00:b0:01", "02:00:00:00:b0:02", "active-backup", "10.3.0.5/24"):
        assert expected in nd


def test_bond_with_an_unknown_member(serve: Any, hooks_dir: Path, bond_pod: PodFiles) -> None:
    serve(kvnet_hooks(bond_pod))
    client = LauncherClient(hooks_dir)
    client.collect(1)
    vmi = bond_vmi()
    vmi["metadata"]["annotations"]["kvnet.io/bonds"] = BONDS.replace('"sr2"', '"sr9"')
    err = rpc_error(lambda: client.pre_cloud_init_iso(vmi, CLOUD_INIT))
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert err.details().startswith("kvnet PreCloudInitIso: ") and "sr9" in err.details()


def test_large_requests(serve: Any, hooks_dir: Path, ip_pod: PodFiles) -> None:
    """A VMI near etcd's size limit, its user data repeated in cloudInitData: over gRPC's default 4 MiB."""
    serve(kvnet_hooks(ip_pod))
    client = LauncherClient(hooks_dir)
    client.collect(1)
    user_data = "#cloud-config\n" + "# padding padding padding padding\n" * 45_000  # ~1.5 MiB
    vmi = make_vmi()
    vmi["spec"]["volumes"].append({"name": "cloudinitdisk", "cloudInitNoCloud": {"userData": user_data}})
    out = client.pre_cloud_init_iso(vmi, {**CLOUD_INIT, "UserData": user_data})
    assert out["UserData"] == user_data and "10.1.0.5/24" in out["NetworkData"]
    assert "ua-red" in interfaces(client.on_define_domain(KUBEVIRT_DOMAIN, vmi))


def test_info_answers_while_calls_wait_for_network_info(serve: Any, hooks_dir: Path, bridge_pod: PodFiles) -> None:
    """Calls blocked on network-info do not delay Info past virt-launcher's 1 s deadline."""
    bridge_pod.network_info.write_text("")
    serve(kvnet_hooks(bridge_pod, timeout=3))
    client = LauncherClient(hooks_dir)
    client.collect(1)
    with ThreadPoolExecutor(4) as pool:
        waiting = [pool.submit(client.on_define_domain, KUBEVIRT_DOMAIN, make_vmi()) for _ in range(4)]
        time.sleep(0.3)
        started = time.monotonic()
        assert info(str(hooks_dir / "kvnet.sock"), timeout=1.0).name == "kvnet"
        assert time.monotonic() - started < 1.0
        for f in waiting:
            with pytest.raises(grpc.RpcError):
                f.result(timeout=30)


def test_hooks_dir_too_long_for_the_staging_socket(hooks_dir: Path) -> None:
    from kvnet.core.errors import InvalidConfig

    deep = hooks_dir / ("d" * (99 - len(str(hooks_dir))))  # 100 bytes: the final path is 107
    deep.mkdir()
    path = socket_path(deep, "k")  # the final path itself fits
    server = SidecarServer(EchoHooks("k"), path)
    with pytest.raises(InvalidConfig) as exc:
        server.start()
    assert exc.value.msg == f"hooks directory {deep} is too long for a unix socket path (107 bytes)"
    assert os.listdir(deep) == []  # no staging debris


def test_pre_cloud_init_iso_same_on_v1alpha2_and_v1alpha3(serve: Any, hooks_dir: Path, ip_pod: PodFiles) -> None:
    serve(kvnet_hooks(ip_pod))
    answers = []
    for version in ("v1alpha2", "v1alpha3"):
        pb2, pb2_grpc = MODULES[version]
        with grpc.insecure_channel(f"unix:{hooks_dir / 'kvnet.sock'}") as ch:
            res = pb2_grpc.CallbacksStub(ch).PreCloudInitIso(
                pb2.PreCloudInitIsoParams(
                    cloudInitData=json.dumps(CLOUD_INIT).encode(),
                    cloudInitNoCloudSource=b'{"userData": "#cloud-config\\n"}',
                    vmi=json.dumps(make_vmi()).encode(),
                ),
                timeout=10,
            )
        answers.append((res.cloudInitData, res.cloudInitNoCloudSource))
    assert answers[0] == answers[1]
    data, legacy = json.loads(answers[0][0]), json.loads(answers[0][1])
    assert "10.1.0.5/24" in data["NetworkData"] and legacy["networkData"] == data["NetworkData"]
