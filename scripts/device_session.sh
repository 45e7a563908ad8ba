#!/usr/bin/env bash
# Table 5's images (docs/QUANTIZATION.md), made on the lent machine (H100 + 16-core Xeon) by the
# `device` tool, one call a stage, from the repo root there; scored here afterwards (`score`), with
# Inception on OpenVINO, so no Inception file has to travel. The int8 bundles are quantized here and
# carried, so every machine runs the very same IR.
#
#   pack WHEELS BUNDLE...  (here) wheels + the bundles' IRs, split into .c0-.c3 (a call carries
#                    <= 64 MiB, the 34 MB checkout in it). WHEELS: pip download --no-deps
#                    --only-binary=:all: --python-version 3.12 --implementation cp
#                    --platform manylinux_2_28_x86_64 -d WHEELS openvino==2026.4.1 nncf==3.4.0
#                    diffusers==0.37.1 pydot importlib_metadata openvino-telemetry
#   boot             carry .c0: show the machine, keep part 0
#   part K           carry .cK: keep part K; the last (3) installs the wheels, unpacks the bundles
#   start SET...     start `pipeline SET...` in the background (SET: a carried bundle's name)
#   resume SET FIRST LAST  like `start`, only SET's chunks from LAST-CHUNK down to FIRST (no fp32, no
#                    ceiling): a further machine finishes a set from its far end, while one here or a
#                    lost machine's chunks cover the near end
#   wait S           wait up to S seconds for the pipeline; show its log; return new results
#   stop             end the pipeline (its process group, by the PID it saved)
#   pipeline SET...  (background) 10,000 fp32 images on the GPU (torch); the bare int8 UNet's
#                    throughput on the Xeon; then each SET's images on the Xeon, in timed chunks of
#                    $CHUNK seeds, each chunk sent back as a tar in parts of 15 MB as soon as it is made
#   chunks BUNDLE SET [FIRST] [LAST]  images FIRST..LAST-1 (default 0..N-1) of BUNDLE, one timed
#                    `edge-dm generate` per chunk, into $WORK/SET-<first seed>; made chunks are kept
#   score DIR        (here) unpack the parts fetched into DIR, merge each set's chunks, score every
#                    set: FID/sFID against the CIFAR-10 train stats, drift against fp32
#
# Measured on 2026-11-25's lent Xeons: the bare int8 UNet ran 1,022-1,610 images/s on 14-16 cores, so
# 10,000 images x 100 steps take 10-17 min of bare UNet time: one set a machine (held <= 30 minutes).
# The machine goes back 30 s after a call returns: while the pipeline runs, keep a `wait` in flight.
set -u
export PYTHONPATH=/tmp/site:$PWD HF_HUB_OFFLINE=1 EDGE_DM_HOME=/tmp/home PYTHONUNBUFFERED=1
REF=datasets/cifar10_train_jpeg_fid_stats.npz
N=${N:-10000}
CHUNK=${CHUNK:-2500}
RES=${RES:-/tmp/res}
WORK=${WORK:-/tmp}
edm() { "${PY:-python3}" -m edge_dm "$@"; }
send() {  # FOLDER NAME: the folder's PNGs as NAME.tar.part-aa, -ab, ... in $RES
  tar cf - -C "$(dirname "$1")" "$(basename "$1")" | split -b 15000000 - "$RES/$2.tar.part-"
}
chunk() {  # SET S: the timed chunk of $CHUNK seeds from S of the carried bundle SET; its result and tar to $RES
  /usr/bin/time -f "$1-$2 wall %e s" bash scripts/device_session.sh chunks "/tmp/bundles/$1" "$1" "$2" $(($2 + CHUNK)) \
    > "$RES/$1-$2.log" 2>&1
  cp "$WORK/$1-$2/generate.json" "$RES/generate-$1-$2.json"
  send "$WORK/$1-$2" "$1-$2"
}
case "$1" in
pack)
  rm -rf .c[0-9] && tmp=$(mktemp -d) && mkdir "$tmp/b"
  for b in "${@:3}"; do  # what `generate` reads: the int8 IR, its scheduler and its recipe
    mkdir "$tmp/b/$(basename "$b")" && cp "$b"/{unet.xml,unet.bin,scheduler_config.json,recipe.json} "$tmp/b/$(basename "$b")"
  done
  tar cf "$tmp/w.tar" -C "$(realpath "$2")" . -C "$tmp" b
  split -n 4 -d -a 1 "$tmp/w.tar" "$tmp/w."
  for k in 0 1 2 3; do mkdir -p .c$k; mv "$tmp/w.$k" .c$k/part; done
  du -sh .c[0-9] && rm -r "$tmp"
  ;;
boot)
  nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
  lscpu | grep -E "Model name|^CPU\(s\)|Thread|Flags" | cut -c1-300; nproc
  mkdir -p /tmp/parts /tmp/site /tmp/home $RES && cp .c0/part /tmp/parts/w.0
  ;;
part)
  cp ".c$2/part" "/tmp/parts/w.$2" && ls -la /tmp/parts
  if [ "$2" = 3 ]; then
    mkdir -p /tmp/w && cat /tmp/parts/w.? | tar x -C /tmp/w && rm /tmp/parts/w.?
    python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site /tmp/w/*.whl
    mv /tmp/w/b /tmp/bundles && ls /tmp/bundles
    edm devices
  fi
  ;;
start|resume)
  [ "$1" = start ] && what=pipeline || what=backward
  shift
  setsid nohup bash scripts/device_session.sh $what "$@" > $RES/pipeline.log 2>&1 < /dev/null &
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
    --out /tmp/fp32 > $RES/fp32-images.log 2>&1
  send /tmp/fp32 fp32
  # the ceiling the loop can reach: the bare UNet, 8 and 16 images a request, OpenVINO's own streams
  python3 scripts/ov_throughput.py "/tmp/bundles/$1" --request-batches 8,16 --streams auto \
    --images 1024 --out $RES/bare-unet.json
  for set in "$@"; do
    for ((s = 0; s < N; s += CHUNK)); do chunk "$set" $s; done
  done
  date
  touch $RES/done
  ;;
backward)  # SET FIRST LAST
  set -x
  for ((s = $4 - CHUNK; s >= $3; s -= CHUNK)); do chunk "$2" $s; done
  touch $RES/done
  ;;
chunks)
  bundle=$2 set=$3 first=${4:-0} last=${5:-$N}
  for ((s = first; s < last; s += CHUNK)); do
    n=$((last - s < CHUNK ? last - s : CHUNK))
    [ -e "$WORK/$set-$s/generate.json" ] || edm generate --model "$bundle" --seed $s --num-images $n \
      --output "$WORK/$set-$s"
  done
  ;;
score)  # here: DIR holds the fetched parts
  d=$2
  for part in "$d"/*.tar.part-aa; do
    name=$(basename "$part" .tar.part-aa)
    [ -d "$d/$name" ] || cat "$d/$name".tar.part-* | tar x -C "$d"
  done
  for chunk in "$d"/*-[0-9]*/; do  # SET-FIRST/ -> SET/: PNGs are named by seed, so they merge
    set=$(basename "$chunk" | sed 's/-[0-9]*$//')
    mkdir -p "$d/$set" && cp "$chunk"/[0-9]*.png "$d/$set/"
  done
  for set in "$d"/*/; do
    name=$(basename "$set")
    case "$name" in fp32|*-[0-9]*) continue;; esac
    edm evaluate --samples "$set" --compare "$d/fp32" --reference $REF --num-images "$N" --output "$d/eval-$name.json"
  done
  edm evaluate --samples "$d/fp32" --reference $REF --num-images "$N" --output "$d/eval-fp32.json"
  ;;
esac
