"""Training examples for heads on the target's final state (Medusa, CP), from the PTP teacher data.

Example i is a position t of a teacher sequence whose state produced a completion token: the heads read the final
state h_t and, for CP, the embedding of the token x_(t+1) it produced, and draft x_(t+2), x_(t+3), ... (labels, one
per head; PAST_END beyond the sequence).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from vllm_ptp.training.ptp_data import PTPTeacherData

PAST_END = -1


@dataclass
class HeadExamples:
    positions: torch.Tensor  # [N] into the teacher's token stream
    labels: torch.Tensor     # [N, heads] token ids, PAST_END beyond the sequence
    greedy: torch.Tensor     # [N] the sequence was sampled at temperature 0


def build_head_examples(data: PTPTeacherData, sequences: torch.Tensor, heads: int) -> HeadExamples:
    positions, ends, greedy = [], [], []
    for s in sequences.tolist():
        start, end = int(data.starts[s]), int(data.starts[s + 1])
        first = start + int(data.prompt_lens[s]) - 1  # its state produced the first completion token
        p = torch.arange(first, end - 1)
        positions.append(p)
        ends.append(torch.full_like(p, end))
        greedy.append(torch.full((len(p),), bool(data.temperatures[s] <= 0)))
    positions, ends = torch.cat(positions), torch.cat(ends)
    target = positions[:, None] + 2 + torch.arange(heads)[None, :]
    inside = target < ends[:, None]
    labels = torch.where(inside, data.tokens[target.clamp(max=len(data.tokens) - 1)], torch.full_like(target, PAST_END))
    return HeadExamples(positions, labels, torch.cat(greedy))
