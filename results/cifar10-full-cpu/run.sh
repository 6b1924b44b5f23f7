#!/usr/bin/env bash
# How results/cifar10-full-cpu was made (issue 19): full CIFAR-10 on the CPU with the cpu-full preset,
# 1 seed, on a 2-core machine. Run from the repository root; CIFAR defaults to the offline copy beside
# the repository. Each step is one experiment; they share the store, so a rerun reuses what is there.
#   ./run.sh main        mislabeled 10 % (every single-run proxy + input-gradient proxies) and duplicates,
#                        side by side, one worker each
#   ./run.sh low-noise   mislabeled 1, 2 and 5 %, single-run proxies, two workers
#   ./run.sh cl          confident learning at 10 % noise with 2 folds (one full run's worth of training)
#   ./run.sh ssft        second-split forgetting time at 10 % noise (two runs, each half then the other half)
#   ./run.sh regimes     the two 16-epoch recipes that fit more of the flipped labels (csl, final_loss)
#   ./run.sh resnet9     resnet9_quarter in place of small_cnn: mislabeled 10 % (single-run proxies), then a
#                        clean run (held-out accuracy) beside the 16-epoch, augment-8 recipe (csl, final_loss)
# Per-sample scores are then gzipped with 7 significant digits (float32 precision): `compress` below.
set -euo pipefail
CIFAR=${CIFAR:-../shared/data/cifar10}
STORE=${STORE:-$HOME/.cache/memprox/store}
OUT=${OUT:-results/cifar10-full-cpu}
BASE=(--dataset "imagefolder:$CIFAR" --preset cpu-full --seeds 1 --no-progress --store "$STORE")
COMMON=("${BASE[@]}" --model small_cnn)  # cpu-full's model until the resnet9 step made resnet9_quarter its model
SINGLE=csl,csl_eval,final_loss,in_confidence,forgetting,threshold_lt,aum,el2n,variability

compress() {  # every scores/*.csv under $1 -> .csv.gz, 7 significant digits
  python - "$1" <<'PY'
import sys, pathlib, pandas as pd
for f in pathlib.Path(sys.argv[1]).glob("**/scores/*.csv"):
    pd.read_csv(f).to_csv(f.with_suffix(".csv.gz"), index=False, float_format="%.7g")
    f.unlink()
PY
}

case "${1:-main}" in
main)
  python -m harness run "${COMMON[@]}" --workers 1 --tasks mislabeled,cost --noise-rates 0.1 \
    --proxies "$SINGLE,loss_sensitivity,csg,curvature" \
    --proxy-arg loss_sensitivity.every=2 --proxy-arg csg.every=2 --proxy-arg curvature.n=2 --proxy-arg curvature.every=5 \
    --out "$OUT/mislabeled" &
  mislabeled=$!
  python -m harness run "${COMMON[@]}" --workers 1 --tasks duplicates,cost --duplicate-pairs 250 --proxies "$SINGLE" \
    --out "$OUT/duplicates" &
  duplicates=$!
  wait "$mislabeled" && wait "$duplicates" ;;
low-noise)
  python -m harness run "${COMMON[@]}" --workers 2 --tasks mislabeled,cost --noise-rates 0.01,0.02,0.05 \
    --proxies "$SINGLE" --out "$OUT/mislabeled-low-noise" ;;
cl)
  python -m harness run "${COMMON[@]}" --workers 1 --tasks mislabeled --noise-rates 0.1 \
    --proxies confident_learning --proxy-arg confident_learning.folds=2 --out "$OUT/confident-learning" ;;
ssft)
  python -m harness run "${COMMON[@]}" --workers 2 --tasks mislabeled --noise-rates 0.1 --proxies ssft \
    --out "$OUT/ssft" ;;
regimes)
  python -m harness run "${COMMON[@]}" --workers 1 --tasks mislabeled --noise-rates 0.1 --proxies csl,final_loss \
    --epochs 16 --augment-epochs 8 --out "$OUT/regimes/augment-8-of-16" &
  first=$!
  python -m harness run "${COMMON[@]}" --workers 1 --tasks mislabeled --noise-rates 0.1 --proxies csl,final_loss \
    --epochs 16 --augment off --out "$OUT/regimes/augment-off-16" &
  second=$!
  wait "$first" && wait "$second" ;;
resnet9)
  R9=("${BASE[@]}" --model resnet9_quarter --workers 1)
  python -m harness run "${R9[@]}" --tasks mislabeled,cost --noise-rates 0.1 --proxies "$SINGLE" \
    --out "$OUT/resnet9-quarter/mislabeled"
  python -m harness run "${R9[@]}" --tasks cost --proxies csl --out "$OUT/resnet9-quarter/clean" &
  first=$!
  python -m harness run "${R9[@]}" --tasks mislabeled --noise-rates 0.1 --proxies csl,final_loss \
    --epochs 16 --augment-epochs 8 --out "$OUT/resnet9-quarter/augment-8-of-16" &
  second=$!
  wait "$first" && wait "$second" ;;
*) echo "usage: $0 [main|low-noise|cl|ssft|regimes|resnet9]" >&2; exit 2 ;;
esac
compress "$OUT"
