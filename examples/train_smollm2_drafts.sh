#!/usr/bin/env bash
# Reproduces the shipped drafts examples/drafts/cp_smollm2_r{8,1}: the same teacher data, heads, steps, batch and
# seed; only the rank differs. Teacher data (896 prompts: 768 ShareGPT + 128 HumanEval train split) go to
# runs/teacher_smollm2 and are reused by the second run. About 25 min of teacher generation and 20 min of training
# on 2 CPU cores.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$root/examples/setup_venv.sh"
cd "$root"
export HF_HUB_OFFLINE=1
common=(--data sharegpt,humaneval --prompts 768 --teacher-dir runs/teacher_smollm2 --heads 3 --steps 3000
        --batch-size 64 --seed 0)
.venv/bin/vllm-ptp train cp "${common[@]}" --rank 8 --out examples/drafts/cp_smollm2_r8
.venv/bin/vllm-ptp train cp "${common[@]}" --rank 1 --out examples/drafts/cp_smollm2_r1
