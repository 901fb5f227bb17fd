"""kvnet/meta/proto/podresources.proto is the source of truth for the committed generated modules
(made by the one generator, ``python -m kvnet.lab.protogen``)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from kvnet.lab import protogen

API = protogen.APIS["podresources"]
GENERATED = ("podresources_pb2.py", "podresources_pb2_grpc.py", "podresources_pb2.pyi")

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
    assert sorted(p.name for p in protogen.generate(API, out)) == sorted(GENERATED)
    return out


@pytest.mark.parametrize("name", GENERATED)
def test_generated_matches_proto(regenerated: Path, name: str) -> None:
    fresh = (regenerated / name).read_text()
    committed = (API.folder / name).read_text()
    assert _mask_versions(fresh) == _mask_versions(committed), (
        f"{name} is out of date with kvnet/meta/proto/podresources.proto; regenerate it with: python -m kvnet.lab.protogen"
    )


def test_masking_only_hides_versions(regenerated: Path) -> None:
    """The masks must not hide a change to the descriptor itself."""
    text = (regenerated / GENERATED[0]).read_text()
    assert "AddSerializedFile(" in _mask_versions(text)
    assert _mask_versions(text).count("<version>") == 2
    assert _mask_versions(text.replace("pod_resources", "pod_resourcez")) != _mask_versions(text)


def test_wire_facts() -> None:
    """Package, service, methods and field numbers as the kubelet's v1 API has them."""
    from kvnet.meta.proto import podresources_pb2 as pb

    fd = pb.DESCRIPTOR
    assert (fd.package, fd.name) == ("v1", "kvnet/meta/proto/podresources.proto")
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
    text = (API.folder / GENERATED[1]).read_text()
    assert "from kvnet.meta.proto import podresources_pb2 as" in text
    assert not re.search(r"^import podresources_pb2", text, re.M)
