#!/usr/bin/env bash
# One lent-machine session (H100 + 16-core Xeon) of the `device` tool, stage by stage: each stage is
# one call, from the repo root there. It makes the images of Table 5 (docs/QUANTIZATION.md); they
# are scored here afterwards (`score`), with Inception on OpenVINO, so no FID file has to travel.
#
#   boot             carry .c0: show the machine, keep wheel part 0
#   part K           carry .cK: keep wheel part K; the last one installs the wheels
#   start KIND...    start `pipeline KIND...` in the background (KIND: dntc, uniform)
#   wait S           wait up to S seconds for the pipeline; show its log and progress; return results
#   stop             end the pipeline (its process group, by the PID it saved)
#   pipeline KIND... (background) the fp32 images on the GPU while each bundle is quantized; the bare
#                    UNet's throughput; then for each KIND, the timed generation of 10,000 int8 images
#                    on the Xeon; each image set comes back as a tar in parts of 15 MB
#   pack WHEELS      (here) split the wheels into .c0-.c2 (a call carries <= 64 MiB, the checkout in it);
#                    WHEELS: pip download --no-deps --only-binary=:all: --python-version 3.12
#                    --implementation cp --platform manylinux_2_28_x86_64 -d WHEELS openvino==2026.4.1
#                    nncf==3.4.0 diffusers==0.37.1 pydot importlib_metadata openvino-telemetry
#   score DIR        (here) unpack the parts fetched into DIR and score them: FID/sFID, drift vs fp32
#
# Measured on 2026-11-25's lent Xeon: the bare int8 UNet ran 1,022-1,063 images/s on 16 cores, so
# 10,000 images x 100 steps need 15.7 min of bare UNet time, and a 10k run had not finished after
# 19 min: one bundle a machine (which is held <= 30 minutes).
# The machine goes back 30 s after a call returns: while the pipeline runs, keep a `wait` in flight.
set -u
export PYTHONPATH=/tmp/site:$PWD HF_HUB_OFFLINE=1 EDGE_DM_HOME=/tmp/home PYTHONUNBUFFERED=1
REF=datasets/cifar10_train_jpeg_fid_stats.npz
N=${N:-10000}
RES=/tmp/res
edm() { python3 -m edge_dm "$@"; }
send() {  # FOLDER NAME: the folder's PNGs as NAME.tar.part-aa, -ab, ... in $RES
  tar cf - -C "$(dirname "$1")" "$(basename "$1")" | split -b 15000000 - "$RES/$2.tar.part-"
}
case "$1" in
pack)
  rm -rf .c[0-9] && tmp=$(mktemp -d)
  tar cf "$tmp/w.tar" -C "$(realpath "$2")" .
  split -n 3 -d -a 1 "$tmp/w.tar" "$tmp/w."
  for k in 0 1 2; do mkdir -p .c$k; mv "$tmp/w.$k" .c$k/part; done
  du -sh .c[0-9] && rm -r "$tmp"
  ;;
boot)
  nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
  lscpu | grep -E "Model name|^CPU\(s\)|Thread|Flags" | cut -c1-300; nproc
  mkdir -p /tmp/parts /tmp/site /tmp/home $RES && cp .c0/part /tmp/parts/w.0
  ;;
part)
  cp ".c$2/part" "/tmp/parts/w.$2" && ls -la /tmp/parts
  if [ "$2" = 2 ]; then
    mkdir -p /tmp/w && cat /tmp/parts/w.? | tar x -C /tmp/w && rm /tmp/parts/w.?
    python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site /tmp/w/*.whl
    edm devices
  fi
  ;;
start)
  shift
  setsid nohup bash scripts/device_session.sh pipeline "$@" > $RES/pipeline.log 2>&1 < /dev/null &
  echo $! > $RES/pipeline.pid
  sleep 15; cat $RES/pipeline.log
  ;;
wait)
  for _ in $(seq "$2"); do [ -e $RES/done ] && break; sleep 1; done
  tail -15 $RES/pipeline.log
  for f in $RES/*.log; do echo "$f: $(tr '\r' '\n' < "$f" | grep -v '^$' | tail -1)"; done
  touch $RES/sent  # $OUT is emptied before each call and returns <= 8 files: each result goes once
  for f in $RES/*.json $RES/*.part-*; do
    [ -e "$f" ] && ! grep -qx "$f" $RES/sent && [ "$(ls $OUT | wc -l)" -lt 8 ] && cp "$f" "$OUT/" && echo "$f" >> $RES/sent
  done
  ls $OUT
  ;;
stop)  # the pipeline leads its own session: end the whole group, never match on command lines
  kill -- -"$(cat $RES/pipeline.pid)" && echo stopped
  ;;
pipeline)
  shift
  set -x
  date
  python3 scripts/device_train.py images --model edm-cifar10-ddpm --num-images "$N" --batch-size 2500 \
    --out /tmp/fp32 > $RES/fp32-images.log 2>&1 &
  cores=(0-7 8-15)
  i=0
  for kind in "$@"; do
    taskset -c "${cores[$((i % 2))]}" python3 -m edge_dm quantize --calibration "$kind" --output "/tmp/home/int8-$kind" \
      2>&1 | tr '\r' '\n' | grep -v "^calib" > "$RES/quantize-$kind.log" &
    i=$((i + 1))
  done
  wait
  date
  send /tmp/fp32 fp32
  for kind in "$@"; do cp "/tmp/home/int8-$kind/recipe.json" "$RES/recipe-$kind.json"; done
  # the ceiling the loop can reach: the bare UNet, 8 and 16 images a request, OpenVINO's own streams
  python3 scripts/ov_throughput.py "/tmp/home/int8-$1" --request-batches 8,16 --streams auto \
    --images 1024 --out $RES/bare-unet.json
  for kind in "$@"; do
    date
    # the timed run, nothing else on the machine; PNGs named by seed, as the fp32 ones
    /usr/bin/time -f "generate int8-$kind wall %e s" python3 -m edge_dm generate --model "/tmp/home/int8-$kind" \
      --num-images "$N" --output "/tmp/int8-$kind" > "$RES/generate-$kind.log" 2>&1
    cp "/tmp/int8-$kind/generate.json" "$RES/generate-$kind.json"
    send "/tmp/int8-$kind" "int8-$kind"
  done
  date
  touch $RES/done
  ;;
score)  # here: DIR holds the fetched parts
  d=$2
  edge-dm() { "${EDGE_DM:-.venv/bin/edge-dm}" "$@"; }
  for set in "$d"/*.tar.part-aa; do
    name=$(basename "$set" .tar.part-aa)
    [ -d "$d/$name" ] || cat "$d/$name".tar.part-* | tar x -C "$d"
  done
  for set in "$d"/int8-*/; do
    kind=$(basename "$set")
    edge-dm evaluate --samples "$set" --compare "$d/fp32" --reference $REF --num-images "$N" \
      --output "$d/eval-$kind.json"
  done
  edge-dm evaluate --samples "$d/fp32" --reference $REF --num-images "$N" --output "$d/eval-fp32.json"
  ;;
esac
