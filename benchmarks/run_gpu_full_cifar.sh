#!/usr/bin/env bash
# Issue 10 (b) and (c): every single-run proxy plus loss sensitivity on full CIFAR-10 at 10 %
# symmetric noise with the `gpu` preset, on one GPU; EXPERIMENTS=mislabeled,duplicates adds the
# duplicates task (250 duplicated pairs, the paper's setting), EXPERIMENTS=duplicates runs it alone.
# The device machine cannot download and receives 64 MiB at most, so the dataset travels packed
# (benchmarks/pack_imagefolder.py: the 50,000 training JPEGs are 16 MB as one zlib stream):
#   python benchmarks/pack_imagefolder.py pack ../shared/data/cifar10 .gpu_pack --test-per-class 200
# with .gpu_pack ignored by git and named in the device call's `carry`. Each experiment's folder
# (leaderboards, gzipped per-sample scores, figures) and log go to $WORK, and one NAME.tgz of
# them to $OUT (the device returns at most 8 files); the store stays on the device.
# benchmarks/run_gpu_session.sh runs this script inside one time-boxed device call.
# A small CPU rehearsal of the same command lines:
#   DEVICE=cpu EXTRA="--subset 300 --epochs 1 --precision fp32" benchmarks/run_gpu_full_cifar.sh
# (with EXPERIMENTS=duplicates also DUPLICATE_PAIRS=20: 250 pairs need at least 501 samples).
# Runs checkpoint every CHECKPOINT_EVERY_S (60 s, the default is 120), so a GPU run saves at least one:
# the checkpoint path (CUDA tensors, the machine record) had never run on a GPU. Set it here, not in
# EXTRA: the CLI refuses a flag given twice.
set -euo pipefail
EXPERIMENTS=${EXPERIMENTS:-mislabeled}
out=${WORK:-gpu-work}
py=${PYTHON:-python}
data=.gpu_data/cifar10
mkdir -p "$out" ${OUT:+"$OUT"}
[ -d "$data/train" ] || "$py" benchmarks/pack_imagefolder.py unpack "${PACK:-.gpu_pack}" "$data"
proxies="csl,csl_eval,final_loss,in_confidence,forgetting,threshold_lt,aum,el2n,variability"
proxies+=",loss_sensitivity,learning_time,learning_time(rule=count),csg"
proxies=${PROXIES:-$proxies}  # e.g. PROXIES=csl,aum for a shorter call
run() {  # NAME TASK-FLAGS...: one experiment, its log and outputs under $out/NAME
  local name=$1; shift
  # shellcheck disable=SC2086  # EXTRA is a list of flags
  "$py" -m harness run --dataset "imagefolder:$data" --preset gpu --device "${DEVICE:-cuda}" \
    --proxies "$proxies" --seeds 1 --out "$out/$name" --no-progress --checkpoint-every "${CHECKPOINT_EVERY_S:-60}" "$@" ${EXTRA:-} 2>&1 | tee "$out/$name.log" | grep -v '^\s*$' | tail -40
  gzip -f "$out/$name"/scores/*.csv
  if [ -n "${OUT:-}" ]; then tar czf "$OUT/$name.tgz" -C "$out" "$name" "$name.log"; fi
}
for experiment in ${EXPERIMENTS//,/ }; do
  case $experiment in
    mislabeled) run full-cifar10-mislabeled --tasks mislabeled,cost --noise-rates 0.1 ;;
    duplicates) run full-cifar10-duplicates --tasks duplicates,cost --duplicate-pairs "${DUPLICATE_PAIRS:-250}" ;;
    *) echo "unknown experiment $experiment; valid: mislabeled, duplicates" >&2; exit 2 ;;
  esac
done
