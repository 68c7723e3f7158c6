"""Build hook: generate the gRPC stubs of the contract package (tellm.contract.v1) from proto/tellm/v1/*.proto.

Everything else about the package lives in pyproject.toml. The .proto files keep their wire
identity (``package tellm.v1``: service and message names on the wire); protoc sees them under the
virtual path ``tellm/contract/v1/`` so that the generated modules import each other as
``tellm.contract.v1``, and they are written into ``contract/v1/`` (the folder that installs as
``tellm.contract``). The stubs are generated into the source tree before build_py collects modules,
which covers both kinds of install:
- ``pip install .`` (wheel): build_py then copies the fresh stubs into the wheel;
- ``pip install -e .`` (PEP 660 editable): setuptools' editable_wheel runs this build_py too, and
  the editable install imports tellm.contract.v1 straight from the source tree, where the stubs now are.
Generated files are git-ignored and never committed; rerun ``pip install -e .`` after editing a
.proto file.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

ROOT = Path(__file__).resolve().parent
PROTO_DIR = ROOT / "proto" / "tellm" / "v1"
VIRTUAL_DIR = "tellm/contract/v1"  # the import path of the generated modules, as protoc sees it
OUT_DIR = ROOT / "contract" / "v1"
GENERATED = ("*_pb2.py", "*_pb2.pyi", "*_pb2_grpc.py")


def generate_protos() -> list[Path]:
    from importlib import resources

    from grpc_tools import protoc

    protos = sorted(PROTO_DIR.glob("*.proto"))
    if not protos:
        raise RuntimeError(f"no .proto files under {PROTO_DIR}")
    well_known = str(resources.files("grpc_tools") / "_proto")
    with tempfile.TemporaryDirectory() as tmp:
        args = ["grpc_tools.protoc", f"-I{VIRTUAL_DIR}={PROTO_DIR}", f"-I{well_known}", f"--python_out={tmp}",
                f"--pyi_out={tmp}", f"--grpc_python_out={tmp}"]
        args += [f"{VIRTUAL_DIR}/{p.name}" for p in protos]
        if protoc.main(args) != 0:
            raise RuntimeError("grpc_tools.protoc failed on " + ", ".join(str(p) for p in protos))
        for pattern in GENERATED:
            for stale in OUT_DIR.glob(pattern):
                stale.unlink()
            for fresh in (Path(tmp) / VIRTUAL_DIR).glob(pattern):
                shutil.copyfile(fresh, OUT_DIR / fresh.name)
    return protos


class BuildPyWithProtos(build_py):
    def run(self) -> None:
        generate_protos()
        super().run()


setup(cmdclass={"build_py": BuildPyWithProtos})
