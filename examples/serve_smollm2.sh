#!/usr/bin/env bash
# OpenAI-compatible vLLM server for the embedded default with a shipped draft (one flag): DRAFT=ptp_smollm2 (default)
# or DRAFT=cp_smollm2_r8, or any draft folder. More vLLM server options can follow: serve_smollm2.sh --max-num-seqs 8
# CPU settings measured under load (README, "The server under load"): draft k=4 only while at most 2 requests run
# (above that, verifying k+1 tokens per request costs more than the drafts save on 2 cores), and 32-token KV blocks
# (vLLM's EAGLE-family methods reuse cached prompts only up to one block before their end; the CPU default is 128).
# float32 on CPUs that emulate bf16 (no AVX512-BF16 / AMX), where bf16 leaves no draft anything to gain; a --dtype
# after the script's name wins.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$root/examples/setup_venv.sh"
export HF_HUB_OFFLINE=1 VLLM_CPU_KVCACHE_SPACE="${VLLM_CPU_KVCACHE_SPACE:-2}"
draft="${DRAFT:-ptp_smollm2}"
[[ -d "$draft" ]] || draft="$root/examples/drafts/$draft"
target="$("$root/.venv/bin/python" -c 'from vllm_ptp.embedded import default_target_dir; print(default_target_dir())')"
dtype="$("$root/.venv/bin/python" -c 'from vllm_ptp.machine import resolve_dtype; print(resolve_dtype("auto"))')"
exec "$root/.venv/bin/vllm-ptp" serve "$target" --port "${PORT:-8000}" \
    --speculative-config "{\"model\": \"$draft\", \"num_speculative_tokens_per_batch_size\": [[1, 2, 4], [3, 256, 0]]}" \
    --block-size 32 --dtype "$dtype" "$@"
