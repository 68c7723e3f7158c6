#!/usr/bin/env bash
# Run ON THE GPU DEVICE MACHINE from the repository root, after the ORT-GPU pieces were copied to
# /tmp/ortw (../shared/tools/ort-gpu-to-device.md) and the two payloads of
# benchmarks/prepare_inference_gpu.sh were carried. Extra arguments go to bench_inference.py
# (e.g. --model inference/models/tellm-te.onnx; default: the carried reference model).
set -euo pipefail
W=.carry/inference-gpu-wheels
D=.carry/inference-gpu-data
if [[ ! -d /tmp/ortsite/onnxruntime ]]; then
  cat /tmp/ortw/piece* > /tmp/onnxruntime_gpu-1.31.1-cp312-cp312-manylinux_2_28_x86_64.whl
  python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/ortsite /tmp/onnxruntime_gpu-*.whl
fi
if [[ ! -d /tmp/tellmsite/tellm ]]; then
  # All the carried wheels, numpy included (first on PYTHONPATH; the benchmark never imports torch).
  python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/tellmsite "$W"/*.whl
fi
export PYTHONPATH=/tmp/ortsite:/tmp/tellmsite:${PYTHONPATH:-}
export TELLM_DATA_DIR="$PWD/$D/data" TELLM_CACHE_DIR="$PWD/$D/cache"
python3 -c "import onnxruntime as o; o.preload_dlls(); print('onnxruntime', o.__version__, o.get_available_providers())"
mkdir -p "${OUT:-/tmp/out}"
python3 benchmarks/bench_inference.py --provider cuda --model "$D/reference.onnx" \
  --out "${OUT:-/tmp/out}/inference_gpu.json" "$@"
