#!/usr/bin/env bash
# The demo command: installs what it needs, converts the embedded SmolLM2-135M-Instruct once (about 40 s), then
# runs it offline in vLLM without speculation, with the shipped PTP draft and with the shipped CP heads, and prints
# acceptance length, tokens/s and the draft's share of the time.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$root/examples/setup_venv.sh"
cd "$root"
export HF_HUB_OFFLINE=1 NUMBA_NUM_THREADS=1
exec "$root/.venv/bin/vllm-ptp" demo "$@"
