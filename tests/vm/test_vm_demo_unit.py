"""The VM demo's pure parts, without root: the objects it loads (kept equal to
examples/vm-demo), the networks annotation KubeVirt would write, the launcher domain
(checked against libvirt's schema), reading NICs back from a domain, the result table."""

from __future__ import annotations

import json
import shutil
import subprocess
import xml.etree.ElementTree as ET
from dataclasses import replace
from pathlib import Path

import pytest
import yaml

from kvnet.core import naming
from kvnet.lab import guest
from kvnet.lab.netns import NetnsLike
from kvnet.lab.vm import report, scenario
from kvnet.lab.vm.kubevirt import KubeVirtPeer, peer_missing, peer_path
from kvnet.lab.vm.run import run_in

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = REPO / "examples" / "vm-demo"


@pytest.mark.parametrize("name", ["nads.yaml", "vmi.yaml", "pod.yaml"])
def test_examples_are_what_the_demo_loads(name: str) -> None:
    on_disk = [d for d in yaml.safe_load_all((EXAMPLES / name).read_text()) if d]
    assert on_disk == scenario.example_objects()[name]


def test_networks_annotation_is_kubevirts() -> None:
    pod = scenario.launcher_pod(scenario.default_scenario())
    text = pod["metadata"]["annotations"]["k8s.v1.cni.cncf.io/networks"]
    assert text.startswith(
        '[{"name":"blue-net","namespace":"default","interface":"pod16477688c0e"},'
        '{"name":"kvnet-binding","namespace":"default","cni-args":{"logicNetworkName":"blue"}},'
    )
    entries = json.loads(text)
    assert len(entries) == 10
    assert entries[6] == {
        "name": "bond-a-net",
        "namespace": "default",
        "mac": "02:6b:76:00:00:a1",
        "interface": naming.hashed_pod_iface("bond-a"),
    }
    assert list(entries[6]) == ["name", "namespace", "mac", "interface"]
    assert all("interface" not in e for e in entries[1::2])


def test_peers_one_per_segment() -> None:
    s = scenario.default_scenario()
    assert [(p.segment, p.addresses) for p in s.peers()] == [
        ("kvb-blue", ("10.81.0.2/24", "fd00:81::2/64")),
        ("kvm-green", ("10.82.0.2/24",)),
        ("kvb-red", ("10.83.0.2/24",)),
        ("kvb-bond", ("10.84.0.2/24",)),
    ]
    assert s.expected_peer("bond-b") == s.expected_peer("bond-a")
    assert [n.subnet for n in scenario.bridge_scenario(8).nets][-1] == "10.108.0.0/24"


def test_nad_configs() -> None:
    s = scenario.default_scenario()
    conf = scenario.bridge_nad_config(s.net("green"), "/x")
    assert conf == {
        "cniVersion": "1.0.0",
        "name": "green-net",
        "type": "macvlan",
        "master": "kvm-green",
        "mode": "bridge",
        "ipam": {"type": "host-local", "subnet": "10.82.0.0/24", "rangeStart": "10.82.0.10", "dataDir": "/x"},
    }
    assert "ipam" not in scenario.bridge_nad_config(s.net("bond-a"), "/x")
    assert scenario.bridge_nad_config(s.net("red"), None)["mtu"] == 1400
    assert scenario.bridge_nad_config(s.net("blue"), None)["ipam"] == {
        "type": "host-local",
        "ranges": [
            [{"subnet": "10.81.0.0/24", "rangeStart": "10.81.0.10"}],
            [{"subnet": "fd00:81::/64", "rangeStart": "fd00:81::10"}],
        ],
    }


def domain(tmp_path: Path) -> str:
    image = guest.GuestImage(tmp_path / "vmlinux", tmp_path / "initrd.gz", "p", "v", True)
    return scenario.launcher_domain(
        "default_vmi",
        "00000000-0000-4000-8000-000000000001",
        image,
        image.cmdline("kvnet.stay=5"),
        tmp_path / "c.log",
        tmp_path / "s.sock",
    )


def test_launcher_domain_shape(tmp_path: Path) -> None:
    xml = domain(tmp_path)
    assert xml.startswith('<domain type="qemu">\n\t<name>default_vmi</name>')
    assert '<type arch="x86_64" machine="q35">hvm</type>' in xml and "<acpi />" in xml
    assert f"<cmdline>{guest.BASE_CMDLINE} kvnet.stay=5</cmdline>" in xml


def test_launcher_domain_passes_libvirts_schema(tmp_path: Path) -> None:
    if not shutil.which("virt-xml-validate"):
        pytest.skip("virt-xml-validate not installed (apt-get install libvirt-clients libxml2-utils)")
    path = tmp_path / "d.xml"
    path.write_text(domain(tmp_path))
    done = subprocess.run(["virt-xml-validate", str(path), "domain"], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr


def test_domain_nics_reads_aliases() -> None:
    xml = """<domain><devices>
      <interface type="ethernet"><mac address="02:AA:00:00:00:01"/><target dev="tap16477688c0e" managed="no"/><mtu size="1400"/><alias name="ua-blue"/></interface>
      <interface type="ethernet"><mac address="02:aa:00:00:00:02"/><alias name="net0"/></interface>
    </devices></domain>"""
    assert scenario.domain_nics(xml) == {
        "blue": scenario.DomainNic("ua-blue", "02:aa:00:00:00:01", "tap16477688c0e", 1400)
    }


def test_table_and_verdicts() -> None:
    rows = [
        report.NicRow(
            "net1",
            "bridge",
            "02:00:00:00:00:01",
            "net1",
            "02:00:00:00:00:01",
            1500,
            1500,
            ("10.101.0.10", "fd00::10"),
            ("10.101.0.10/24", "fd00::10/64"),
            (("10.101.0.2", True), ("fd00::2", True)),
            ("10.101.0.0/24", "fd00::/64"),
        ),
        report.NicRow(
            "net2",
            "bridge",
            "02:00:00:00:00:02",
            None,
            None,
            1500,
            None,
            ("10.102.0.10",),
            (),
            (("10.102.0.2", None),),
            ("10.102.0.0/24",),
        ),
    ]
    result = report.DemoResult(
        scenario.bridge_scenario(2), rows=rows, failover=report.Failover("bond0", "a", "a", True)
    )
    table = report.format_table(result)
    assert "failover bond0: active a -> a (ping ok) -> back to - (ping -): FAILED" in table
    assert "MISSING" in table and "02:00:00:00:00:02 != -" in table and "1500 != -" in table
    assert "10.101.0.2 ok, fd00::2 ok" in table and "10.102.0.2 -" in table
    assert result.rows[0].ok and not result.rows[1].ok and not result.ok
    result = replace(result, rows=result.rows[:1], failover=report.Failover("bond0", "a", "b", True, "a", True))
    assert not result.ok  # net2 has no row
    result = replace(result, scenario=scenario.bridge_scenario(1), failover=report.Failover("bond0", "a", "b", True))
    assert not result.ok  # no failback
    result = replace(result, failover=report.Failover("bond0", "a", "b", True, "b", True))
    assert not result.ok  # did not come back
    result = replace(result, failover=report.Failover("bond0", "a", "b", True, "a", True))
    assert result.ok
    good = result.rows[0]
    assert not replace(good, domain_mtu=1400, guest_mtu=1500).ok
    assert not replace(good, guest_addresses=good.guest_addresses[:1]).ok
    assert not replace(good, pings=(("fd00::2", False),)).ok
    assert not replace(good, pings=()).ok  # no ping at all is not a pass
    # IPAM expected from the scenario but network-status has none (or only one family)
    assert not replace(good, ipam_addresses=(), guest_addresses=()).ok
    assert not replace(good, ipam_addresses=good.ipam_addresses[:1], guest_addresses=good.guest_addresses[:1]).ok
    # an address outside the NAD's subnet, or IPAM where the scenario has none
    assert not replace(
        good, ipam_addresses=("10.99.0.10", "fd00::10"), guest_addresses=("10.99.0.10/24", "fd00::10/64")
    ).ok
    assert not replace(good, ipam_subnets=()).ok
    assert replace(
        good, ipam_addresses=(), guest_addresses=("10.84.0.5/24",), ipam_subnets=()
    ).ok  # a bond member: no IPAM
    assert good.expected_guest_addresses() == ("10.101.0.10/24", "fd00::10/64")
    result = replace(result, leftovers=["netns kvd-1"])
    assert not result.ok and "left behind:\n  netns kvd-1" in result.explain()


def test_any_exception_is_recorded_with_its_traceback_and_the_console_kept(tmp_path: Path) -> None:
    """Not only kvnet's own errors: whatever a step raises ends up in the result (type and
    traceback), the console log is read and the leftovers check still runs."""
    (tmp_path / "console.log").write_text("KVNET boot uptime=1.0\n")

    def factory(prefix: str) -> NetnsLike:
        raise RuntimeError(f"no netns for {prefix}")

    image = guest.GuestImage(tmp_path / "vmlinux", tmp_path / "initrd.gz", "p", "v", True)
    result = run_in(tmp_path, image, scenario.bridge_scenario(1), netns_factory=factory, failover=False, stay=0)
    assert result.error == "RuntimeError: no netns for kvd"
    assert "Traceback" in result.traceback and "in factory" in result.traceback
    assert "RuntimeError: no netns for kvd" in result.explain() and "Traceback" in result.explain()
    assert "KVNET boot uptime=1.0" in result.console_text
    assert result.leftovers == [] and not result.ok


def built_peer() -> KubeVirtPeer:
    missing = peer_missing()
    if missing:
        pytest.skip(missing)
    return KubeVirtPeer(peer_path(), scenario.kubevirt_cr())


def test_kubevirt_cr_registers_kvnet_as_deploy_does() -> None:
    patch = yaml.safe_load((REPO / "deploy" / "kubevirt-cr-patch.yaml").read_text())
    want = patch["spec"]["configuration"]["network"]["binding"]["kvnet"]
    got = scenario.kubevirt_cr()["spec"]["configuration"]
    assert got["network"]["binding"]["kvnet"] == {**want, "sidecarImage": scenario.SIDECAR_IMAGE}
    assert got["developerConfiguration"] == {"useEmulation": True}  # TCG: no KVM here


def test_the_labs_pod_parts_are_what_kubevirts_code_makes() -> None:
    """The stand-in kept for a machine without the peers equals virt-controller's output."""
    s = scenario.default_scenario()
    peer = scenario.peer_launcher_parts(built_peer().annotation(scenario.vmi(s)))
    assert peer == scenario.lab_launcher_parts(s)


def test_the_lab_edits_of_the_converters_domain() -> None:
    """Only the kernel boot, the console's log file and the command channel change."""
    s = scenario.default_scenario()
    converted = built_peer().domain(scenario.vmi(s))
    edits = scenario.LabDomainEdits(
        Path("/g/vmlinux"), Path("/g/initrd.gz"), "console=ttyS0 x", Path("/w/console.log"), Path("/w/cmd.sock")
    )
    before = ET.fromstring(converted)
    after = ET.fromstring(scenario.edit_converter_domain(converted, edits))
    os_el = after.find("os")
    assert os_el is not None
    assert [(e.tag, e.text) for e in os_el][-3:] == [
        ("kernel", "/g/vmlinux"),
        ("initrd", "/g/initrd.gz"),
        ("cmdline", "console=ttyS0 x"),
    ]
    serials = after.findall("devices/serial")
    assert [s.find("target").get("port") for s in serials] == ["0", "1"]  # type: ignore[union-attr]
    assert serials[0].find("log").attrib == {"file": "/w/console.log", "append": "on"}  # type: ignore[union-attr]
    # its socket stays KubeVirt's, inside libvirtd's private /run
    assert serials[0].find("source").get("path", "").startswith("/var/run/kubevirt-private/")  # type: ignore[union-attr]
    assert serials[1].find("source").attrib == {"mode": "bind", "path": "/w/cmd.sock"}  # type: ignore[union-attr]

    # every other element is the converter's
    def tags(root: ET.Element) -> list[str]:
        return sorted(e.tag for e in root.iter() if e.tag not in ("kernel", "initrd", "cmdline"))

    assert tags(after) == sorted([*tags(before), "serial", "target", "source"])
    assert "/var/run/libvirt/cloud-init-dir/default/vmi-demo/noCloud.iso" in scenario.converter_paths(converted)


def test_dhcp_rows_need_each_answer_and_silence_without_ipam() -> None:
    """A guest without cloud-init: DHCPv4 per IPv4 range, DHCPv6 (a /128) and an RA per IPv6
    range must have answered, and on a NIC without IPAM nothing may have."""
    good = report.NicRow(
        "blue",
        "bridge",
        "02:00:00:00:00:01",
        "eth0",
        "02:00:00:00:00:01",
        1400,
        1400,
        ("10.81.0.10", "fd00:81::10"),
        ("10.81.0.10/24", "fd00:81::10/128"),
        (("10.81.0.2", True),),
        ("10.81.0.0/24", "fd00:81::/64"),
        addressing="dhcp",
        answered=("dhcp4", "dhcp6", "ra6"),
    )
    assert good.ok and good.expected_guest_addresses() == ("10.81.0.10/24", "fd00:81::10/128")
    assert not replace(good, answered=("dhcp4", "dhcp6")).ok  # no RA
    assert not replace(good, answered=("dhcp4", "ra6"), unanswered=("dhcp6",)).ok
    assert not replace(good, guest_addresses=("10.81.0.10/24", "fd00:81::10/64")).ok
    plain = replace(
        good,
        network="plain",
        ipam_addresses=(),
        guest_addresses=(),
        pings=(),
        ipam_subnets=(),
        answered=(),
        unanswered=("dhcp4", "dhcp6"),
        peer_expected=False,
    )
    assert plain.ok and plain.expected_answers() == ()
    assert not replace(plain, answered=("dhcp4",), unanswered=("dhcp6",)).ok  # someone answered a pure L2 NIC
    assert not replace(plain, peer_expected=True).ok  # a NIC with a peer must ping it
    table = report.format_table(report.DemoResult(scenario.dhcp_scenario(), rows=[good, plain]))
    assert "dhcp4+dhcp6+ra6" in table and "nothing answered" in table
    assert "dhcp4 (expected dhcp4+dhcp6+ra6)" in report.format_table(
        report.DemoResult(scenario.dhcp_scenario(), rows=[replace(good, answered=("dhcp4",))])
    )
    assert "cloudinitdisk" not in json.dumps(scenario.vmi(scenario.dhcp_scenario()))
