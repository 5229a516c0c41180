#!/usr/bin/env bash
# Reproduces the shipped PTP draft (examples/drafts/ptp_smollm2) and its P-EAGLE baseline (examples/drafts/peagle_smollm2)
# on the same teacher data and budget. Everything is seeded and resumes where it stopped: run it again after a kill.
#
# 1. Teacher data (runs/teacher_train): SmolLM2 continues every ShareGPT user turn (with the conversation before it,
#    <= 768 prompt tokens) and stdlib code prompts, in vLLM at batch 256 (T = 0 / 0.7 / 1.0 in turn, 2 samples at
#    T > 0, <= 256 new tokens), on core 0; a batched bf16 state pass follows it shard by shard on core 1. About 90k
#    completion tokens and 1 GB of states per shard, one shard per 4 minutes. TEACHER_HOURS bounds the generation.
# 2. Held-out teacher data (runs/teacher_heldout): 40 ShareGPT first turns + the HumanEval held-out problems at T = 0
#    and 1, on which training selects the checkpoint it ships (offline acceptance, `vllm-ptp eval-draft`).
# 3. PTP and P-EAGLE side by side, one thread each, for TRAIN_HOURS (same steps, batch, schedule, seed and data).
#    The shipped drafts are the step-2500 checkpoints of such a run (3000-step schedule, stopped after the step-2500
#    evaluation to fit the session: 61 min); running on resumes, and exports a later checkpoint only if it is better.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$root/examples/setup_venv.sh"
cd "$root"
export HF_HUB_OFFLINE=1 NUMBA_NUM_THREADS=1
TEACHER_HOURS=${TEACHER_HOURS:-0.85}
TRAIN_HOURS=${TRAIN_HOURS:-1.0}
STEPS=${STEPS:-3000}
teacher=(--data sharegpt_turns,stdlib --samples-per-prompt 2 --max-new-tokens 256 --seed 0)
VLLM_CPU_KVCACHE_SPACE=1 OMP_NUM_THREADS=1 .venv/bin/vllm-ptp teacher --out runs/teacher_heldout --split heldout \
  --data sharegpt,humaneval --prompts 40 --temperatures 0 1 --max-new-tokens 128 --seed 0
VLLM_CPU_KVCACHE_SPACE=5 VLLM_CPU_OMP_THREADS_BIND=0 OMP_NUM_THREADS=1 .venv/bin/vllm-ptp teacher \
  --out runs/teacher_train "${teacher[@]}" --step sequences --max-hours "$TEACHER_HOURS" &
sleep 60  # step 1 first clears the done-marker of an earlier run, which would stop the state pass that follows it
OMP_NUM_THREADS=1 taskset -c 1 .venv/bin/vllm-ptp teacher --out runs/teacher_train "${teacher[@]}" --step states --follow
wait
export OMP_NUM_THREADS=1
common=(--teacher-dir runs/teacher_train --eval-dir runs/teacher_heldout --slots 4 --loss kl --lr 2e-3 --seed 0
        --steps "$STEPS" --save-every 500 --max-hours "$TRAIN_HOURS")
.venv/bin/vllm-ptp train ptp "${common[@]}" --out examples/drafts/ptp_smollm2 &
.venv/bin/vllm-ptp train peagle "${common[@]}" --out examples/drafts/peagle_smollm2 &
wait
.venv/bin/python examples/plot_training.py examples/drafts/ptp_smollm2 examples/drafts/peagle_smollm2 \
  --out examples/results/training_curve_smollm2.png
