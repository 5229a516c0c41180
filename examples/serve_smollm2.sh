#!/usr/bin/env bash
# OpenAI-compatible vLLM server for the embedded default with a shipped draft (one flag): DRAFT=ptp_smollm2 (default)
# or DRAFT=cp_smollm2_r8, or any draft folder. More vLLM server options can follow: serve_smollm2.sh --max-num-seqs 8
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$root/examples/setup_venv.sh"
export HF_HUB_OFFLINE=1 VLLM_CPU_KVCACHE_SPACE="${VLLM_CPU_KVCACHE_SPACE:-2}"
draft="${DRAFT:-ptp_smollm2}"
[[ -d "$draft" ]] || draft="$root/examples/drafts/$draft"
target="$("$root/.venv/bin/python" -c 'from vllm_ptp.embedded import default_target_dir; print(default_target_dir())')"
exec "$root/.venv/bin/vllm-ptp" serve "$target" --port "${PORT:-8000}" \
    --speculative-config "{\"model\": \"$draft\"}" "$@"
