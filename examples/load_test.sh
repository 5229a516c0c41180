#!/usr/bin/env bash
# Load test of the OpenAI server on the embedded default: 1000 completions at 16 concurrent (up to 32 tokens, greedy
# and seeded sampled, held-out ShareGPT and HumanEval prompts), without speculation and with the shipped PTP draft.
# Writes load_results/load.json and load.md; fails if any request failed or the server's memory grew by more than
# 300 MiB after warm-up. Options are passed on: load_test.sh --draft examples/drafts/cp_smollm2_r8 --out cp_load
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$root/examples/setup_venv.sh"
cd "$root"
export HF_HUB_OFFLINE=1 NUMBA_NUM_THREADS=1 VLLM_CPU_KVCACHE_SPACE="${VLLM_CPU_KVCACHE_SPACE:-2}"
exec "$root/.venv/bin/vllm-ptp" load --draft examples/drafts/ptp_smollm2 --requests 1000 --concurrency 16 \
    --max-tokens 32 --out load_results "$@"
