#!/usr/bin/env bash
# The GPU check of the sampling kernels, for a machine with CUDA, torch and triton (no vLLM needed):
# the kernel tests with the kernels compiled on CUDA, then the kernels benchmark. Logs go to $OUT (default /tmp).
#   bash examples/gpu_kernels_check.sh
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
out="${OUT:-/tmp}"
export PYTHONPATH="$PWD:$PWD/tests" PYTHONUNBUFFERED=1
{ nvidia-smi --query-gpu=name,driver_version --format=csv,noheader
  python3 -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__)"; } | tee "$out/gpu.txt"
VLLM_PTP_TEST_DEVICE=cuda timeout "${TEST_TIMEOUT:-240}" python3 -m pytest -q -p no:cacheprovider --noconftest \
    --durations=5 tests/test_kernels.py 2>&1 | tee "$out/kernel_tests.txt"
timeout "${BENCH_TIMEOUT:-240}" python3 -m vllm_ptp.bench.kernels_bench --min-seconds 0.1 2>&1 | tee "$out/kernels_bench.md"
