"""vhost-user NICs: translation from a vhost-user device-info, the XML, the shared-memory splice,
and the golden cases tests/golden/vhost-user*/ (``--regen-golden`` rewrites them)."""

from __future__ import annotations

import argparse
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import pytest
import yaml

from kvnet.commands.render import render_outputs
from kvnet.core import naming
from kvnet.core.errors import InvalidConfig, TranslationError
from kvnet.core.model import DeviceInfo, NetworkInfoEntry, PciAddress, PodFacts, PodLink, TapNic, VhostUserNic
from kvnet.domain.netdata import guest_network_data
from kvnet.domain.pipeline import define_domain
from kvnet.domain.render import nic_from_element, render_nic, render_plan
from kvnet.domain.splice import parse_domain, splice
from kvnet.domain.translate import plan_vm_nics
from kvnet.domain.vmi import parse_vmi

GOLDEN = Path(__file__).resolve().parents[1] / "golden"
# vm.yaml, not vmi.yaml: the shared golden loops expect every interface to be a tap
VHOST_CASES = sorted(p.name for p in GOLDEN.glob("vhost-user*") if (p / "vm.yaml").is_file())
SOCK = "/var/run/kubevirt/vhostuser/net1/vhost.sock"


def vmi(devices: dict[str, Any] | None = None, cores: int = 3, **dpdk: Any) -> Any:
    return parse_vmi(
        {
            "metadata": {"name": "vm1", "namespace": "ns"},
            "spec": {
                "networks": [{"name": "dpdk", "multus": {"networkName": "userspace-ovs"}}],
                "domain": {
                    "cpu": {"cores": cores},
                    "devices": {
                        "interfaces": [{"name": "dpdk", "binding": {"name": "kvnet"}, **dpdk}],
                        **(devices or {}),
                    },
                },
            },
        }
    )


def info(mode: Any = "client", path: Any = SOCK, mac: str | None = None, mtu: int | None = None) -> PodFacts:
    raw = {"type": "vhost-user", "version": "1.1.0", "vhost-user": {"mode": mode, "path": path}}
    entry = NetworkInfoEntry("dpdk", DeviceInfo("vhost-user", "1.1.0", raw), mac=mac, mtu=mtu)
    return PodFacts(network_info={"dpdk": entry})


def nic_of(v: Any, facts: PodFacts) -> VhostUserNic:
    (nic,) = plan_vm_nics(v, facts).nics
    assert isinstance(nic, VhostUserNic)
    return nic


# --- translation ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("device_info_mode", "qemu_mode"),
    [("client", "server"), ("server", "client")],  # the backend's role -> QEMU's, libvirt's <source mode>
)
def test_qemu_takes_the_other_end_of_the_backends_mode(device_info_mode: str, qemu_mode: str) -> None:
    assert nic_of(vmi(), info(device_info_mode)) == VhostUserNic(name="dpdk", socket_path=SOCK, mode=qemu_mode)


@pytest.mark.parametrize(
    ("fields", "facts", "want"),
    [
        ({}, info(), {}),
        ({"macAddress": "02-00-00-00-00-0A"}, info(mac="02:00:00:00:00:0b"), {"mac": "02:00:00:00:00:0a"}),
        ({}, info(mac="02:00:00:00:00:0B"), {"mac": "02:00:00:00:00:0b"}),
        ({}, info(mtu=9000), {"mtu": 9000}),
        ({"model": "virtio"}, info(), {"model": "virtio-non-transitional"}),
        ({"model": "virtio-transitional"}, info(), {"model": "virtio-transitional"}),
        ({"state": "down"}, info(), {"link_up": False}),
        (
            {"bootOrder": 3, "acpiIndex": 7, "pciAddress": "0000:00:0b.0"},
            info(),
            {"boot_order": 3, "acpi_index": 7, "pci_address": PciAddress(0, 0, 0x0B, 0)},
        ),
    ],
)
def test_guest_fields(fields: dict[str, Any], facts: PodFacts, want: dict[str, Any]) -> None:
    nic = nic_of(vmi(**fields), facts)
    assert nic == VhostUserNic(name="dpdk", socket_path=SOCK, mode="server", **want)


def test_transitional_virtio_when_the_vmi_asks() -> None:
    assert nic_of(vmi({"useVirtioTransitional": True}), info()).model == "virtio-transitional"


@pytest.mark.parametrize(("cores", "queues"), [(3, 3), (1, 1), (300, 256)])
def test_multiqueue_gives_one_queue_per_vcpu(cores: int, queues: int) -> None:
    assert nic_of(vmi({"networkInterfaceMultiqueue": True}, cores=cores), info()).queues == queues
    assert nic_of(vmi(cores=cores), info()).queues is None


def test_the_device_info_wins_over_pod_links() -> None:
    """The attachment's plugin said vhost-user: a tap the pod may show for it is not looked at."""
    pod = naming.hashed_pod_iface("dpdk")
    tap = naming.tap_name(pod)
    links = {
        pod: PodLink(pod, "02:ab:0a:01:00:05", 1500, kind="veth"),
        tap: PodLink(tap, "fe:54:00:00:00:01", 1500, kind="tun"),
    }
    facts = PodFacts(links=links, network_info=info().network_info)
    assert isinstance(plan_vm_nics(vmi(macAddress="02:00:00:00:00:0a"), PodFacts(links=links)).nics[0], TapNic)
    assert nic_of(vmi(), facts).socket_path == SOCK


def test_no_vhost_user_device_info_keeps_the_other_kinds() -> None:
    pci = NetworkInfoEntry("dpdk", DeviceInfo("pci", "1.1.0", {"pci": {"pci-address": "0000:81:10.1"}}))
    (nic,) = plan_vm_nics(vmi(), PodFacts(network_info={"dpdk": pci})).nics
    assert not isinstance(nic, VhostUserNic)


@pytest.mark.parametrize("model", ["e1000", "rtl8139", "igb"])
def test_a_non_virtio_model_is_an_error(model: str) -> None:
    with pytest.raises(TranslationError, match=rf"interface 'dpdk': model '{model}' on a vhost-user attachment"):
        plan_vm_nics(vmi(model=model), info())


@pytest.mark.parametrize(
    ("facts", "needle"),
    [
        (info(mode="both"), "mode must be 'client' or 'server'"),
        (info(path="relative/sock"), "must be absolute"),
        (info(path="/var/run/../etc/sock"), "must not contain '..'"),
        (info(path='/var/run/x"/><evil/>'), "forbidden character"),
    ],
)
def test_a_bad_device_info_is_invalid_config_naming_the_interface(facts: PodFacts, needle: str) -> None:
    with pytest.raises(InvalidConfig, match=rf"interface 'dpdk': .*{needle}") as err:
        plan_vm_nics(vmi(), facts)
    assert err.value.cni_code == 7


def test_no_guest_network_data_without_ipam_but_a_bond_member_is_matched_by_mac() -> None:
    assert guest_network_data(plan_vm_nics(vmi(), info())) is None
    two = parse_vmi(
        {
            "metadata": {
                "name": "vm1",
                "namespace": "ns",
                "annotations": {"kvnet.io/bonds": '[{"name": "bond0", "members": ["a", "b"]}]'},
            },
            "spec": {
                "networks": [{"name": n, "multus": {"networkName": "userspace-ovs"}} for n in ("a", "b")],
                "domain": {
                    "devices": {
                        "interfaces": [
                            {"name": n, "binding": {"name": "kvnet"}, "macAddress": f"02:00:00:00:00:0{i}"}
                            for i, n in enumerate(("a", "b"), 1)
                        ]
                    }
                },
            },
        }
    )
    raw = {"type": "vhost-user", "version": "1.1.0", "vhost-user": {"mode": "client", "path": SOCK}}
    entries = {n: NetworkInfoEntry(n, DeviceInfo("vhost-user", "1.1.0", raw)) for n in ("a", "b")}
    data = guest_network_data(plan_vm_nics(two, PodFacts(network_info=entries)))
    assert data is not None
    assert data["ethernets"]["a"] == {"match": {"macaddress": "02:00:00:00:00:01"}, "set-name": "a"}
    assert data["bonds"]["bond0"]["interfaces"] == ["a", "b"]


# --- XML --------------------------------------------------------------------------------


def test_xml_of_a_full_nic() -> None:
    nic = VhostUserNic(
        name="dpdk",
        socket_path=SOCK,
        mode="server",
        mac="02:00:00:00:00:0a",
        mtu=9000,
        pci_address=PciAddress(0, 0, 0x0A, 0),
        acpi_index=5,
        boot_order=2,
        link_up=False,
        queues=4,
    )
    elem = render_nic(nic)
    assert (elem.tag, elem.get("type")) == ("interface", "vhostuser")
    assert elem.find("source").attrib == {"type": "unix", "path": SOCK, "mode": "server"}  # type: ignore[union-attr]
    got = {child.tag: child.attrib for child in elem}
    assert got["model"] == {"type": "virtio-non-transitional"}
    assert got["mac"] == {"address": "02:00:00:00:00:0a"}
    assert got["mtu"] == {"size": "9000"}
    assert got["boot"] == {"order": "2"}
    assert got["link"] == {"state": "down"}
    assert got["alias"] == {"name": "ua-dpdk"}
    assert got["driver"] == {"queues": "4"}  # no name="vhost": that is the kernel's vhost-net
    assert got["acpi"] == {"index": "5"}
    assert got["address"]["slot"] == "0x0a"
    assert "rom" not in got and "target" not in got
    assert nic_from_element(elem) == nic


def test_xml_of_a_minimal_nic() -> None:
    elem = render_nic(VhostUserNic(name="dpdk", socket_path=SOCK, mode="client"))
    assert [child.tag for child in elem] == ["source", "model", "alias", "rom"]  # no <mac>: libvirt picks one


@pytest.mark.parametrize("evil", ['"/><evil/>', "'&<", "]]><x>"])
def test_markup_in_fields_stays_text(evil: str) -> None:
    """The path checks keep such paths out; even a NIC built around them renders no extra element."""
    elem = render_nic(VhostUserNic(name="dpdk", socket_path="/run/" + evil, mode="server", model="virtio" + evil))
    assert elem.find("source").get("path") == "/run/" + evil  # type: ignore[union-attr]
    assert elem.find("model").get("type") == "virtio" + evil  # type: ignore[union-attr]
    assert sorted(child.tag for child in elem) == ["alias", "model", "rom", "source"]


# --- shared memory in the domain --------------------------------------------------------

BASE = """<domain type="qemu">
\t<name>vm1</name>
\t<memory unit="MiB">256</memory>
{memory}\t<devices>
\t\t<emulator>/usr/bin/qemu-system-x86_64</emulator>
\t</devices>
</domain>"""
VHOST = render_nic(VhostUserNic(name="dpdk", socket_path=SOCK, mode="server"))
TAP = render_nic(TapNic(name="blue", target="tap16477688c0e", mac="02:00:00:00:00:01"))


def _access_modes(xml: str) -> list[str | None]:
    return [a.get("mode") for a in ET.fromstring(xml).iterfind("memoryBacking/access")]


@pytest.mark.parametrize(
    ("memory", "expected"),
    [
        ("", '\t<memoryBacking>\n\t\t<access mode="shared" />\n\t</memoryBacking>\n'),
        (
            "\t<memoryBacking>\n\t\t<hugepages/>\n\t</memoryBacking>\n",
            '\t<memoryBacking>\n\t\t<access mode="shared" />\n\t\t<hugepages/>\n\t</memoryBacking>\n',
        ),
        ("\t<memoryBacking/>\n", '\t<memoryBacking>\n\t\t<access mode="shared" />\n\t</memoryBacking>\n'),
        (
            '\t<memoryBacking><source type="memfd"/><access mode="shared"/></memoryBacking>\n',
            '\t<memoryBacking><source type="memfd"/><access mode="shared"/></memoryBacking>\n',
        ),
    ],
    ids=["none", "hugepages", "empty", "already-shared"],
)
def test_a_vhost_user_nic_gets_shared_memory(memory: str, expected: str) -> None:
    out = splice(BASE.format(memory=memory), [VHOST])
    head = out[: out.index("\t<devices>")]
    assert head == BASE.format(memory=expected)[: BASE.format(memory=expected).index("\t<devices>")]
    assert _access_modes(out) == ["shared"]
    assert splice(out, [VHOST]) == out  # idempotent


def test_without_a_vhost_user_nic_the_memory_is_left_alone() -> None:
    domain = BASE.format(memory='\t<memoryBacking><access mode="private"/></memoryBacking>\n')
    out = splice(domain, [TAP])
    assert out[: out.index("\t<devices>")] == domain[: domain.index("\t<devices>")]


@pytest.mark.parametrize(
    ("memory", "needle"),
    [
        ('\t<memoryBacking><access mode="private"/></memoryBacking>\n', r"<access mode='private'>.*ua-dpdk"),
        ("\t<memoryBacking><access/></memoryBacking>\n", r"<access mode=''>"),
        (
            '\t<cpu><numa><cell id="0" cpus="0" memory="256" unit="MiB" memAccess="private"/></numa></cpu>\n',
            r"NUMA cell with memAccess='private'",
        ),
    ],
)
def test_a_domain_asking_for_private_memory_is_invalid_config(memory: str, needle: str) -> None:
    domain = BASE.format(memory=memory)
    with pytest.raises(InvalidConfig, match=needle) as err:
        splice(domain, [TAP, VHOST])
    assert err.value.cni_code == 7


def test_replacing_a_vhost_user_nic_by_alias_keeps_one_memory_backing() -> None:
    once = splice(BASE.format(memory=""), [VHOST])
    moved = render_nic(VhostUserNic(name="dpdk", socket_path="/run/other.sock", mode="client"))
    twice = splice(once, [moved])
    assert _access_modes(twice) == ["shared"]
    (iface,) = ET.fromstring(twice).iterfind("devices/interface")
    assert iface.find("source").attrib["path"] == "/run/other.sock"  # type: ignore[union-attr]


def test_parse_reads_memory_backing_and_numa_cells() -> None:
    domain = parse_domain(
        BASE.format(
            memory='\t<memoryBacking><hugepages/><access mode="shared"/></memoryBacking>\n'
            '\t<cpu><numa><cell id="0" memAccess="shared"/></numa></cpu>\n'
        )
    )
    assert domain.memory_access == "shared" and domain.numa_mem_access == ("shared",)
    assert domain.memory_backing is not None and not domain.memory_backing_empty
    start, end = domain.memory_backing
    assert domain.data[start:end].startswith(b"<memoryBacking>") and domain.data[start:end].endswith(
        b"</memoryBacking>"
    )


def test_the_sidecar_call_shares_the_memory() -> None:
    out = define_domain(
        BASE.format(memory=""), {"metadata": {"name": "vm1", "namespace": "ns"}, "spec": vmi_spec()}, info()
    )
    assert _access_modes(out) == ["shared"]
    (iface,) = ET.fromstring(out).iterfind("devices/interface")
    assert iface.get("type") == "vhostuser"


def vmi_spec() -> dict[str, Any]:
    return {
        "networks": [{"name": "dpdk", "multus": {"networkName": "userspace-ovs"}}],
        "domain": {"devices": {"interfaces": [{"name": "dpdk", "binding": {"name": "kvnet"}}]}},
    }


# --- golden -----------------------------------------------------------------------------


def case_args(case: Path) -> argparse.Namespace:
    def opt(name: str) -> str | None:
        return str(case / name) if (case / name).is_file() else None

    return argparse.Namespace(
        vm=str(case / "vm.yaml"),
        nads=[],
        network_info=opt("network-info.json"),
        pod_links=opt("pod-links.json"),
        domain=opt("domain.xml"),
        binding_name="kvnet",
        only=None,
    )


def canonical(text: str) -> str:
    return ET.canonicalize(xml_data=text, strip_text=True)


def test_there_is_a_vhost_user_golden_case() -> None:
    assert "vhost-user" in VHOST_CASES


@pytest.mark.parametrize("name", VHOST_CASES)
def test_golden(name: str, regen_golden: bool) -> None:
    case = GOLDEN / name
    xml_text, network_data = render_outputs(case_args(case))
    expected_xml, expected_nd = case / "expected.xml", case / "expected-network-data.yaml"
    if regen_golden:
        expected_xml.write_text(xml_text.rstrip("\n") + "\n")
        if network_data is None:
            expected_nd.unlink(missing_ok=True)
        else:
            expected_nd.write_text(network_data)
    assert canonical(xml_text) == canonical(expected_xml.read_text())
    if network_data is None:
        assert not expected_nd.exists()
    else:
        assert yaml.safe_load(network_data) == yaml.safe_load(expected_nd.read_text())


@pytest.mark.parametrize("name", VHOST_CASES)
def test_golden_render_parse_render(name: str) -> None:
    xml_text, _ = render_outputs(case_args(GOLDEN / name))
    root = ET.fromstring(xml_text)
    devices = root if root.tag == "devices" else root.find("devices")
    assert devices is not None
    ours = [e for e in devices.iterfind("interface") if e.get("type") == "vhostuser"]
    assert ours
    for elem in ours:
        again = render_nic(nic_from_element(elem))
        assert canonical(ET.tostring(again, encoding="unicode")) == canonical(ET.tostring(elem, encoding="unicode"))


def test_the_golden_plan_has_both_modes() -> None:
    args = case_args(GOLDEN / "vhost-user")
    from kvnet.commands.render import load_documents, parse_pod_links
    from kvnet.domain.networkinfo import parse_network_info

    vm = load_documents(args.vm)[0]
    facts = PodFacts(
        links=parse_pod_links(yaml.safe_load(Path(args.pod_links).read_text())),
        network_info=parse_network_info(Path(args.network_info).read_text()),
    )
    nics = {n.name: n for n in plan_vm_nics(parse_vmi(vm), facts).nics}
    assert isinstance(nics["dpdk-a"], VhostUserNic) and nics["dpdk-a"].mode == "server"
    assert isinstance(nics["dpdk-b"], VhostUserNic) and nics["dpdk-b"].mode == "client"
    assert isinstance(nics["blue"], TapNic)
    assert len(render_plan(plan_vm_nics(parse_vmi(vm), facts))) == 3


# --- kvnet render -----------------------------------------------------------------------

USERSPACE_NAD = """---
apiVersion: k8s.cni.cncf.io/v1
kind: NetworkAttachmentDefinition
metadata:
  name: {name}
spec:
  config: '{{"cniVersion": "1.0.0", "type": "userspace", "name": "{name}",
    "host": {{"engine": "ovs-dpdk", "iftype": "vhostuser", "netType": "bridge", "vhost": {{"mode": "client"}},
    "bridge": {{"bridgeName": "br0"}}}}}}'
"""
BRIDGE_NAD = """---
apiVersion: k8s.cni.cncf.io/v1
kind: NetworkAttachmentDefinition
metadata:
  name: br-blue
spec:
  config: '{"cniVersion": "1.0.0", "type": "bridge", "name": "br-blue", "bridge": "br-blue"}'
"""


def _render_cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    from kvnet.cli import main

    code = main(["render", *argv])
    out, err = capsys.readouterr()
    return code, out, err


def _nads(tmp_path: Path) -> str:
    path = tmp_path / "nads.yaml"
    path.write_text(
        USERSPACE_NAD.format(name="userspace-ovs") + USERSPACE_NAD.format(name="userspace-vpp") + BRIDGE_NAD
    )
    return str(path)


def test_render_previews_vhost_user_nics_from_network_info(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    """No --pod-links: the pod is assumed, and a vhost-user attachment assumes no link."""
    code, out, _ = _render_cli(
        capsys,
        str(GOLDEN / "vhost-user" / "vm.yaml"),
        _nads(tmp_path),
        "--network-info",
        str(GOLDEN / "vhost-user" / "network-info.json"),
        "--only",
        "xml",
    )
    assert code == 0
    got = {e.find("alias").get("name"): e for e in ET.fromstring(out).iterfind("interface")}  # type: ignore[union-attr]
    assert got["ua-dpdk-a"].get("type") == got["ua-dpdk-b"].get("type") == "vhostuser"
    assert got["ua-dpdk-a"].find("source").attrib == {  # type: ignore[union-attr]
        "type": "unix",
        "path": "/var/run/kubevirt/vhostuser/dpdk-a/vhost.sock",
        "mode": "server",
    }
    assert got["ua-blue"].get("type") == "ethernet"
    devices = {
        e.find("alias").get("name"): e
        for e in ET.fromstring((GOLDEN / "vhost-user" / "expected.xml").read_text()).iterfind("devices/interface")
    }  # type: ignore[union-attr]
    for alias in ("ua-dpdk-a", "ua-dpdk-b"):  # the same NICs as with the pod's real links
        assert canonical(ET.tostring(got[alias], encoding="unicode")) == canonical(
            ET.tostring(devices[alias], encoding="unicode")
        )


def test_render_refuses_a_userspace_nad_without_network_info(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    code, out, err = _render_cli(capsys, str(GOLDEN / "vhost-user" / "vm.yaml"), _nads(tmp_path))
    assert code == 1 and out == ""
    assert "interface 'dpdk-a': NAD 'userspace-ovs' is a userspace-CNI (vhost-user) attachment" in err
    assert "--network-info" in err
