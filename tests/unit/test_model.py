import pytest
from hypothesis import given
from hypothesis import strategies as st

from kvnet.core.errors import DeviceError
from kvnet.core.model import HostdevNic, PciAddress, TapNic, is_mac


@pytest.mark.parametrize(
    ("text", "expected"),
    [("0000:81:00.1", PciAddress(0, 0x81, 0, 1)), ("0001:0a:1f.7", PciAddress(1, 0x0A, 0x1F, 7))],
)
def test_pci_parse(text: str, expected: PciAddress) -> None:
    assert PciAddress.parse(text) == expected
    assert str(expected) == text.lower()


@pytest.mark.parametrize(
    "bad", ["", "0000:81:00", "81:00.1", "0000:81:20.1", "0000:81:00.8", "zzzz:81:00.1", "0000:81:00.1 x"]
)
def test_pci_parse_rejects(bad: str) -> None:
    with pytest.raises(DeviceError, match="invalid PCI address"):
        PciAddress.parse(bad)


@given(st.integers(0, 0xFFFF), st.integers(0, 0xFF), st.integers(0, 0x1F), st.integers(0, 7))
def test_pci_round_trip(d: int, b: int, s: int, f: int) -> None:
    addr = PciAddress(d, b, s, f)
    assert PciAddress.parse(str(addr)) == addr


def test_aliases_and_mac() -> None:
    assert TapNic(name="blue", target="tap1", mac="02:00:00:00:00:01").alias == "ua-blue"
    assert HostdevNic(name="vf", source=PciAddress(0, 1, 0, 1)).alias == "ua-sriov-vf"
    assert (
        is_mac("02:00:00:00:00:01")
        and not is_mac("02:00:00:00:00")
        and not is_mac(None)
        and not is_mac("02:00:00:00:00:01\n")
    )
