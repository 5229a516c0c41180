#!/usr/bin/env bash
# Reproduces the shipped baselines in vLLM's own formats, trained like the PTP drafts (examples/train_smollm2_ptp.sh:
# same teacher data runs/ptp_teacher_smollm2, 4 slots, 2000 steps x 8 sequences, window 128, 32 anchors, lr 2e-3,
# seed 0, the same two stages):
# - examples/drafts/peagle_smollm2: P-EAGLE (speculators "peagle"), the PTP draft without u or temperature embedding;
# - examples/drafts/eagle3_smollm2: EAGLE-3 (speculators "eagle3"), sequential drafting, training-time test over 4 steps.
# Both load in an unmodified vLLM (see each folder's README.md). One thread each, side by side (about 45 min).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$root/examples/setup_venv.sh"
cd "$root"
export HF_HUB_OFFLINE=1
common=(--data sharegpt,humaneval --prompts 768 --teacher-dir runs/ptp_teacher_smollm2 --slots 4 --seed 0 --lr 2e-3)
.venv/bin/vllm-ptp train peagle "${common[@]}" --teacher-only --out examples/drafts/peagle_smollm2
export OMP_NUM_THREADS=1
for steps in 1200 2000; do
  .venv/bin/vllm-ptp train peagle "${common[@]}" --steps $steps --out examples/drafts/peagle_smollm2 &
  .venv/bin/vllm-ptp train eagle3 "${common[@]}" --steps $steps --out examples/drafts/eagle3_smollm2 &
  wait
done
