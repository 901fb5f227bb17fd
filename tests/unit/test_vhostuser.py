"""Parsing of vhost-user device-info and the socket path checks (kvnet.domain.vhostuser)."""

from __future__ import annotations

import unicodedata

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kvnet.core.errors import InvalidConfig
from kvnet.core.model import VhostUserNic
from kvnet.domain.render import render_nic
from kvnet.domain.vhostuser import (
    _FORBIDDEN,
    _FORBIDDEN_CATEGORIES,
    VhostUserSocket,
    check_socket_path,
    from_device_info,
)


def _info(path: object = "/var/lib/cni/usrspcni/abc-net1", mode: object = "server") -> dict[str, object]:
    return {"type": "vhost-user", "version": "1.1.0", "vhost-user": {"mode": mode, "path": path}}


def test_device_info_gives_socket() -> None:
    assert from_device_info(_info()) == VhostUserSocket("/var/lib/cni/usrspcni/abc-net1", "server")
    assert from_device_info(_info(mode="client")) == VhostUserSocket("/var/lib/cni/usrspcni/abc-net1", "client")


def test_other_types_are_not_vhost_user() -> None:
    assert from_device_info({"type": "pci", "pci": {"pci-address": "0000:00:01.0"}}) is None


@pytest.mark.parametrize(
    ("info", "needle"),
    [
        ({"type": "vhost-user"}, "no 'vhost-user' object"),
        (_info(mode="both"), "mode"),
        (_info(mode=None), "mode"),
        (_info(path=None), "non-empty string"),
        (_info(path=""), "non-empty string"),
        (_info(path="sock/net1"), "absolute"),
        (_info(path="/var/lib/../etc/net1"), "'..'"),
        (_info(path="/var/run/vhu/"), "directory"),
        (_info(path='/var/run/a"b'), "forbidden"),
        (_info(path="/var/run/a'b"), "forbidden"),
        (_info(path="/var/run/a<b>"), "forbidden"),
        (_info(path="/var/run/a&b"), "forbidden"),
        (_info(path="/var/run/a\nb"), "forbidden"),
        (_info(path="/var/run/a\x01b"), "forbidden"),
        (_info(path="/var/run/a\x7fb"), "forbidden"),
        (_info(path="/var/run/a\ufffeb"), "forbidden"),
    ],
)
def test_bad_device_info_is_invalid_config(info: dict[str, object], needle: str) -> None:
    with pytest.raises(InvalidConfig) as err:
        from_device_info(info)
    assert err.value.cni_code == 7
    assert needle in err.value.msg


def test_dots_inside_a_name_are_fine() -> None:
    assert check_socket_path("/var/run/vhu/net1..sock") == "/var/run/vhu/net1..sock"


def test_qemu_mode_is_the_other_end() -> None:
    assert VhostUserSocket("/run/a", "client").qemu_mode == "server"
    assert VhostUserSocket("/run/a", "server").qemu_mode == "client"


SEGMENT = st.text(
    st.characters(blacklist_characters="/" + "".join(_FORBIDDEN), blacklist_categories=("Cs", "Cc", "Cn")), min_size=1
)


@settings(max_examples=300, deadline=None)
@given(st.lists(SEGMENT, min_size=1, max_size=6).filter(lambda parts: ".." not in parts))
def test_paths_of_plain_segments_are_accepted_and_render_verbatim(parts: list[str]) -> None:
    path = "/" + "/".join(parts)
    assert check_socket_path(path) == path
    source = render_nic(VhostUserNic(name="n", socket_path=path, mode="server")).find("source")
    assert source is not None and source.get("path") == path


@settings(max_examples=500, deadline=None)
@given(st.text(max_size=40))
def test_any_text_is_accepted_only_when_it_obeys_every_rule(text: str) -> None:
    try:
        got = check_socket_path(text)
    except InvalidConfig as err:
        assert err.cni_code == 7
        assert (
            not text
            or set(text) & _FORBIDDEN
            or any(unicodedata.category(c) in _FORBIDDEN_CATEGORIES for c in text)
            or not text.startswith("/")
            or ".." in text.split("/")
            or text.endswith("/")
        )
    else:
        assert got == text
        assert text.startswith("/") and not text.endswith("/") and ".." not in text.split("/")
        assert not set(text) & _FORBIDDEN
        source = render_nic(VhostUserNic(name="n", socket_path=text, mode="client")).find("source")
        assert source is not None and source.get("path") == text  # parses back verbatim, nothing added
