#!/usr/bin/env bash
# Issue 10 (a) / issue 21 item 1: the CUDA correctness tests, the training-loop benchmarks and the
# batched conv-net stability ensembles (K models/hour) on one GPU, JSON and a log per case in $OUT.
# Full size by default (50,000 CIFAR-shaped images, ResNet-18, 3 epochs, 2 rounds); any
# MEMPROX_BENCH_* variable set by the caller wins, so the same script runs small on a CPU:
#   MEMPROX_BENCH_DEVICE=cpu MEMPROX_BENCH_N=128 MEMPROX_BENCH_ROUNDS=1 benchmarks/run_gpu_checks.sh
# STAGES picks and orders the cases (default: all of cuda,fp32,bf16,bf16_compiled,conv_ensemble);
# FP32_K, BF16_K and COMPILED_K narrow the loop benchmarks of a stage (pytest -k expressions), so a
# device call with little time can run, e.g., STAGES=bf16 BF16_K=loop_vs.
set -euo pipefail
out=${OUT:-bench-out}
py=${PYTHON:-python}
mkdir -p "$out"
export MEMPROX_BENCH_DEVICE=${MEMPROX_BENCH_DEVICE:-cuda}
export MEMPROX_BENCH_ROUNDS=${MEMPROX_BENCH_ROUNDS:-2}
stages=${STAGES:-cuda,fp32,bf16,bf16_compiled,conv_ensemble}
bench() {  # NAME TESTS [env assignments...]: one pytest run of the loop benchmarks matching -k TESTS
  local name=$1 tests=$2; shift 2
  env "$@" "$py" -m pytest benchmarks/test_bench_training_loop.py --benchmark-only -s -q -p no:cacheprovider \
    -k "$tests" --benchmark-json="$out/$name.json" 2>&1 | tee "$out/$name.log" | grep -E '^\[|passed|failed|Error'
}
"$py" -c 'import torch; print("torch", torch.__version__, "cuda", torch.cuda.is_available(),
      torch.cuda.get_device_name() if torch.cuda.is_available() else "")' | tee -a "$out/env.txt"
for stage in ${stages//,/ }; do
  case $stage in
    cuda)  # batched batch norm on cuDNN, the tracker's device buffers, curvature in IEEE float32 (not
           # TF32) against float64; a failure is reported and the timings still run (device time is too
           # scarce to stop here), and a file that cannot be imported there costs only its own tests
           # (the device lacks cleanlab: a file here imports it inside the tests that need it)
      # every test that skips without CUDA is here (tests/test_bench30_session.py checks the list)
      "$py" -m pytest tests/test_ensemble.py tests/test_tracker.py tests/test_tracker_edge_cases.py tests/test_curvature.py \
        tests/test_held_batches.py tests/test_score_checks8.py tests/test_tracker_copy_attackb26.py \
        tests/test_hint30_droplast.py tests/test_tracker_kept_cuda30.py \
        -q -p no:cacheprovider --continue-on-collection-errors \
        -k "cuda or gpu" -rA 2>&1 \
        | tee "$out/cuda_tests.log" | tail -3 || echo "CUDA tests FAILED: see $out/cuda_tests.log" ;;
    fp32) bench fp32 "${FP32_K:-loop_vs or csl or images}" MEMPROX_BENCH_PRECISION=fp32 ;;
    bf16) bench bf16 "${BF16_K:-loop_vs or csl}" MEMPROX_BENCH_PRECISION=bf16 ;;
    # compiling costs tens of seconds per fresh model: time the compiled step once, and one compiled
    # loop-vs-loop comparison, rather than every recorded run
    bf16_compiled) bench bf16_compiled "${COMPILED_K:-images or loop_vs}" MEMPROX_BENCH_PRECISION=bf16 \
      MEMPROX_BENCH_COMPILE=1 MEMPROX_BENCH_ROUNDS=1 ;;
    conv_ensemble)  # stability ensembles of batch-norm conv nets, batched vs one at a time
      "$py" -m pytest benchmarks/test_bench_conv_ensemble.py --benchmark-only -s -q -p no:cacheprovider \
        --benchmark-json="$out/conv_ensemble.json" 2>&1 | tee "$out/conv_ensemble.log" \
        | grep -E '^(small_cnn|resnet18)|^\[|passed|failed|Error' ;;
    *) echo "unknown stage $stage; valid: cuda, fp32, bf16, bf16_compiled, conv_ensemble" >&2; exit 2 ;;
  esac
done
