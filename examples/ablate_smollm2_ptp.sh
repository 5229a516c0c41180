#!/usr/bin/env bash
# The two ablations of the shipped PTP draft (docs/results.md, "Depth and data do not help either"), each on one core,
# resumable. Needs the teacher data of examples/train_smollm2_ptp.sh (runs/teacher_train, 17 state shards were used)
# and runs/teacher_heldout.
#   depth: the shipped draft grown to 3 layers (added layers start as identity), 128 anchors, 800 steps
#   data:  the shipped recipe from scratch on every state shard present (1.7x the shipped draft's sequences)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
export HF_HUB_OFFLINE=1 OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 NUMBA_NUM_THREADS=1 MALLOC_ARENA_MAX=2
common=(--teacher-dir runs/teacher_train --eval-dir runs/teacher_heldout --slots 4 --loss kl)
taskset -c 1 .venv/bin/vllm-ptp train ptp "${common[@]}" --lr 1e-3 --seed 1 --steps 800 --anchors 128 \
  --save-every 200 --layers 3 --init-from examples/drafts/ptp_smollm2 --out runs/ptp_3l &
taskset -c 0 .venv/bin/vllm-ptp train ptp "${common[@]}" --lr 2e-3 --seed 0 --steps 3000 --save-every 500 \
  --max-hours "${DATA_HOURS:-1.05}" --out runs/ptp_data17 &
wait
.venv/bin/python examples/plot_training.py examples/drafts/ptp_smollm2 examples/drafts/peagle_smollm2 \
  runs/ptp_v3@640000 runs/ptp_3l@640000 runs/ptp_data17 --out examples/results/training_curve_smollm2.png
