#!/usr/bin/env bash
# How results/cifar10-full-cpu was made (issue 19): full CIFAR-10 on the CPU with the cpu-full preset,
# 1 seed, the two experiments side by side on a 2-core machine (one worker process each).
# Run from the repository root; CIFAR defaults to the offline copy beside the repository.
set -euo pipefail
CIFAR=${CIFAR:-../shared/data/cifar10}
STORE=${STORE:-$HOME/.cache/memprox/store}
OUT=${OUT:-results/cifar10-full-cpu}
COMMON=(--dataset "imagefolder:$CIFAR" --preset cpu-full --seeds 1 --no-progress --store "$STORE" --workers 1)
SINGLE=csl,csl_eval,final_loss,in_confidence,forgetting,threshold_lt,aum,el2n,variability
python -m harness run "${COMMON[@]}" --tasks mislabeled,cost --noise-rates 0.1 \
  --proxies "$SINGLE,loss_sensitivity,csg,curvature" \
  --proxy-arg loss_sensitivity.every=2 --proxy-arg csg.every=2 --proxy-arg curvature.n=2 --proxy-arg curvature.every=5 \
  --out "$OUT/mislabeled" &
mislabeled=$!
python -m harness run "${COMMON[@]}" --tasks duplicates,cost --duplicate-pairs 250 --proxies "$SINGLE" \
  --out "$OUT/duplicates" &
duplicates=$!
wait "$mislabeled" && wait "$duplicates"
