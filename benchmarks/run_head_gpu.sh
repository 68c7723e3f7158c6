#!/usr/bin/env bash
# Run ON THE GPU DEVICE MACHINE from the root of a copy of this repository (see benchmarks/README.md,
# "TE head: old vs new graph on one GPU"). Earlier calls in the same machine session copied the payload
# pieces (onnxruntime-gpu, gRPC/highspy wheels, topology files, the previous model as v2/) to /tmp/pl;
# PREV_MODEL names the previous model file inside that payload. Writes JSON and logs into $OUT:
#   1. bench_model_ort.py  model-only ORT CUDA time, previous and current model, same topologies/paths
#   2. bench_inference.py  served (gRPC) latency and throughput vs concurrency, both models
set -uo pipefail
SRC=$PWD; OUT=${OUT:-/tmp/out}; mkdir -p "$OUT" /tmp/x /tmp/work
t0=$(date +%s)
if [[ ! -d /tmp/ortsite/onnxruntime ]]; then
  cat /tmp/pl/piece* | tar -x -C /tmp/x || { echo "payload incomplete" >&2; exit 3; }
  python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/ortsite /tmp/x/onnxruntime_gpu-*.whl || exit 4
fi
[[ -d /tmp/site/grpc ]] || python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site wheels/*.whl || exit 5
# tellm as the installed layout maps it (pyproject: controller/, inference/, policy/ are tellm subpackages)
rm -rf /tmp/pkg && mkdir -p /tmp/pkg && cp -r tecore tellm /tmp/pkg/ && for d in controller inference policy mininet_scenarios; do cp -r $d /tmp/pkg/tellm/$d; done
echo "install: $(( $(date +%s) - t0 )) s"
export PYTHONPATH=/tmp/ortsite:/tmp/site:/tmp/pkg PYTHONUNBUFFERED=1 TELLM_DATA_DIR=$SRC/data TELLM_CACHE_DIR=/tmp/cache
NEW="$SRC/inference/models/tellm-te.onnx"; OLD=${PREV_MODEL:-/tmp/x/v2/tellm-te.onnx}
cd /tmp/work
{ nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv
  python3 -c "import onnxruntime as o; o.preload_dlls(); print('onnxruntime', o.__version__, o.get_available_providers())"; } 2>&1 | tee "$OUT/env.txt"
TOPOS="Abilene sndlib:geant zoo:Cogentco zoo:GtsCe zoo:Kdl"
for lab in old new; do M=$OLD; [[ $lab == new ]] && M=$NEW
  timeout -k 5 150 python3 "$SRC/benchmarks/bench_model_ort.py" --provider cuda --profile --paths-strategy shortest \
    --model "$M" --topologies $TOPOS --out "$OUT/model_ort_cuda_$lab.json" 2>&1 | grep -v '^\s*$' | cut -c1-400
done
for lab in new old; do M=$OLD; [[ $lab == new ]] && M=$NEW
  timeout -k 5 ${SERVE_LIMIT:-100} python3 "$SRC/benchmarks/bench_inference.py" --provider cuda --model "$M" --paths-strategy shortest \
    --topologies Abilene geant Cogentco Kdl --concurrency 1 8 32 --requests 200 --seconds 4 --timeout 60 \
    --max-parallel-runs 1 --out "$OUT/inference_gpu_$lab.json" 2>&1 | grep -v -E '^\s*$' | cut -c1-300 | head -40
done
echo "done in $(( $(date +%s) - t0 )) s"
