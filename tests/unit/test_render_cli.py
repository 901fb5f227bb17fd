"""``kvnet render``: offline, from files, through the real ``kvnet`` dispatcher."""

from __future__ import annotations

import json
import logging
import subprocess
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
import yaml

from kvnet.cli import main

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = str(REPO / "examples" / "vm-kvnet.yaml")
INFO = str(REPO / "examples" / "network-info-kvnet.json")
LINKS = str(REPO / "examples" / "pod-links-kvnet.json")


def render(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(["render", *argv])
    out, err = capsys.readouterr()
    return code, out, err


def c14n(text: str) -> str:
    return ET.canonicalize(text, strip_text=True)


def test_example_prints_xml_then_network_data(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = render(capsys, EXAMPLE, "--network-info", INFO)
    assert code == 0, err
    xml_part, _, nd_part = out.partition("# guest network data (cloud-init network config v2)\n")
    devices = ET.fromstring(xml_part)
    assert [e.find("alias").get("name") for e in devices] == ["ua-blue", "ua-sriov-vf"]  # type: ignore[union-attr]
    data = yaml.safe_load(nd_part)
    assert data["bonds"]["bond0"]["interfaces"] == ["sriov-a", "sriov-b"]
    # static IPAM of the NAD reaches the guest through the assumed binding record
    assert data["ethernets"]["blue"]["addresses"] == ["10.1.0.5/24"]


def test_assumed_pod_equals_the_shipped_pod_links(capsys: pytest.CaptureFixture[str]) -> None:
    _, assumed, _ = render(capsys, EXAMPLE, "--network-info", INFO)
    _, given, _ = render(capsys, EXAMPLE, "--network-info", INFO, "--pod-links", LINKS)
    assert assumed == given


def test_only_switches(capsys: pytest.CaptureFixture[str]) -> None:
    _, xml_only, _ = render(capsys, EXAMPLE, "--network-info", INFO, "--only", "xml")
    ET.fromstring(xml_only)
    _, nd_only, _ = render(capsys, EXAMPLE, "--network-info", INFO, "--only", "network-data")
    assert yaml.safe_load(nd_only)["version"] == 2


def test_domain_splice(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    domain = tmp_path / "domain.xml"
    domain.write_text(
        '<domain type="qemu">\n\t<name>demo_vm-kvnet</name>\n\t<devices>\n\t\t<emulator>/usr/bin/qemu-system-x86_64</emulator>\n\t</devices>\n</domain>'
    )
    code, out, err = render(capsys, EXAMPLE, "--network-info", INFO, "--domain", str(domain), "--only", "xml")
    assert code == 0, err
    root = ET.fromstring(out)
    assert root.tag == "domain"
    assert [e.tag for e in root.find("devices")] == ["emulator", "interface", "hostdev"]  # type: ignore[union-attr]


def test_separate_nad_files_and_missing_nad(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    docs = list(yaml.safe_load_all(Path(EXAMPLE).read_text()))
    vm, nads = tmp_path / "vm.yaml", tmp_path / "nads.yaml"
    vm.write_text(yaml.safe_dump(docs[0]))
    nads.write_text(yaml.safe_dump({"kind": "List", "items": docs[1:2]}))
    code, _, err = render(capsys, str(vm), str(nads), "--network-info", INFO)
    assert code == 1
    assert err.strip() == (
        "kvnet render: interface 'vf': NetworkAttachmentDefinition 'sriov-vfio' is not in the given files (have demo/br-blue)"
    )
    nads.write_text(yaml.safe_dump_all(docs[1:]))
    code, _, err = render(capsys, str(vm), str(nads), "--network-info", INFO)
    assert code == 0, err


def test_sriov_bond_members_offline(
    capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture, tmp_path: Path
) -> None:
    """Without a domain the sriov: {} members' hostdevs are KubeVirt's: their PCI addresses are not needed."""
    docs = list(yaml.safe_load_all(Path(EXAMPLE).read_text()))
    ifaces = docs[0]["spec"]["template"]["spec"]["domain"]["devices"]["interfaces"]
    docs[0]["spec"]["template"]["spec"]["domain"]["devices"]["interfaces"] = [i for i in ifaces if i["name"] != "vf"]
    docs[0]["spec"]["template"]["spec"]["networks"] = [
        n for n in docs[0]["spec"]["template"]["spec"]["networks"] if n["name"] != "vf"
    ]
    (tmp_path / "vm.yaml").write_text(yaml.safe_dump_all(docs))
    caplog.set_level(logging.INFO, logger="kvnet.commands.render")
    code, out, err = render(capsys, str(tmp_path / "vm.yaml"), "--only", "network-data")
    assert code == 0, err
    assert yaml.safe_load(out)["bonds"]["bond0"]["interfaces"] == ["sriov-a", "sriov-b"]
    assert "interface 'blue': no macAddress and no network-info mac" in caplog.text  # a placeholder MAC is said so


def test_sriov_needs_network_info(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = render(capsys, EXAMPLE)
    assert code == 1 and out == ""
    assert err.startswith(
        "kvnet render: interface 'vf': pod interface podc70d6cef7d4 and tap tapc70d6cef7d4 are absent and network-info has no entry"
    )


def _vm(tmp_path: Path, nad_type: str = "bridge", **iface: object) -> str:
    vm = {
        "kind": "VirtualMachineInstance",
        "metadata": {"name": "v", "namespace": "ns"},
        "spec": {
            "networks": [{"name": "blue", "multus": {"networkName": "nad-blue"}}],
            "domain": {"devices": {"interfaces": [{"name": "blue", "binding": {"name": "kvnet"}, **iface}]}},
        },
    }
    nad = {
        "kind": "NetworkAttachmentDefinition",
        "metadata": {"name": "nad-blue"},
        "spec": {"config": json.dumps({"type": nad_type, "mtu": 9000})},
    }
    path = tmp_path / "vm.yaml"
    path.write_text(yaml.safe_dump_all([vm, nad]))
    return str(path)


def test_placeholder_mac_is_stable(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    path = _vm(tmp_path)
    _, first, _ = render(capsys, path, "--only", "xml")
    _, second, _ = render(capsys, path, "--only", "xml")
    assert first == second
    elem = ET.fromstring(first)[0]
    mac = elem.find("mac").get("address")  # type: ignore[union-attr]
    assert mac.startswith("02:") and len(mac) == 17  # type: ignore[union-attr]
    assert elem.find("mtu").get("size") == "9000"  # type: ignore[union-attr]


def test_macvtap_nad(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    _, out, _ = render(capsys, _vm(tmp_path, "macvtap", macAddress="02:00:00:00:00:07"), "--only", "xml")
    elem = ET.fromstring(out)[0]
    assert elem.find("target").get("dev") == "pod16477688c0e"  # type: ignore[union-attr]
    assert elem.find("mac").get("address") == "02:00:00:00:00:07"  # type: ignore[union-attr]


def test_multiqueue_assumed_when_asked(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    doc = list(yaml.safe_load_all(Path(_vm(tmp_path)).read_text()))
    doc[0]["spec"]["domain"]["devices"]["networkInterfaceMultiqueue"] = True
    doc[0]["spec"]["domain"]["cpu"] = {"sockets": 2}
    (tmp_path / "mq.yaml").write_text(yaml.safe_dump_all(doc))
    _, out, _ = render(capsys, str(tmp_path / "mq.yaml"), "--only", "xml")
    assert ET.fromstring(out)[0].find("driver").get("queues") == "2"  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("links", "message"),
    [
        ({"a": 1}, "kvnet render: pod links must be a list of links (or {links: [...]})"),
        (
            [{"name": "x/y", "mac": "02:00:00:00:00:01"}],
            "kvnet render: pod link 'x/y': interface name 'x/y' contains / or : or whitespace",
        ),
        ([{"name": "tap1", "mac": "nope"}], "kvnet render: pod link 'tap1': mac 'nope' is not a MAC address"),
        (
            [{"name": "tap1", "mac": "02:00:00:00:00:01", "ifalias": '{"kvnet":9}'}],
            "kvnet render: unsupported kvnet binding record version 9",
        ),
    ],
)
def test_bad_pod_links(capsys: pytest.CaptureFixture[str], tmp_path: Path, links: object, message: str) -> None:
    path = tmp_path / "links.json"
    path.write_text(json.dumps(links))
    code, _, err = render(capsys, _vm(tmp_path), "--pod-links", str(path))
    assert code == 1
    assert err.startswith(message), err


def test_bad_files(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    code, _, err = render(capsys, str(tmp_path / "missing.yaml"))
    assert code == 1 and err.startswith("kvnet render: cannot read ")
    (tmp_path / "two.yaml").write_text("kind: VirtualMachine\n---\nkind: VirtualMachine\n")
    code, _, err = render(capsys, str(tmp_path / "two.yaml"))
    assert code == 1 and "must hold exactly one VirtualMachine or VirtualMachineInstance, found 2" in err


def test_console_script(kvnet_bin_dir: str) -> None:
    done = subprocess.run(
        [f"{kvnet_bin_dir}/kvnet", "render", EXAMPLE, "--network-info", INFO, "--only", "xml"],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr
    assert c14n(done.stdout) == c14n((REPO / "tests" / "golden" / "example" / "expected.xml").read_text())


@pytest.mark.parametrize("evil", ['"/><evil/>', "'&<", "]]><!--"])
def test_nad_and_network_strings_cannot_reach_the_xml(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, evil: str
) -> None:
    """Strings a VMI or NAD author controls but kvnet does not validate never appear in the XML."""
    vm = {
        "kind": "VirtualMachineInstance",
        "metadata": {"name": f"v{evil}", "namespace": "ns", "annotations": {"x": evil}},
        "spec": {
            "networks": [{"name": "blue", "multus": {"networkName": f"ns/{evil}"}}],
            "domain": {"devices": {"interfaces": [{"name": "blue", "binding": {"name": "kvnet"}}]}},
        },
    }
    nad = {
        "kind": "NetworkAttachmentDefinition",
        "metadata": {"name": evil, "namespace": "ns", "annotations": {"a": evil}},
        "spec": {
            "config": json.dumps(
                {"type": "bridge", "name": evil, "bridge": evil, "ipam": {"type": "static", "addresses": []}}
            )
        },
    }
    path = tmp_path / "vm.yaml"
    path.write_text(yaml.safe_dump_all([vm, nad]))
    code, out, err = render(capsys, str(path), "--only", "xml")
    assert code == 0, err
    devices = ET.fromstring(out)
    assert [(e.tag, sorted(e.attrib)) for e in devices.iter()] == [
        ("devices", []),
        ("interface", ["type"]),
        ("target", ["dev", "managed"]),
        ("model", ["type"]),
        ("mac", ["address"]),
        ("mtu", ["size"]),
        ("alias", ["name"]),
        ("rom", ["enabled"]),
    ]
    assert evil not in out


@pytest.mark.parametrize(
    ("nad_type", "mac", "expected"),
    [
        ("bridge", None, "BridgedTap"),
        ("vlan", "02:00:00:00:00:07", "BridgedTap"),
        ("macvlan", None, "RedirectedTap"),
        ("ipvlan", "02:00:00:00:00:07", "RedirectedTap"),
        ("macvtap", "02:00:00:00:00:07", "Macvtap"),
        ("sriov", None, "VfioVf"),
    ],
)
def test_assumed_pod_is_the_binding_model(nad_type: str, mac: str | None, expected: str) -> None:
    """Without --pod-links the pod is kvnet.core.plumbing's, by the binding's own mode rule; the
    attachment's MAC is the VMI's, else network-info's, else the placeholder."""
    from kvnet.commands.render import assumed_plumbing, assumed_pod_links, placeholder_mac
    from kvnet.core import plumbing
    from kvnet.domain.vmi import parse_vmi

    iface: dict[str, object] = {"name": "blue", "binding": {"name": "kvnet"}}
    if mac:
        iface["macAddress"] = mac
    vmi = parse_vmi(
        {
            "metadata": {"name": "v", "namespace": "ns"},
            "spec": {
                "networks": [{"name": "blue", "multus": {"networkName": "nad-blue"}}],
                "domain": {"devices": {"interfaces": [iface]}},
            },
        }
    )
    nad = {"metadata": {"name": "nad-blue"}, "spec": {"config": json.dumps({"type": nad_type, "mtu": 9000})}}
    (assumed,) = assumed_plumbing(vmi, {"ns/nad-blue": nad}, {}, "kvnet")
    assert type(assumed).__name__ == expected
    attachment_mac = mac or placeholder_mac(vmi, "blue")
    if isinstance(assumed, plumbing.BridgedTap | plumbing.RedirectedTap):
        assert assumed.record.original_mac == attachment_mac and assumed.record.mtu == 9000
        assert assumed.pod_link_kind == (nad_type if nad_type in ("macvlan", "ipvlan") else "veth")
    if isinstance(assumed, plumbing.Macvtap):
        assert (assumed.mac, assumed.mtu) == (attachment_mac, 9000)
    assert assumed_pod_links(vmi, {"ns/nad-blue": nad}, {}, "kvnet") == plumbing.pod_links([assumed])


def test_macvlan_nad_with_the_vmi_mac_renders_through_the_redirect(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """The assumed redirect keeps the attachment's MAC, which is the VMI's: the guest may use it."""
    _, out, err = render(capsys, _vm(tmp_path, "macvlan", macAddress="02:00:00:00:00:07"), "--only", "xml")
    elem = ET.fromstring(out)[0]
    assert elem.find("target").get("dev") == "tap16477688c0e", err  # type: ignore[union-attr]
    assert elem.find("mac").get("address") == "02:00:00:00:00:07"  # type: ignore[union-attr]
