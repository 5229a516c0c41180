#!/usr/bin/env bash
# Reproduces the shipped PTP drafts examples/drafts/ptp_smollm2 (u-embedding quarter_cos) and
# examples/drafts/ptp_smollm2_independent (the ablation: same slots, data, steps and seed, no u).
# Teacher data: the target's own continuations of 872 prompts (768 ShareGPT + 128 HumanEval train split, <= 384
# prompt tokens) sampled in vLLM at T = 0 / 0.7 / 1.0 in turn, then a float32 pass for its states at layers 2, 15, 27
# (runs/ptp_teacher_smollm2; about 18 + 7 min on 2 CPU cores). The two drafts train side by side, one thread each.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$root/examples/setup_venv.sh"
cd "$root"
export HF_HUB_OFFLINE=1
common=(--data sharegpt,humaneval --prompts 768 --teacher-dir runs/ptp_teacher_smollm2 --slots 4 --seed 0)
.venv/bin/vllm-ptp train ptp "${common[@]}" --teacher-only --out examples/drafts/ptp_smollm2
export OMP_NUM_THREADS=1
# Two stages (what the shipped drafts went through): 1200 steps, then resumed to 2000 (about 25 + 17 min).
for steps in 1200 2000; do
  .venv/bin/vllm-ptp train ptp "${common[@]}" --steps $steps --lr 2e-3 --out examples/drafts/ptp_smollm2 &
  .venv/bin/vllm-ptp train ptp "${common[@]}" --steps $steps --lr 2e-3 --independent \
    --out examples/drafts/ptp_smollm2_independent &
  wait
done
