"""Splicing into KubeVirt's domain: replace by alias, else append; the rest untouched."""

from __future__ import annotations

import xml.etree.ElementTree as ET

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kvnet.core.errors import RenderError
from kvnet.core.model import PciAddress, TapNic
from kvnet.domain.render import render_nic
from kvnet.domain.splice import kubevirt_hostdevs, splice

# as virt-launcher sends it: tab-indented, no XML header, a qemu: namespace, a comment
DOMAIN = """<domain type="kvm" xmlns:qemu="http://libvirt.org/schemas/domain/qemu/1.0">
\t<name>ns_vm1</name>
\t<!-- kept -->
\t<devices>
\t\t<interface type="ethernet">
\t\t\t<target dev="tap0" managed="no"></target>
\t\t\t<model type="virtio-non-transitional"></model>
\t\t\t<mac address="02:00:00:00:00:01"></mac>
\t\t\t<alias name="ua-default"></alias>
\t\t</interface>
\t\t<interface type="ethernet">
\t\t\t<target dev="tapold" managed="no"></target>
\t\t\t<model type="e1000"></model>
\t\t\t<mac address="02:00:00:00:00:99"></mac>
\t\t\t<alias name="ua-blue"></alias>
\t\t</interface>
\t\t<hostdev type="pci" managed="no" mode="subsystem">
\t\t\t<source>
\t\t\t\t<address type="pci" domain="0x0000" bus="0x81" slot="0x10" function="0x2"></address>
\t\t\t</source>
\t\t\t<alias name="ua-sriov-sa"></alias>
\t\t</hostdev>
\t\t<hostdev type="pci" managed="no" mode="subsystem">
\t\t\t<source>
\t\t\t\t<address type="pci" domain="0x0000" bus="0x00" slot="0x02" function="0x0"></address>
\t\t\t</source>
\t\t\t<alias name="hostdev0"></alias>
\t\t</hostdev>
\t</devices>
\t<qemu:commandline>
\t\t<qemu:arg value="-nodefaults"></qemu:arg>
\t</qemu:commandline>
</domain>"""

BLUE = TapNic(name="blue", target="tap16477688c0e", mac="02:00:00:00:00:02")
RED = TapNic(name="red", target="tapb1f51a511f1", mac="02:00:00:00:00:03")


def c14n(text: str) -> str:
    return ET.canonicalize(text, strip_text=True)


def test_replace_by_alias_and_append() -> None:
    out = splice(DOMAIN, [render_nic(BLUE), render_nic(RED)])
    root = ET.fromstring(out)
    devs = root.find("devices")
    assert devs is not None
    assert [e.find("alias").get("name") for e in devs] == ["ua-default", "ua-blue", "ua-sriov-sa", "hostdev0", "ua-red"]  # type: ignore[union-attr]
    blue = devs[1]
    assert blue.find("target").get("dev") == "tap16477688c0e"  # type: ignore[union-attr]
    assert blue.find("model").get("type") == "virtio-non-transitional"  # type: ignore[union-attr]


def test_rest_of_domain_left_as_it_was() -> None:
    out = splice(DOMAIN, [render_nic(RED)])
    cut = DOMAIN.index("\n\t</devices>")
    # everything before and after the appended device is the input, byte for byte
    assert out.startswith(DOMAIN[:cut]) and out.endswith(DOMAIN[cut:])
    added = out[cut : len(out) - (len(DOMAIN) - cut)]
    # the new device follows KubeVirt's tab indentation
    assert added.startswith('\n\t\t<interface type="ethernet">\n\t\t\t<target dev="tapb1f51a511f1"')
    assert added.endswith("\n\t\t</interface>")
    assert c14n(added) == c14n(ET.tostring(render_nic(RED), encoding="unicode"))


KUBEVIRT_METADATA = DOMAIN.replace(
    "\t<!-- kept -->\n",
    '\t<metadata>\n\t\t<kubevirt xmlns="http://kubevirt.io">\n\t\t\t<uid>1234</uid>\n\t\t</kubevirt>\n\t</metadata>\n',
)


def test_default_namespaces_survive_repeated_splices() -> None:
    """KubeVirt's <metadata><kubevirt xmlns=...>: kept as written, also when a second sidecar splices again."""
    once = splice(KUBEVIRT_METADATA, [render_nic(BLUE)])
    twice = splice(once, [render_nic(RED)])
    assert '<kubevirt xmlns="http://kubevirt.io">' in twice and "ns0" not in twice
    assert [e.find("alias").get("name") for e in ET.fromstring(twice).find("devices")] == [  # type: ignore[union-attr]
        "ua-default",
        "ua-blue",
        "ua-sriov-sa",
        "hostdev0",
        "ua-red",
    ]
    assert kubevirt_hostdevs(twice) == {"ua-sriov-sa": PciAddress(0, 0x81, 0x10, 2)}


@pytest.mark.parametrize(
    "domain",
    [
        "<domain><devices/></domain>",
        "<domain>\n  <devices></devices>\n</domain>",
        "<domain>\n  <devices>\n  </devices>\n</domain>",
        "<?xml version='1.0' encoding='utf-8'?>\n<domain><devices><disk/></devices><devices/></domain>",
    ],
)
def test_odd_devices(domain: str) -> None:
    out = splice(domain, [render_nic(BLUE)])
    devs = ET.fromstring(out.encode()).find("devices")
    assert devs is not None and devs[-1].tag == "interface"
    assert splice(out, [render_nic(BLUE)]) == out


def test_replacing_keeps_surroundings() -> None:
    out = splice(DOMAIN, [render_nic(BLUE)])
    before, after = DOMAIN.split('\t\t<interface type="ethernet">\n\t\t\t<target dev="tapold"')
    after = after[after.index("</interface>") + len("</interface>") :]
    assert out.startswith(before) and out.endswith(after)


def test_same_alias_twice_in_one_call() -> None:
    out = splice(DOMAIN, [render_nic(RED), render_nic(replace_mac(RED, "02:00:00:00:00:33"))])
    devs = ET.fromstring(out).find("devices")
    reds = [e for e in devs if e.find("alias").get("name") == "ua-red"]  # type: ignore[union-attr]
    assert len(reds) == 1 and reds[0].find("mac").get("address") == "02:00:00:00:00:33"  # type: ignore[union-attr]


def replace_mac(nic: TapNic, mac: str) -> TapNic:
    from dataclasses import replace

    return replace(nic, mac=mac)


def test_input_is_not_modified_and_bytes_accepted() -> None:
    elem = render_nic(BLUE)
    before = ET.tostring(elem)
    out = splice(DOMAIN.encode(), [elem])
    assert ET.tostring(elem) == before
    assert splice(out, [elem]) == out  # idempotent: splicing again replaces the same device


def test_empty_devices() -> None:
    out = splice("<domain><name>x</name><devices/></domain>", [render_nic(BLUE)])
    assert [e.tag for e in ET.fromstring(out).find("devices")] == ["interface"]  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("domain", "message"),
    [
        ("<domain><devices>", "the domain XML does not parse"),
        ("", "the domain XML does not parse"),
        ("<network/>", "the domain XML has root <network>, expected <domain>"),
        ("<domain><name>x</name></domain>", "domain 'x' has no <devices>"),
    ],
)
def test_bad_domain(domain: str, message: str) -> None:
    with pytest.raises(RenderError) as err:
        splice(domain, [render_nic(BLUE)])
    assert err.value.msg.startswith(message)


def test_non_ascii_and_non_utf8() -> None:
    text = "<domain><description>caf\u00e9 \u2603</description><devices></devices></domain>"
    out = splice(text, [render_nic(BLUE)])
    assert out.startswith("<domain><description>caf\u00e9 \u2603</description><devices>")
    assert splice(out.encode(), [render_nic(BLUE)]) == out
    latin1 = "<?xml version='1.0' encoding='iso-8859-1'?><domain><description>caf\u00e9</description><devices/></domain>".encode(
        "latin-1"
    )
    with pytest.raises(RenderError, match="not UTF-8"):
        splice(latin1, [render_nic(BLUE)])


def test_device_without_alias() -> None:
    with pytest.raises(RenderError, match="cannot splice <interface> without an <alias name>"):
        splice(DOMAIN, [ET.fromstring('<interface type="ethernet"/>')])


def test_kubevirt_hostdevs() -> None:
    assert kubevirt_hostdevs(DOMAIN) == {"ua-sriov-sa": PciAddress(0, 0x81, 0x10, 2)}
    with pytest.raises(RenderError, match="hostdev ua-sriov-x in the domain has no source address"):
        kubevirt_hostdevs('<domain><devices><hostdev><alias name="ua-sriov-x"/></hostdev></devices></domain>')
    with pytest.raises(RenderError, match="malformed source address"):
        kubevirt_hostdevs(
            '<domain><devices><hostdev><source><address domain="zz"/></source><alias name="ua-sriov-x"/></hostdev></devices></domain>'
        )


def test_define_domain_pipeline() -> None:
    """The sidecar's OnDefineDomain call: parse VMI, read KubeVirt's hostdevs, render, splice."""
    from kvnet.core.model import BindingRecord, PodFacts, PodLink
    from kvnet.domain.pipeline import define_domain

    vmi = {
        "metadata": {
            "name": "vm1",
            "namespace": "ns",
            "annotations": {"kvnet.io/bonds": '[{"name": "bond0", "members": ["blue", "sa"]}]'},
        },
        "spec": {
            "networks": [
                {"name": "default", "pod": {}},
                {"name": "blue", "multus": {"networkName": "b"}},
                {"name": "sa", "multus": {"networkName": "s"}},
            ],
            "domain": {
                "devices": {
                    "interfaces": [
                        {"name": "default", "masquerade": {}},
                        {"name": "blue", "binding": {"name": "kvnet"}, "macAddress": "02:00:00:00:00:0b"},
                        {"name": "sa", "sriov": {}, "macAddress": "02:00:00:00:00:0a"},
                    ]
                }
            },
        },
    }
    links = {
        "pod16477688c0e": PodLink(
            name="pod16477688c0e",
            mac="02:ab:00:00:00:01",
            mtu=1400,
            record=BindingRecord(original_mac="0a:58:00:00:00:01", mtu=1400),
        ),
        "tap16477688c0e": PodLink(name="tap16477688c0e", mac="fe:00:00:00:00:01", mtu=1400, kind="tun"),
    }
    out = define_domain(DOMAIN.encode(), vmi, PodFacts(links=links))
    devs = ET.fromstring(out).find("devices")
    assert devs is not None
    blue = devs[1]
    assert blue.find("alias").get("name") == "ua-blue"  # type: ignore[union-attr]
    assert blue.find("mac").get("address") == "02:00:00:00:00:0b"  # type: ignore[union-attr]
    assert blue.find("mtu").get("size") == "1400"  # type: ignore[union-attr]
    assert len(devs) == 4  # the sriov member's hostdev stays KubeVirt's, not duplicated


_alias_names = st.lists(st.from_regex(r"ua-[a-z][a-z0-9]{0,6}", fullmatch=True), min_size=0, max_size=6, unique=True)


@settings(max_examples=60, deadline=None)
@given(_alias_names, st.data())
def test_splice_properties(existing: list[str], data: st.DataObject) -> None:
    """Each alias once; untouched devices byte for byte; our devices in; splicing again changes nothing."""
    indent = data.draw(st.sampled_from(["\t", "  ", "    "]))
    comment = data.draw(st.sampled_from(["", "<!-- c -->", '<?pi x="1"?>']))
    devices = "".join(
        f'\n{indent * 2}<interface type="ethernet">{comment}<alias name="{a}"/><target dev="t{i}"/></interface>'
        for i, a in enumerate(existing)
    )
    domain = f"<domain>\n{indent}<name>d</name>\n{indent}<devices>{devices}\n{indent}</devices>\n</domain>"
    ours = data.draw(st.lists(st.from_regex(r"[a-z][a-z0-9]{0,6}", fullmatch=True), max_size=4, unique=True))
    nics = [
        TapNic(name=n[3:] if n.startswith("ua-") else n, target=f"tap{i}", mac="02:00:00:00:00:01")
        for i, n in enumerate(ours)
    ]
    replaced = data.draw(st.lists(st.sampled_from(existing), unique=True)) if existing else []
    nics += [TapNic(name=a[3:], target="tapnew", mac="02:00:00:00:00:02") for a in replaced]
    out = splice(domain, [render_nic(n) for n in nics])
    root = ET.fromstring(out)
    aliases = [e.find("alias").get("name") for e in root.find("devices")]  # type: ignore[union-attr]
    assert len(aliases) == len(set(aliases))
    assert set(aliases) == set(existing) | {n.alias for n in nics}
    mine = {n.alias for n in nics}
    for i, a in enumerate(existing):
        if a not in mine:
            assert f'<alias name="{a}"/><target dev="t{i}"/></interface>' in out
    assert out.startswith(f"<domain>\n{indent}<name>d</name>\n{indent}<devices>")
    assert out.endswith(f"\n{indent}</devices>\n</domain>")
    assert splice(out, [render_nic(n) for n in nics]) == out


# --- one parse: the domain as ElementTree would read it ---------------------------------------

_PIECES = st.sampled_from(
    [
        "<domain>",
        "</domain>",
        "<devices>",
        "</devices>",
        "<devices/>",
        "<name>",
        "</name>",
        "vm1",
        "<hostdev>",
        "</hostdev>",
        "<source>",
        "</source>",
        '<address domain="0x0000" bus="0x81" slot="0x10" function="0x2"/>',
        '<address domain="zz"/>',
        '<alias name="ua-sriov-x"/>',
        "<alias/>",
        '<alias name="ua-blue"/>',
        "<interface>",
        "</interface>",
        "<x/>",
        "\n\t",
        "<!-- c -->",
        "&amp;",
        "&x;",
        '<q:a xmlns:q="u"/>',
        "<q:b/>",
        '<!DOCTYPE domain SYSTEM "d.dtd">',
        "<![CDATA[<]]>",
        '<devices xmlns="urn:x">',
        '<domain xmlns="urn:y">',
    ]
)


def _reference_hostdevs(root: ET.Element) -> dict[str, PciAddress] | str:
    """kubevirt_hostdevs as it was written over ElementTree (the error as text)."""
    devices = root.find("devices")
    if devices is None:
        return f"domain {root.findtext('name', '?')!r} has no <devices>"
    out = {}
    for hostdev in devices.findall("hostdev"):
        alias_elem = hostdev.find("alias")
        alias = alias_elem.get("name") if alias_elem is not None else None
        if alias is None or not alias.startswith("ua-sriov-") or alias == "ua-sriov-":
            continue
        addr = hostdev.find("source/address")
        if addr is None:
            return f"hostdev {alias} in the domain has no source address"
        try:
            out[alias] = PciAddress(*(int(addr.get(k, ""), 16) for k in ("domain", "bus", "slot", "function")))
        except ValueError:
            return f"hostdev {alias} in the domain has a malformed source address {addr.attrib}"
    return out


@given(st.lists(_PIECES, max_size=14))
@settings(max_examples=500, deadline=None)
def test_one_parse_reads_what_elementtree_reads(parts: list[str]) -> None:
    """parse_domain (and check_domain_xml, which reads no further) accepts and refuses what
    ElementTree.fromstring does, with its message, and the KubeVirt hostdevs read from that one
    parse are what ElementTree's tree gives."""
    from kvnet.domain.splice import MalformedDomain, check_domain_xml, parse_domain

    text = "".join(parts)
    try:
        root = ET.fromstring(text)
    except ET.ParseError as err:
        for parse in (parse_domain, check_domain_xml):
            with pytest.raises(MalformedDomain) as exc:
                parse(text)
            assert (exc.value.syntax, exc.value.msg) == (str(err), f"the domain XML does not parse: {err}")
        return
    if root.tag != "domain":
        for parse in (parse_domain, check_domain_xml):
            with pytest.raises(MalformedDomain) as exc:
                parse(text)
            assert (exc.value.syntax, exc.value.root) == (None, root.tag)
        return
    check_domain_xml(text)
    domain = parse_domain(text)
    assert domain.name == root.findtext("name", "?")
    assert parse_domain(domain) is domain  # parsed once
    expected = _reference_hostdevs(root)
    if isinstance(expected, str):
        with pytest.raises(RenderError) as exc:
            kubevirt_hostdevs(domain)
        assert exc.value.msg == expected
    else:
        assert kubevirt_hostdevs(domain) == expected


def test_splice_of_a_parsed_domain_is_the_splice_of_its_text() -> None:
    from kvnet.domain.splice import parse_domain

    domain = parse_domain(DOMAIN)
    assert splice(domain, [render_nic(BLUE), render_nic(RED)]) == splice(DOMAIN, [render_nic(BLUE), render_nic(RED)])
    assert domain.text == DOMAIN
