"""Train an EAGLE-3 draft (sequential drafting) with training-time test, on the PTP draft's data and slots.

The draft is the PTP draft's layout without mask slots or conditioning, exported as vLLM's own speculators type
"eagle3". vLLM drafts with it sequentially: the context slots give d_1, then step j reads (the pre-norm output state
that predicted d_{j-1}, the embedding of d_{j-1}) at the next position, attending to the context's KV and its own
earlier steps. Training unrolls exactly that on the PTP examples' anchors: the anchor's context slot is step 1, and
its K-1 slot rows are steps 2..K, each reading the teacher token (the one a greedy draft must have drafted for the
step to matter) and the draft's own state from the step before. Targets, loss (CE at the sequence's temperature or
KL), held-out metrics and the training loop are train_ptp's.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from vllm_ptp.models.ptp_config import EAGLE3_TYPE, PTPConfig
from vllm_ptp.models.ptp_draft import PTPDraft
from vllm_ptp.training.ptp_data import PTPTeacherData
from vllm_ptp.training.train_ptp import Batch, SlotTrainArgs, card_details, train_slot_draft, vllm_serving


@dataclass
class Eagle3TrainArgs(SlotTrainArgs):
    """`slots` is the number of unrolled drafting steps (training-time test), the k the draft is trained for."""


def unrolled_states(model: PTPDraft, batch: Batch) -> torch.Tensor:
    """Training-time test -> normed states [B, C+M, H] in the batch's row order (context rows, then the slot rows
    of each anchor). The context rows run once, causally, filling a KV cache; then one pass per step m = 1..K-1 with
    one row per anchor, which attends to the cache (the context up to its anchor, the anchor's earlier steps)."""
    B, C = batch.ctx_tokens.shape
    M = batch.mask_positions.shape[1]
    K1 = model.config.num_slots - 1
    caches = [{} for _ in model.layers]
    context = model.prenorm_states(model.fc(batch.hidden_aux), batch.ctx_tokens, batch.ctx_positions,
                                   batch.allowed[:, :C, :C], caches)
    keys = torch.arange(C, device=context.device)  # batch rows in the caches' order
    steps = []
    for m in range(1, K1 + 1):
        cols = torch.arange(m - 1, M, K1, device=context.device)  # slot m of every anchor
        if m == 1:  # the state that predicted the step's token: the anchor's context row
            source = batch.u_source_row[:, cols]
            state = context.gather(1, source[..., None].expand(-1, -1, context.shape[-1]))
        else:  # slot m-1 of the same anchor: the previous step, same order
            state = steps[-1]
        rows = C + cols
        keys = torch.cat([keys, rows])
        steps.append(model.prenorm_states(state, batch.slot_tokens[:, cols], batch.mask_positions[:, cols],
                                          batch.allowed[:, rows][:, :, keys], caches))
    slots = torch.stack(steps, dim=2).view(B, M, -1) if steps else context[:, :0]
    return model.norm(torch.cat([context, slots], dim=1))


def train_eagle3(args: Eagle3TrainArgs) -> Path:
    args.check()

    def states(model: PTPDraft, batch: Batch, teacher_head: torch.Tensor, g: torch.Generator,
               evaluating: bool) -> torch.Tensor:
        return unrolled_states(model, batch)

    return train_slot_draft(args, {"speculators_type": EAGLE3_TYPE}, states, model_card,
                            f"train eagle3 k={args.slots}")


def model_card(args: Eagle3TrainArgs, config: PTPConfig, final: dict, coverage: float, data: PTPTeacherData) -> str:
    K = config.num_slots
    return (f"# EAGLE-3 draft (sequential drafting, speculators type `eagle3`), trained for k = {K}\n\n"
            f"The EAGLE-3 baseline: one draft forward per drafted token, k forwards per step.\n\n"
            f"{vllm_serving(config, parallel=False)}\n"
            + card_details(args, config, final, coverage, data,
                           "no mask slots (step j reads the pre-norm state and token of step j-1)",
                           f", training-time test over {K} unrolled steps (teacher tokens, the draft's own states)"))
