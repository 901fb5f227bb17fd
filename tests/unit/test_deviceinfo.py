"""Device-info files: nadutils' path rules, dp → cni copy, load, remove, bad files."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kvnet.binding.sriov import VfInfo
from kvnet.core.errors import DecodeFailure, InvalidConfig, IOFailure
from kvnet.core.model import DeviceInfo, PciAddress
from kvnet.meta.deviceinfo import (
    DEVINFO_ROOT,
    cni_path,
    copy_dp_to_cni,
    device_info_json,
    dp_path,
    load_cni,
    load_dp,
    parse_device_info,
    pcidevice_env_name,
    remove_cni,
    save_dp,
    vf_device_info,
)

RES = "intel.com/intel_sriov_netdevice"
VF = "0000:81:00.2"
SRIOV_DP_FILE = {
    "type": "pci",
    "version": "1.1.0",
    "pci": {"pci-address": VF, "pf-pci-address": "0000:81:00.0", "rdma-device": "", "representor-device": ""},
}


# --- names ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("resource", "device_id", "expected"),
    [
        (RES, VF, f"{DEVINFO_ROOT}/dp/intel.com-intel_sriov_netdevice-0000:81:00.2-device.json"),
        ("openshift.io/mlx", "0000:3b:00.4", f"{DEVINFO_ROOT}/dp/openshift.io-mlx-0000:3b:00.4-device.json"),
        ("a/b/c", "x/y", f"{DEVINFO_ROOT}/dp/a-b-c-x-y-device.json"),
        ("plain", "id", f"{DEVINFO_ROOT}/dp/plain-id-device.json"),
    ],
)
def test_dp_path(resource: str, device_id: str, expected: str) -> None:
    assert dp_path(resource, device_id) == expected


@pytest.mark.parametrize(
    ("network", "container", "ifname", "expected"),
    [
        ("sriov-net", "abc123", "net1", f"{DEVINFO_ROOT}/cni/sriov-net-abc123_net1"),
        ("ns1/sriov-net", "abc123", "pod16477688c0e", f"{DEVINFO_ROOT}/cni/ns1-sriov-net-abc123_pod16477688c0e"),
        ("a/b", "c/d", "e/f", f"{DEVINFO_ROOT}/cni/a-b-c-d_e-f"),
    ],
)
def test_cni_path(network: str, container: str, ifname: str, expected: str) -> None:
    assert cni_path(network, container, ifname) == expected


def test_paths_under_another_root(tmp_path: Path) -> None:
    assert dp_path(RES, VF, str(tmp_path)) == str(tmp_path / "dp" / f"intel.com-intel_sriov_netdevice-{VF}-device.json")
    assert cni_path("n", "c", "i", str(tmp_path)) == str(tmp_path / "cni" / "n-c_i")


@given(st.text(min_size=1), st.text(min_size=1), st.text(min_size=1))
def test_cni_file_name_never_leaves_its_folder(network: str, container: str, ifname: str) -> None:
    path = cni_path(network.replace("\x00", ""), container.replace("\x00", ""), ifname.replace("\x00", ""), "/r")
    assert os.path.dirname(path) == "/r/cni"


@pytest.mark.parametrize(
    ("resource", "env"),
    [
        (RES, "PCIDEVICE_INTEL_COM_INTEL_SRIOV_NETDEVICE"),
        ("openshift.io/mlx5-vf", "PCIDEVICE_OPENSHIFT_IO_MLX5-VF"),
        ("example.com/a.b/c", "PCIDEVICE_EXAMPLE_COM_A_B_C"),
    ],
)
def test_pcidevice_env_name(resource: str, env: str) -> None:
    assert pcidevice_env_name(resource) == env


# --- parsing ------------------------------------------------------------------------------


def test_parse_keeps_every_field() -> None:
    info = parse_device_info(json.dumps(SRIOV_DP_FILE).encode())
    assert (info.type, info.version, info.pci_address) == ("pci", "1.1.0", VF)
    assert info.raw == SRIOV_DP_FILE


def test_parse_other_types_and_versions() -> None:
    vhost = {"type": "vhost-user", "version": "1.0.0", "vhost-user": {"mode": "client", "path": "/s"}}
    assert parse_device_info(vhost).raw["vhost-user"] == {"mode": "client", "path": "/s"}
    assert parse_device_info({"type": "pci", "version": "1.0.0", "pci": {"pci-address": VF}}).pci_address == VF
    assert parse_device_info({"type": "pci", "version": "1.1.0", "pci": {"pci-address": VF, "pf-pci-address": ""}})


BAD: list[tuple[object, type[Exception], str]] = [
    (b"{not json", DecodeFailure, r"device-info f: not valid JSON"),
    (b"\xff\xfe", DecodeFailure, r"device-info f: not valid JSON"),
    (b"[]", DecodeFailure, r"device-info f: expected a JSON object, got list"),
    (b'"pci"', DecodeFailure, r"expected a JSON object, got str"),
    ({"version": "1.1.0"}, InvalidConfig, r"type None is not one of pci, vdpa, vhost-user, memif"),
    ({"type": "usb", "version": "1.1.0"}, InvalidConfig, r"type 'usb' is not one of"),
    ({"type": "pci"}, InvalidConfig, r"version None is not a 1\.x\.y spec version"),
    ({"type": "pci", "version": "2.0.0", "pci": {"pci-address": VF}}, InvalidConfig, r"version '2\.0\.0'"),
    ({"type": "pci", "version": 1.1}, InvalidConfig, r"version 1\.1 is not"),
    ({"type": "pci", "version": "1.1.0"}, InvalidConfig, r"type is 'pci' but 'pci' is not an object"),
    ({"type": "pci", "version": "1.1.0", "pci": {}}, InvalidConfig, r"pci\.pci-address is missing"),
    (
        {"type": "pci", "version": "1.1.0", "pci": {"pci-address": "81:00.2"}},
        InvalidConfig,
        r"device-info f: pci\.pci-address: invalid PCI address '81:00\.2'",
    ),
    ({"type": "pci", "version": "1.1.0", "pci": {"pci-address": ""}}, InvalidConfig, r"pci\.pci-address: invalid"),
    (
        {"type": "pci", "version": "1.1.0", "pci": {"pci-address": None}},
        InvalidConfig,
        r"pci\.pci-address must be a string, got None",
    ),
    (
        {"type": "pci", "version": "1.1.0", "pci": {"pci-address": VF, "pf-pci-address": "x"}},
        InvalidConfig,
        r"pci\.pf-pci-address: invalid PCI address 'x'",
    ),
]


@pytest.mark.parametrize(("data", "error", "message"), BAD, ids=[str(i) for i in range(len(BAD))])
def test_parse_rejects(data: bytes, error: type[Exception], message: str) -> None:
    with pytest.raises(error, match=message):
        parse_device_info(data, source="f")  # type: ignore[arg-type]


def test_decode_and_config_codes() -> None:
    with pytest.raises(DecodeFailure) as d:
        parse_device_info(b"x")
    with pytest.raises(InvalidConfig) as c:
        parse_device_info({"type": "x", "version": "1.0.0"})
    assert (d.value.cni_code, c.value.cni_code) == (6, 7)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=10,
)


@given(
    extra=st.dictionaries(
        st.text(max_size=10).filter(lambda k: k not in ("type", "version", "pci")), json_values, max_size=4
    )
)
def test_round_trip_keeps_unknown_fields(extra: dict[str, object]) -> None:
    obj = {**SRIOV_DP_FILE, **extra}
    info = parse_device_info(obj)
    again = parse_device_info(device_info_json(info))
    assert again == info and again.raw == obj


@given(st.binary(max_size=64))
def test_parse_never_raises_anything_else(data: bytes) -> None:
    try:
        parse_device_info(data)
    except (DecodeFailure, InvalidConfig):
        pass


# --- files ------------------------------------------------------------------------------


def write_dp(root: Path, resource: str = RES, device_id: str = VF, content: object = SRIOV_DP_FILE) -> Path:
    path = Path(dp_path(resource, device_id, str(root)))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content if isinstance(content, bytes) else json.dumps(content).encode())
    return path


def test_load_dp(tmp_path: Path) -> None:
    write_dp(tmp_path)
    info = load_dp(RES, VF, str(tmp_path))
    assert info is not None and info.pci_address == VF and info.raw == SRIOV_DP_FILE


def test_absent_files_are_none(tmp_path: Path) -> None:
    assert load_dp(RES, VF, str(tmp_path)) is None
    assert load_cni("n", "c", "i", str(tmp_path)) is None
    assert copy_dp_to_cni(RES, VF, "n", "c", "i", str(tmp_path)) is None
    assert not (tmp_path / "cni").exists()


def test_copy_dp_to_cni(tmp_path: Path) -> None:
    write_dp(tmp_path)
    copied = copy_dp_to_cni(RES, VF, "ns1/sriov-a", "cid42", "pod16477688c0e", str(tmp_path))
    path = tmp_path / "cni" / "ns1-sriov-a-cid42_pod16477688c0e"
    assert json.loads(path.read_bytes()) == SRIOV_DP_FILE
    assert stat.S_IMODE(path.stat().st_mode) == 0o444
    assert copied == load_cni("ns1/sriov-a", "cid42", "pod16477688c0e", str(tmp_path))
    assert [p.name for p in (tmp_path / "cni").iterdir()] == [path.name]  # no temp files left


def test_copy_twice_replaces(tmp_path: Path) -> None:
    write_dp(tmp_path)
    copy_dp_to_cni(RES, VF, "n", "c", "i", str(tmp_path))
    write_dp(tmp_path, content={**SRIOV_DP_FILE, "version": "1.0.0"})
    again = copy_dp_to_cni(RES, VF, "n", "c", "i", str(tmp_path))
    assert again is not None and again.version == "1.0.0"
    loaded = load_cni("n", "c", "i", str(tmp_path))
    assert loaded is not None and loaded.version == "1.0.0"


def test_save_dp_then_load(tmp_path: Path) -> None:
    info = DeviceInfo("pci", "1.1.0", {"type": "pci", "version": "1.1.0", "pci": {"pci-address": VF}})
    path = save_dp(RES, VF, info, str(tmp_path))
    assert path == dp_path(RES, VF, str(tmp_path))
    assert load_dp(RES, VF, str(tmp_path)) == info


def test_remove_cni_twice(tmp_path: Path) -> None:
    write_dp(tmp_path)
    copy_dp_to_cni(RES, VF, "n", "c", "i", str(tmp_path))
    remove_cni("n", "c", "i", str(tmp_path))
    assert load_cni("n", "c", "i", str(tmp_path)) is None
    remove_cni("n", "c", "i", str(tmp_path))  # already gone: still fine
    remove_cni("other", "c", "i", str(tmp_path / "never-made"))
    assert Path(dp_path(RES, VF, str(tmp_path))).exists()  # the device plugin's file stays


def test_malformed_files(tmp_path: Path) -> None:
    path = write_dp(tmp_path, content=b"{")
    with pytest.raises(DecodeFailure, match=f"device-info {path}: not valid JSON"):
        load_dp(RES, VF, str(tmp_path))
    with pytest.raises(DecodeFailure):
        copy_dp_to_cni(RES, VF, "n", "c", "i", str(tmp_path))
    assert not Path(cni_path("n", "c", "i", str(tmp_path))).exists()
    write_dp(tmp_path, content={"type": "pci", "version": "1.1.0", "pci": {"pci-address": "nope"}})
    with pytest.raises(InvalidConfig, match=r"pci\.pci-address: invalid PCI address 'nope'"):
        load_dp(RES, VF, str(tmp_path))


def test_unreadable_and_unwritable(tmp_path: Path) -> None:
    Path(dp_path(RES, VF, str(tmp_path))).mkdir(parents=True)  # a folder where the file should be
    with pytest.raises(IOFailure, match="cannot read"):
        load_dp(RES, VF, str(tmp_path))
    write_dp(tmp_path, device_id="0000:81:00.3")
    (tmp_path / "cni").write_text("")  # a file where the folder should be
    with pytest.raises(IOFailure, match="cannot write"):
        copy_dp_to_cni(RES, "0000:81:00.3", "n", "c", "i", str(tmp_path))
    Path(cni_path("n", "c", "j", str(tmp_path / "x"))).mkdir(parents=True)
    with pytest.raises(IOFailure, match="cannot remove"):
        remove_cni("n", "c", "j", str(tmp_path / "x"))


def test_vf_device_info() -> None:
    vf = VfInfo(PciAddress(0, 0x81, 0, 2), PciAddress(0, 0x81, 0, 0), 0, "vfio-pci", 60)
    info = vf_device_info(vf)
    assert json.loads(device_info_json(info)) == {
        "type": "pci",
        "version": "1.1.0",
        "pci": {"pci-address": VF, "pf-pci-address": "0000:81:00.0"},
    }
    orphan = VfInfo(PciAddress(0, 0x81, 0, 2), None, None, None, None)
    assert vf_device_info(orphan, version="1.0.0").raw == {
        "type": "pci",
        "version": "1.0.0",
        "pci": {"pci-address": VF},
    }
