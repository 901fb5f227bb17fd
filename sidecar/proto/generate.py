"""Regenerate the ``*_pb2.py`` / ``*_pb2_grpc.py`` modules from the ``.proto`` files here.

Run ``python -m kvnet.sidecar.proto.generate`` (needs ``grpcio-tools``, a test extra).
The protos are compiled from a temporary tree laid out as ``kvnet/sidecar/proto/`` so the
generated imports read ``from kvnet.sidecar.proto import ...`` and work from the wheel.
"""

from __future__ import annotations

import shutil
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
PROTOS = ("info.proto", "v1alpha1.proto", "v1alpha2.proto", "v1alpha3.proto")
PACKAGE_PATH = Path("kvnet", "sidecar", "proto")


def generate(out_dir: Path) -> list[Path]:
    """Compile every proto into ``out_dir``; return the generated module paths."""
    from grpc_tools import protoc  # test extra: only needed to regenerate

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        src = root / PACKAGE_PATH
        src.mkdir(parents=True)
        for name in PROTOS:
            shutil.copy(HERE / name, src / name)
        args = ["protoc", f"-I{root}", f"--python_out={root}", f"--grpc_python_out={root}"]
        args += [str(PACKAGE_PATH / name) for name in PROTOS]
        if protoc.main(args) != 0:
            raise RuntimeError(f"protoc failed on {', '.join(PROTOS)}")
        out_dir.mkdir(parents=True, exist_ok=True)
        made = []
        for path in sorted(src.glob("*_pb2*.py")):
            target = out_dir / path.name
            shutil.copy(path, target)
            made.append(target)
        return made


def main() -> int:
    for path in generate(HERE):
        print(path.name, file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
