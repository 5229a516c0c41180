#!/usr/bin/env bash
# Reproduces the shipped CP heads examples/drafts/cp_smollm2_r{8,1} on the PTP drafts' teacher data (runs/teacher_train,
# made by examples/train_smollm2_ptp.sh: the heads read only its final states). Same data, heads, steps, batch, seed
# and held-out sequences; only the rank differs. One core; resumable (run it again after a stop); the finished
# checkpoints are copied into examples/drafts.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$root/examples/setup_venv.sh"
cd "$root"
export HF_HUB_OFFLINE=1 OMP_NUM_THREADS=1
STEPS=${STEPS:-4000}
common=(--teacher-dir runs/teacher_train --heads 3 --steps "$STEPS" --batch-size 128 --save-every 500 --seed 0)
for rank in 8 1; do
  .venv/bin/vllm-ptp train cp "${common[@]}" --rank $rank --out runs/cp_smollm2_r$rank
  cp runs/cp_smollm2_r$rank/{config.json,model.safetensors,README.md,train_log.jsonl} examples/drafts/cp_smollm2_r$rank/
done
