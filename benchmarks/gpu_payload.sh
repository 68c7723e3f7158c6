# Sourced by the run_*_gpu.sh scripts ON THE GPU DEVICE MACHINE: installs the payload an earlier call of the
# same machine session left in /tmp/pl (onnxruntime-gpu as zstd tar parts, gRPC/protobuf/highspy wheels),
# seeds the path cache from CACHE_SEED, lays out SRC_DIR (and OLD_SRC, when set) as importable trees
# /tmp/pkg_new and /tmp/pkg_old, exports the data/cache variables, enters /tmp/work and records the machine
# in $OUT/env.txt. Expects OUT, SRC_DIR, DATA_DIR and t0 (the start, in seconds) set.
[[ -n "${CACHE_SEED:-}" && -d "$CACHE_SEED" ]] && mkdir -p /tmp/cache && cp -rn "$CACHE_SEED"/* /tmp/cache/
[[ -d /tmp/ortsite/onnxruntime ]] || { mkdir -p /tmp/ortsite && cat /tmp/pl/ortpart* | zstd -d | tar -x -C /tmp/ortsite; } || exit 3
[[ -d /tmp/site/grpc ]] || python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site /tmp/pl/*.whl || exit 5
pkg() {  # pkg SRC DEST: the packages as one importable tree (tellm.<subpackage>)
  rm -rf "$2" && mkdir -p "$2" && cp -r "$1"/tecore "$1"/tellm "$2"/ &&
    for d in controller inference policy mininet_scenarios contract; do [[ -d "$1/$d" ]] && cp -r "$1/$d" "$2/tellm/$d"; done
}
pkg "$SRC_DIR" /tmp/pkg_new || exit 6
[[ -n "${OLD_SRC:-}" ]] && { pkg "$OLD_SRC" /tmp/pkg_old || exit 6; }
echo "install: $(( $(date +%s) - t0 )) s"
export PYTHONUNBUFFERED=1 TELLM_DATA_DIR=$DATA_DIR TELLM_CACHE_DIR=/tmp/cache
cd /tmp/work
{ nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv
  PYTHONPATH=/tmp/ortsite:/tmp/site python3 -c "import onnxruntime as o; o.preload_dlls(); print('onnxruntime', o.__version__, o.get_available_providers())"
  uptime; } 2>&1 | tee "$OUT/env.txt"
