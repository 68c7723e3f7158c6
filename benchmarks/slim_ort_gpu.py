#!/usr/bin/env python3
"""Shrink an onnxruntime-gpu wheel to what one Hopper GPU needs, so it travels in two device calls.

The wheel (255 MB) is mostly ``libonnxruntime_providers_cuda.so`` whose fat binary holds each kernel
for sm_75 ... sm_120. This keeps the sm_90 (H100/H200) entries and zero-fills the others' payloads
(offsets unchanged, so the driver still parses the fat binary and only loads sm_90 code), drops the
TensorRT provider, the C API library the Python module does not load and the offline tools, and
writes the site directory as a zstd tar cut into pieces of at most ``--piece-mb`` MiB (62 MB in all
for onnxruntime-gpu 1.31.1). On the device: ``cat piece* | zstd -d | tar -x -C /tmp/ortsite`` (the
image has no zstd: carry /usr/bin/zstd along), then ``PYTHONPATH=/tmp/ortsite``.

    python benchmarks/slim_ort_gpu.py onnxruntime_gpu-1.31.1-cp312-cp312-manylinux_2_28_x86_64.whl .carry/ort
"""

from __future__ import annotations

import argparse
import struct
import subprocess
import tempfile
import zipfile
from pathlib import Path

FATBIN_MAGIC = struct.pack("<I", 0xBA55ED50)
DROP = ("onnxruntime/capi/libonnxruntime_providers_tensorrt.so", "onnxruntime/capi/libonnxruntime.so.",
        "onnxruntime/transformers/", "onnxruntime/quantization/", "onnxruntime/tools/")


def keep_arch(lib: bytearray, arch: int) -> tuple[int, int]:
    """Zero every fat-binary entry not built for ``arch``; (bytes kept, bytes zeroed)."""
    pos = kept = zeroed = 0
    while (i := lib.find(FATBIN_MAGIC, pos)) >= 0:
        header = struct.unpack_from("<H", lib, i + 6)[0]
        size = struct.unpack_from("<Q", lib, i + 8)[0]
        p, end = i + header, i + header + size
        while p < end:
            entry_header = struct.unpack_from("<I", lib, p + 4)[0]
            payload = struct.unpack_from("<Q", lib, p + 8)[0]
            if struct.unpack_from("<I", lib, p + 28)[0] == arch:
                kept += payload
            else:
                lib[p + entry_header:p + entry_header + payload] = bytes(payload)
                zeroed += payload
            p += entry_header + payload
        pos = max(end, i + 4)
    return kept, zeroed


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("wheel", type=Path)
    p.add_argument("out_dir", type=Path)
    p.add_argument("--arch", type=int, default=90)
    p.add_argument("--piece-mb", type=int, default=50)
    a = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        site = Path(tmp) / "site"
        with zipfile.ZipFile(a.wheel) as z:
            for info in z.infolist():
                if not info.filename.startswith(DROP) and not info.is_dir():
                    z.extract(info, site)
        lib_path = site / "onnxruntime/capi/libonnxruntime_providers_cuda.so"
        lib = bytearray(lib_path.read_bytes())
        kept, zeroed = keep_arch(lib, a.arch)
        lib_path.write_bytes(lib)
        print(f"sm_{a.arch}: kept {kept / 1e6:.1f} MB of kernels, zeroed {zeroed / 1e6:.1f} MB")
        archive = Path(tmp) / "ort.tar.zst"
        subprocess.run(f"tar -c -C {site} . | zstd -T0 -19 -q -o {archive}", shell=True, check=True)
        a.out_dir.mkdir(parents=True, exist_ok=True)
        data, step = archive.read_bytes(), a.piece_mb << 20
        for k in range(0, len(data), step):
            (a.out_dir / f"ortpart{k // step:02d}").write_bytes(data[k:k + step])
        print(f"{len(data) / 1e6:.1f} MB in {-(-len(data) // step)} pieces under {a.out_dir}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
