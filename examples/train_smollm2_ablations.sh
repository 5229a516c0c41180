#!/usr/bin/env bash
# Trains the drafts of the science table (examples/bench_science.json) into examples/drafts/ablations/, each with the
# budget of the shipped draft it is compared with:
#   PTP without u (independent), u-embedding binary / linear_interpolation and KL loss: as the PTP draft of 2026-11
#   (1200 + 800 steps, lr 2e-3, 8 sequences x 32 anchors, seed 0, teacher data runs/ptp_teacher_smollm2, 0.17M
#   tokens; the shipped PTP / P-EAGLE pair on today's data is the same-data u ablation, train_smollm2_ptp.sh);
#   CP rank 4: as cp_smollm2_r1 / r8 (3000 steps of 64 positions, seed 0, runs/teacher_smollm2).
# One thread per run, two runs at a time; about 45 min per PTP draft on this 2-core machine.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$root/examples/setup_venv.sh"
cd "$root"
export HF_HUB_OFFLINE=1 OMP_NUM_THREADS=1
out=examples/drafts/ablations
ptp=(--data sharegpt,humaneval --prompts 768 --teacher-dir runs/ptp_teacher_smollm2 --slots 4 --seed 0 --lr 2e-3)
# Two stages, 1200 steps then resumed to 2000, exactly as the shipped PTP drafts were trained.
train_ptp() { for steps in 1200 2000; do .venv/bin/vllm-ptp train ptp "${ptp[@]}" --steps $steps "$@"; done; }
.venv/bin/vllm-ptp train cp --data sharegpt,humaneval --prompts 768 --teacher-dir runs/teacher_smollm2 --heads 3 \
  --steps 3000 --batch-size 64 --seed 0 --rank 4 --out $out/cp_smollm2_r4 &
train_ptp --u-embedding binary --out $out/ptp_smollm2_binary &
wait
train_ptp --u-embedding linear_interpolation --out $out/ptp_smollm2_linear_interpolation &
train_ptp --loss kl --out $out/ptp_smollm2_kl &
wait
train_ptp --independent --out $out/ptp_smollm2_independent
