"""The sidecar's hot-path shortcuts give what the plain code gives.

OnDefineDomain reads each pod link only when the translation looks it up
(``kvnet.sidecar.podfacts.PodLinks``), decides the pod's naming scheme once, and writes the new
devices without ``ET.tostring`` (``kvnet.domain.splice``). Each is checked here against
the straightforward version, and the errors stay what they were.
"""

from __future__ import annotations

import copy
import json
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import grpc
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pod_inputs import KUBEVIRT_DOMAIN, PodFiles, add_bridge_binding, make_vmi, network_info, write_link

from kvnet.core import bindrecord, naming
from kvnet.core.errors import DecodeFailure, TranslationError
from kvnet.core.model import BindingRecord
from kvnet.core.naming import hashed_pod_iface
from kvnet.domain import splice
from kvnet.domain.networkinfo import parse_network_info
from kvnet.domain.translate import uses_ordinal_names
from kvnet.sidecar.hooks import KvnetHooks, PodFactsReader, PodFactsUnavailable
from kvnet.sidecar.podfacts import PodLinks, pod_links, read_pod_links
from kvnet.sidecar.server import status_for
from kvnet.sidecar.wiring import PipelineTranslator

BAD_RECORD = '{"kvnet":1,"mac":"zz"}'


def _pod(tmp_path: Path, networks: tuple[str, ...] = ("red", "blue")) -> PodFiles:
    pod = PodFiles(tmp_path / "pod")
    pod.sys_class_net.mkdir(parents=True)
    pod.network_info.parent.mkdir(parents=True)
    write_link(pod.sys_class_net, "eth0", mac="0a:58:0a:f4:00:0c")
    for i, net in enumerate(networks):
        add_bridge_binding(pod.sys_class_net, net, original_mac=f"02:00:00:00:00:{i + 10:02x}")
    pod.network_info.write_text(network_info({net: {} for net in networks}))
    return pod


def _hooks(pod: PodFiles) -> KvnetHooks:
    reader = PodFactsReader(
        str(pod.network_info),
        str(pod.sys_class_net),
        read_links=pod_links,
        parse_network_info=parse_network_info,
        timeout=1.0,
    )
    return KvnetHooks("kvnet", reader, PipelineTranslator())


# --- lazy pod links ---------------------------------------------------------------------


def test_lazy_links_equal_the_eager_read(tmp_path: Path) -> None:
    pod = _pod(tmp_path)
    write_link(pod.sys_class_net, "lo", mac="00:00:00:00:00:00")
    (pod.sys_class_net / "lo" / "type").write_text("772\n")
    (pod.sys_class_net / "gone").mkdir()  # a link deleted mid-read: its folder has no files
    lazy = pod_links(str(pod.sys_class_net))
    eager = read_pod_links(str(pod.sys_class_net))
    assert "lo" not in eager and "gone" not in eager
    assert "lo" not in lazy and "gone" not in lazy and "nothing" not in lazy
    assert lazy == eager and list(lazy) == list(eager) and len(lazy) == len(eager)
    assert set(lazy.listed()) == set(eager) | {"lo", "gone"}


def test_lazy_links_read_only_what_is_looked_up(tmp_path: Path) -> None:
    pod = _pod(tmp_path)
    write_link(pod.sys_class_net, "pod0000000000a", mac="02:00:00:00:00:99", ifalias=BAD_RECORD)
    links = pod_links(str(pod.sys_class_net))
    assert links["eth0"].mac == "0a:58:0a:f4:00:0c"  # the malformed record elsewhere is not read
    with pytest.raises(DecodeFailure, match="link pod0000000000a in the pod netns: malformed kvnet binding record"):
        links["pod0000000000a"]
    with pytest.raises(DecodeFailure):
        dict(links)  # reading them all reads it too, as read_pod_links does
    with pytest.raises(DecodeFailure):
        read_pod_links(str(pod.sys_class_net))


def test_lazy_links_of_a_missing_folder(tmp_path: Path) -> None:
    links = pod_links(str(tmp_path / "nothing"))
    assert isinstance(links, PodLinks) and links == {} and not links.listed()


def test_each_call_reads_the_pod_afresh(tmp_path: Path) -> None:
    """Nothing is kept between calls: a changed pod gives a changed domain."""
    pod = _pod(tmp_path, ("red",))
    hooks = _hooks(pod)
    vmi = json.dumps(make_vmi({"red": "kvnet"})).encode()
    first = hooks.on_define_domain(KUBEVIRT_DOMAIN.encode(), vmi)
    record = bindrecord.encode(BindingRecord(original_mac="02:00:00:00:00:0a", mtu=9000))
    (pod.sys_class_net / hashed_pod_iface("red") / "ifalias").write_text(
        record + "\n"
    )  # the binding re-run with jumbo frames
    second = hooks.on_define_domain(KUBEVIRT_DOMAIN.encode(), vmi)
    assert b'<mtu size="1500" />' in first and b'<mtu size="9000" />' in second


@pytest.mark.parametrize("ordinal", [False, True])
def test_ordinal_check_reads_no_link(tmp_path: Path, ordinal: bool) -> None:
    root = tmp_path / "scn"
    root.mkdir()
    for name in ("eth0", "pod16477688c0e", "tap16477688c0e", "k6t-16477688c0e"):
        write_link(root, name, mac="02:00:00:00:00:01", ifalias=BAD_RECORD)  # any read would raise
    if ordinal:
        write_link(root, "net1", mac="02:00:00:00:00:02")
    links = pod_links(str(root))
    assert uses_ordinal_names(links) is ordinal
    assert uses_ordinal_names(dict.fromkeys(links.listed())) is ordinal  # a plain mapping: every key


def test_ordinal_check_ignores_a_net_folder_that_is_not_a_link(tmp_path: Path) -> None:
    root = tmp_path / "scn"
    root.mkdir()
    write_link(root, "eth0", mac="02:00:00:00:00:01")
    (root / "net1").mkdir()  # vanished while listed
    assert uses_ordinal_names(pod_links(str(root))) is naming.uses_ordinal_names(read_pod_links(str(root))) is False


def test_malformed_record_of_an_attachment_is_still_failed_precondition(tmp_path: Path) -> None:
    pod = _pod(tmp_path, ("red",))
    pod_link = hashed_pod_iface("red")
    (pod.sys_class_net / pod_link / "ifalias").write_text(BAD_RECORD + "\n")
    with pytest.raises(PodFactsUnavailable) as exc:
        _hooks(pod).on_define_domain(KUBEVIRT_DOMAIN.encode(), json.dumps(make_vmi({"red": "kvnet"})).encode())
    assert exc.value.msg.startswith(
        f"interfaces red: cannot read the pod links in {pod.sys_class_net}: link {pod_link} in the pod netns: "
        "malformed kvnet binding record"
    )
    assert status_for(exc.value) is grpc.StatusCode.FAILED_PRECONDITION


def test_malformed_record_on_a_link_no_attachment_uses_is_not_read(tmp_path: Path) -> None:
    pod = _pod(tmp_path, ("red",))
    write_link(pod.sys_class_net, "podfffffffffff", mac="02:00:00:00:00:77", ifalias=BAD_RECORD)
    out = _hooks(pod).on_define_domain(KUBEVIRT_DOMAIN.encode(), json.dumps(make_vmi({"red": "kvnet"})).encode())
    assert out.count(b'<alias name="ua-red" />') == 1


def test_model_given_as_a_list_is_a_translation_error(tmp_path: Path) -> None:
    pod = _pod(tmp_path, ("red",))
    vmi = make_vmi({"red": "kvnet"})
    vmi["spec"]["domain"]["devices"]["interfaces"][1]["model"] = ["virtio"]
    with pytest.raises(TranslationError) as exc:
        _hooks(pod).on_define_domain(KUBEVIRT_DOMAIN.encode(), json.dumps(vmi).encode())
    assert exc.value.msg.startswith("interface 'red': model ['virtio'] is not a NIC model libvirt knows (")
    assert status_for(exc.value) is grpc.StatusCode.INVALID_ARGUMENT


# --- writing the devices without ET.tostring -----------------------------------------------


def _reference(elem: ET.Element, unit: str, indent: str) -> bytes:
    """What the splice wrote before: ElementTree's indent and serialisation, on a copy."""
    c = copy.deepcopy(elem)
    ET.indent(c, space=unit)
    return ET.tostring(c, encoding="unicode").replace("\n", "\n" + indent).encode()


_xml_text = st.text(
    st.characters(codec="utf-8", exclude_categories=("Cs", "Cc")) | st.sampled_from("\t\n\r &<>\"'"), max_size=12
)
_names = st.sampled_from(["interface", "target", "model", "mac", "address", "source", "alias", "x-y", "a.b"])


@st.composite
def _elements(draw: Any, depth: int = 0) -> ET.Element:
    elem = ET.Element(draw(_names), {k: draw(_xml_text) for k in draw(st.lists(_names, max_size=3, unique=True))})
    elem.text = draw(st.none() | st.sampled_from(["", "  ", "\n\t"]) | _xml_text)
    elem.tail = draw(st.none() | st.sampled_from(["", " ", "\n  "]) | _xml_text)
    if depth < 3:
        elem.extend(draw(st.lists(_elements(depth + 1), max_size=3)))
    return elem


@given(_elements(), st.sampled_from(["\t", "  ", ""]), st.sampled_from(["\t\t", "    ", ""]))
@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_device_text_is_what_elementtree_writes(elem: ET.Element, unit: str, indent: str) -> None:
    before = ET.tostring(elem)
    assert splice._device_text(elem, unit, indent) == _reference(elem, unit, indent)
    assert ET.tostring(elem) == before  # the caller's element is untouched


def test_device_text_leaves_namespaces_and_comments_to_elementtree() -> None:
    elem = ET.fromstring('<interface xmlns:q="urn:q"><q:x q:a="1"/></interface>')
    elem.append(ET.Comment(" note "))
    assert splice._device_text(elem, "\t", "\t\t") == _reference(elem, "\t", "\t\t")
