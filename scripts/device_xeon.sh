#!/usr/bin/env bash
# What measured the Xeon numbers in docs/ (run through the lent machine's `device` tool, from the repo
# root there, after the wheels were installed to /tmp/site). Stage A: quantize + benchmarks on the CPU;
# stage B: the quality table (int8 images on the Xeon with OpenVINO, fp32 with torch on the GPU).
set -u
export PYTHONPATH=/tmp/site:$PWD HF_HUB_OFFLINE=1 EDGE_DM_HOME=/tmp/home PYTHONUNBUFFERED=1
edm() { python3 -m edge_dm "$@"; }
case "$1" in
A)
  lscpu | grep -E "Model name|^CPU\(s\)|Flags" | cut -c1-400
  edm devices
  /usr/bin/time -f "quantize dntc wall %e s, peak RSS %M KB" python3 -m edge_dm quantize --num-samples 64 --output /tmp/home/int8-dntc 2>&1 | grep -v "━"
  /usr/bin/time -f "quantize uniform wall %e s" python3 -m edge_dm quantize --num-samples 64 --calibration uniform --output /tmp/home/int8-uniform 2>&1 | grep -v "━"
  edm benchmark --int8 /tmp/home/int8-dntc --output "$OUT/bench-edm" --iterations 50 --batch-sizes 1,16,64 --steps 20 --images 16
  edm benchmark --model random:ddpm-cifar10 --output "$OUT/bench-google" --iterations 30 --batch-sizes 1,16,64 --steps 10 --images 16
  ;;
B)
  N=${2:-1000}
  python3 scripts/device_train.py images --model edm-cifar10-ddpm --num-images "$N" --batch-size 500 --out /tmp/fp32imgs
  REF=datasets/cifar10_train_jpeg_fid_stats.npz
  edm evaluate --samples /tmp/fp32imgs --reference $REF --num-images "$N" --feature-device cuda --output "$OUT/q-fp32.json"
  for k in dntc uniform; do
    /usr/bin/time -f "evaluate $k wall %e s" python3 -m edge_dm evaluate --samples /tmp/home/int8-$k --compare /tmp/fp32imgs \
      --reference $REF --num-images "$N" --batch-size 100 --feature-device cuda --output "$OUT/q-int8-$k.json" 2>&1 | grep -v "it/s\|img/s"
  done
  ;;
esac
