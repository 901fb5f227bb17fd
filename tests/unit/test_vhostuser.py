"""Parsing of vhost-user device-info and the socket path checks (kvnet.domain.vhostuser)."""

from __future__ import annotations

import pytest

from kvnet.core.errors import InvalidConfig
from kvnet.domain.vhostuser import VhostUserSocket, check_socket_path, from_device_info


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
    ],
)
def test_bad_device_info_is_invalid_config(info: dict[str, object], needle: str) -> None:
    with pytest.raises(InvalidConfig) as err:
        from_device_info(info)
    assert err.value.cni_code == 7
    assert needle in err.value.msg


def test_dots_inside_a_name_are_fine() -> None:
    assert check_socket_path("/var/run/vhu/net1..sock") == "/var/run/vhu/net1..sock"
