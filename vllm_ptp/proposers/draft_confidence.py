"""Verify only the draft positions the draft is sure enough of (speculative_config "min_draft_confidence").

Every verified draft position costs the target one more token of compute; a learned draft of a small target is
accepted at position 1 in about 40% of steps and beyond it rarely, so most of that compute is spent on tokens that
are rejected. The draft knows when it is unsure: on held-out greedy text the shipped PTP draft's top probability in
slot 1 is well calibrated (top probability 0.1-0.2: accepted 26%; 0.5-0.7: 73%; above 0.9: 99%).

A position j is kept while the chained confidence c_1 * ... * c_j (the draft's estimate that positions 1..j are all
accepted) is at least the threshold; the first position below it ends the row's draft. c_i is the draft's top
probability in slot i, at the request's temperature (at 1 for greedy requests: their processed distribution is
one-hot) and before top-k / top-p. A position the hybrid mode filled from a context match is always kept; it counts
as c = 1 if the learned draft had picked the same token there, else 0, since the learned positions after it were
drafted on the learned draft's own tokens.

Lossless: whether a position is verified depends only on the draft's own distributions, never on the target, and
each kept position is still a pick from the distribution handed to the rejection sampler.
"""
from __future__ import annotations

import torch


def top_probability(logits: torch.Tensor, temperature: torch.Tensor | None) -> torch.Tensor:
    """logits [N, V], per-row temperature [N] (None or <= 0: greedy, read at 1) -> the top probability [N]."""
    scale = torch.ones(logits.shape[0], device=logits.device) if temperature is None else \
        torch.where(temperature > 0, temperature.float(), 1.0)
    return (logits.float() / scale[:, None]).softmax(-1).amax(-1)


AUTO = "auto"  # the cut measured on the engine's own steps (verify_cost)


def check_threshold(value) -> float | str | None:
    """speculative_config.min_draft_confidence -> the threshold, "auto", or None when unset; one ValueError
    otherwise."""
    if value is None or value == AUTO:
        return value
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < 1:
        raise ValueError(f"speculative_config.min_draft_confidence: expected a number in (0, 1), the chained top "
                         f"probability below which a draft stops, or \"{AUTO}\" (the cut that maximises tokens "
                         f"per second, measured while serving), got {value!r}")
    return float(value)


def keep_confident(drafts: list[list[int]], learned: list[list[int]], confidence: torch.Tensor,
                   matched: list[int], threshold: float) -> list[list[int]]:
    """drafts: each row's final draft (matched tokens first), learned: the learned draft's own picks, confidence
    [B, K] its top probabilities, matched: how many leading positions of each row came from a context match
    -> each row's draft cut before its first position whose chained confidence is below the threshold."""
    kept = []
    for row, (draft, own, conf) in enumerate(zip(drafts, learned, confidence.tolist())):
        chain, n = 1.0, 0
        for j, token in enumerate(draft):
            if j < matched[row]:
                chain *= float(j < len(own) and own[j] == token)
            else:
                chain *= conf[j]
                if chain < threshold:
                    break
            n = j + 1
        kept.append(draft[:n])
    return kept
