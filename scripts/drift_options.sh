#!/usr/bin/env bash
# How far int8 images drift from fp32 ones, per quantization option (docs/QUANTIZATION.md, "Where the
# int8 error comes from"): 64 images, DDIM 100, seeds 0-63, each against the OpenVINO fp32 IR run in f32.
#   bash scripts/drift_options.sh [WORKDIR]      # ~25 min on the 2-core development VM
set -eu
W=${1:-/tmp/drift-options}
E=${EDGE_DM:-edge-dm}
mkdir -p "$W"
$E export --output "$W/fp32" --overwrite > /dev/null
$E generate --model "$W/fp32" --precision-hint f32 --num-images 64 --output "$W/fp32-f32" --overwrite | tail -1
drift() { $E evaluate --samples "$1" --compare "$W/fp32-f32" --num-images 64 2>&1 | grep drift; }
$E generate --model "$W/fp32" --precision-hint bf16 --num-images 64 --output "$W/fp32-bf16" --overwrite > /dev/null
echo "fp32-bf16 | $(drift "$W/fp32-bf16")"
run() {  # NAME QUANTIZE-OPTIONS...: quantize, 64 images, drift, and the held-out error table
  local name=$1; shift
  $E quantize --output "$W/$name" --overwrite "$@" 2>&1 | grep "t=990" > "$W/$name.err"
  $E generate --model "$W/$name" --num-images 64 --output "$W/$name-img" --overwrite > /dev/null
  echo "$name | $(drift "$W/$name-img") | $(cat "$W/$name.err")"
}
run all --keep-float none
cp "$W/all/calibration.npz" "$W/cal.npz"  # one DNTC set (N 32, seed 0) for the variants below
$E generate --model "$W/all" --precision-hint f32 --num-images 64 --output "$W/all-f32" --overwrite > /dev/null
echo "all, f32 rest | $(drift "$W/all-f32")"
C=(--calibration-set "$W/cal.npz" --keep-float none)
run overflow-off "${C[@]}" --overflow-fix disable
run no-matmul "${C[@]}" --ignore-type MatMul
run temb-float "${C[@]}" --ignore-pattern '.*time_emb.*'
run no-smoothquant "${C[@]}" --smooth-quant-alpha -1
run io-float "${C[@]}" --ignore-pattern '.*conv_(in|out)/.*'
run io-temb-float --calibration-set "$W/cal.npz"  # the defaults now
run all-seed1 --keep-float none --seed 1
run io-float-seed1 --keep-float none --seed 1 --ignore-pattern '.*conv_(in|out)/.*'
run all-n128 --keep-float none --num-samples 128
python3 - "$W" <<'PY'
import sys, time, numpy as np, openvino as ov
core, w = ov.Core(), sys.argv[1]
names = ["all", "io-float", "io-temb-float"]
reqs = {}
for n in names:
    m = core.read_model(f"{w}/{n}/unet.xml"); m.reshape({"sample": [1, 3, 32, 32], "timestep": [1]})
    reqs[n] = core.compile_model(m, "CPU", {"PERFORMANCE_HINT": "LATENCY"}).create_infer_request()
x, t = np.random.randn(1, 3, 32, 32).astype(np.float32), np.array([500])
res = {n: [] for n in names}
for _ in range(6):  # interleaved rounds: every variant sees the same VM weather
    for n in names:
        for _ in range(3): reqs[n].infer({0: x, 1: t})
        ts = []
        for _ in range(30):
            s = time.perf_counter(); reqs[n].infer({0: x, 1: t}); ts.append(time.perf_counter() - s)
        res[n].append(np.median(ts) * 1e3)
for n in names: print(f"{n}: int8 batch-1 latency, median of 6 round medians {np.median(res[n]):.2f} ms")
PY
