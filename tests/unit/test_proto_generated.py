"""kvnet/podresources.proto is the source of truth for the committed generated modules."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
GENERATED = ("kvnet/podresources_pb2.py", "kvnet/podresources_pb2_grpc.py", "kvnet/podresources_pb2.pyi")

# Lines that only record which protoc / grpcio-tools release generated the file.
_VERSION_LINES = re.compile(
    r"^(# Protobuf Python Version: .*|GRPC_GENERATED_VERSION = .*|    _runtime_version\.Domain\.PUBLIC,\n(    \d+,\n){3})",
    re.M,
)


def _mask_versions(text: str) -> str:
    return _VERSION_LINES.sub("<version>", text)


@pytest.fixture(scope="module")
def regenerated(tmp_path_factory: pytest.TempPathFactory) -> Path:
    pytest.importorskip("grpc_tools", reason="grpcio-tools is needed to regenerate the protobuf modules")
    out = tmp_path_factory.mktemp("protoc")
    subprocess.run(
        [sys.executable, "-m", "grpc_tools.protoc", "-I", str(REPO), f"--python_out={out}",
         f"--grpc_python_out={out}", f"--pyi_out={out}", str(REPO / "kvnet/podresources.proto")],
        check=True, capture_output=True, text=True,
    )
    return out


@pytest.mark.parametrize("name", GENERATED)
def test_generated_matches_proto(regenerated: Path, name: str) -> None:
    fresh = (regenerated / name).read_text()
    committed = (REPO / name).read_text()
    assert _mask_versions(fresh) == _mask_versions(committed), (
        f"{name} is out of date with kvnet/podresources.proto; regenerate it from the repository root with: "
        "python -m grpc_tools.protoc -I . --python_out=. --grpc_python_out=. --pyi_out=. kvnet/podresources.proto"
    )


def test_masking_only_hides_versions(regenerated: Path) -> None:
    """The masks must not hide a change to the descriptor itself."""
    text = (regenerated / GENERATED[0]).read_text()
    assert "AddSerializedFile(" in _mask_versions(text)
    assert _mask_versions(text).count("<version>") == 2
    assert _mask_versions(text.replace("pod_resources", "pod_resourcez")) != _mask_versions(text)


def test_wire_facts() -> None:
    """Package, service, methods and field numbers as the kubelet's v1 API has them."""
    from kvnet import podresources_pb2 as pb

    fd = pb.DESCRIPTOR
    assert (fd.package, fd.name) == ("v1", "kvnet/podresources.proto")
    service = fd.services_by_name["PodResourcesLister"]
    assert [(m.name, m.input_type.name, m.output_type.name) for m in service.methods] == [
        ("List", "ListPodResourcesRequest", "ListPodResourcesResponse"),
        ("GetAllocatableResources", "AllocatableResourcesRequest", "AllocatableResourcesResponse"),
        ("Get", "GetPodResourcesRequest", "GetPodResourcesResponse"),
    ]

    def fields(message: str) -> dict[str, int]:
        return {f.name: f.number for f in fd.message_types_by_name[message].fields}

    assert fields("ListPodResourcesResponse") == {"pod_resources": 1}
    assert fields("PodResources") == {"name": 1, "namespace": 2, "containers": 3}
    assert fields("ContainerResources") == {"name": 1, "devices": 2, "cpu_ids": 3, "memory": 4, "dynamic_resources": 5}
    assert fields("ContainerDevices") == {"resource_name": 1, "device_ids": 2, "topology": 3}
    assert fields("GetPodResourcesRequest") == {"pod_name": 1, "pod_namespace": 2}
    assert fields("GetPodResourcesResponse") == {"pod_resources": 1}
    assert fields("AllocatableResourcesResponse") == {"devices": 1, "cpu_ids": 2, "memory": 3}
    assert fields("DynamicResource") == {"claim_name": 2, "claim_namespace": 3, "claim_resources": 4}
    assert fields("NUMANode") == {"ID": 1}


def test_grpc_module_imports_package_relative() -> None:
    text = (REPO / GENERATED[1]).read_text()
    assert "from kvnet import podresources_pb2 as" in text
    assert not re.search(r"^import podresources_pb2", text, re.M)
