"""Verify only the draft positions the draft is sure enough of (speculative_config "min_draft_confidence").

Every verified draft position costs the target one more token of compute; a learned draft of a small target is
accepted at position 1 in about 40% of steps and beyond it rarely, so most of that compute is spent on tokens that
are rejected. The draft knows when it is unsure: on held-out greedy text the shipped PTP draft's top probability in
slot 1 is well calibrated (top probability 0.1-0.2: accepted 26%; 0.5-0.7: 73%; above 0.9: 99%).

A position j is kept while the chained confidence c_1 * ... * c_j (the draft's estimate that positions 1..j are all
accepted) is at least the threshold; the first position below it ends the row's draft. c_i is the draft's top
probability in slot i, at the request's temperature (at 1 for greedy requests: their processed distribution is
one-hot) and before top-k / top-p. A position the hybrid mode filled from a context match has no top probability:
its c is the acceptance rate measured for matched positions like it (match_acceptance), and a matched row may fall
back to the learned draft where that is worth more (keep_confident).

Lossless: whether a position is verified depends only on the draft's own distributions, never on the target, and
each kept position is still a pick from the distribution handed to the rejection sampler.
"""
from __future__ import annotations

import itertools
import operator

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


def keep_confident(learned: list[list[int]], confidence: torch.Tensor | None, matches: list[list[int]],
                   match_rates: list[list[float]], threshold: float) -> tuple[list[list[int]], list[int]]:
    """learned: each row's learned draft ([] where it drafted none), confidence [B, >= K] its top probabilities
    (None: no row was drafted), matches: each row's context match ([] for none), match_rates: each matched row's
    acceptance rate by position (match_acceptance) -> each row's draft, cut before its first position whose chained
    confidence is below the threshold, and how many of its leading positions are matched.

    A row with a match has two drafts to offer: the match or the learned draft. Each kept position earns its chained
    confidence P in expected tokens and costs the threshold (C = b * r under "auto": a verified token's time, in
    tokens). The choice may not depend on the learned draft's picks, nor on its confidence past slot 1 (a PTP
    draft's slot j is conditioned on the u's of the slots before it): a learned draft offered only for some of its
    picks would no longer be a pick from the distribution handed to the rejection sampler. So the match's worth
    (the sum of P - C over the positions its rates keep) is weighed against the learned draft's first slot alone
    (c_1 - C); a tie goes to the match. Where the whole match is kept and the learned draft had picked the same
    tokens, its learned positions follow."""
    rows = confidence.tolist() if confidence is not None else [[0.0] * len(own) for own in learned]
    drafts, matched = [], []
    for own, conf, match, rates in zip(learned, rows, matches, match_rates):
        chain = list(itertools.accumulate(rates[:len(match)], operator.mul))
        n = next((j for j, p in enumerate(chain) if p < threshold), len(chain))  # matched positions kept
        worth = sum(p - threshold for p in chain[:n])
        if match and worth >= (conf[0] - threshold if own else 0.0):
            learned_after = own[n:] if n == len(match) and own[:n] == match else []
            drafts.append(match[:n] + _cut(learned_after, conf[n:], chain[n - 1] if n else 1.0, threshold))
            matched.append(n)
        else:
            drafts.append(_cut(own, conf, 1.0, threshold))
            matched.append(0)
    return drafts, matched


def _cut(draft: list[int], conf: list[float], chain: float, threshold: float) -> list[int]:
    """Learned positions, after positions accepted with probability `chain` -> those up to the first whose chained
    confidence is below the threshold."""
    n = 0
    for c in conf[:len(draft)]:
        chain *= c
        if chain < threshold:
            break
        n += 1
    return draft[:n]
