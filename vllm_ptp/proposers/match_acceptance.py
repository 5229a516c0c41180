"""How often the hybrid's context-matched draft positions are accepted, counted on the engine's own steps.

A context match carries no probability, so min_draft_confidence could not weigh it: every matched position was
verified, as vLLM's ngram verifies them. On two CPU cores a verified position pays only when it is accepted about
half the time, and ngram's matches on chat were accepted at 0.62 / 0.45 / 0.35 by position (T = 0): the later
positions cost about what they earn. Here each matched position gets the acceptance rate measured for positions
like it, which then stands in for the draft's confidence.

Positions are told apart by what predicts their acceptance: the position in the draft (1..k), and the length of
the suffix that matched. On the embedded default's greedy text (48 held-out prompts, k = 3) a 4-token match was
accepted through positions 1 / 2 / 3 at 0.85-0.89 / 0.71-0.74 / 0.65-0.73, a 2-token one at 0.55 / 0.32-0.35 / 0.21:
the first mostly pays whole, the second mostly only in its first position.

Counts start at PRIOR_DRAFTS drafts accepted whole (every match is verified whole until the counts say otherwise)
and decay with a half-life of HALF_LIFE_DRAFTS drafts of their suffix length, so the rates follow a workload that
changes. A position the cut drops is no longer verified, so no longer measured: every EXPLORE_EVERY-th draft of a
suffix length is offered whole (rates of 1), which keeps every position measured at a small cost.

Lossless: a draft's length depends on what earlier steps accepted, never on the target's output for the step that
verifies it.
"""
from __future__ import annotations

import numpy as np

PRIOR_DRAFTS = 2.0
HALF_LIFE_DRAFTS = 500.0
EXPLORE_EVERY = 16


class MatchAcceptance:
    """Per matched suffix length, the rate at which each draft position is accepted when every position before it
    was."""

    def __init__(self, k: int):
        self.k = k
        self._reached: dict[int, np.ndarray] = {}
        self._accepted: dict[int, np.ndarray] = {}
        self._verifying: dict[str, tuple[int, list[int]]] = {}  # request -> suffix length, its draft's matched tokens
        self._offered: dict[int, int] = {}

    def rates(self, suffix: int) -> list[float]:
        """Position j's acceptance rate, given positions 1..j-1 were accepted, for matches of this suffix
        length."""
        reached, accepted = self._counts(suffix)
        return (accepted / reached).tolist()

    def rates_to_offer(self, suffix: int) -> list[float]:
        """The rates a new match of this suffix length is cut by: its measured rates, or 1s for one in
        EXPLORE_EVERY (the positions a cut drops stay measured)."""
        self._offered[suffix] = self._offered.get(suffix, 0) + 1
        return [1.0] * self.k if self._offered[suffix] % EXPLORE_EVERY == 0 else self.rates(suffix)

    def verified(self, request: str, draft_tokens: list[int], new_tokens: int) -> None:
        """A step verified `draft_tokens` of this request and added `new_tokens` to it (accepted + 1): counts the
        matched positions of its last draft. Drafts the runner did not make (vLLM skips the drafter in some steps)
        are not counted."""
        suffix, matched_tokens = self._verifying.pop(request, (0, []))
        matched = min(len(matched_tokens), len(draft_tokens))
        if matched == 0 or new_tokens == 0 or list(draft_tokens[:matched]) != matched_tokens[:matched]:
            return
        accepted = min(new_tokens - 1, matched)
        reached_counts, accepted_counts = self._counts(suffix)
        decay = 0.5 ** (1.0 / HALF_LIFE_DRAFTS)
        reached_counts *= decay
        accepted_counts *= decay
        reached_counts[:min(accepted + 1, matched)] += 1.0
        accepted_counts[:accepted] += 1.0

    def drafted(self, request: str, suffix: int, matched_tokens: list[int]) -> None:
        """This step's draft of `request` leads with these tokens of a match of this suffix length."""
        if matched_tokens:
            self._verifying[request] = (suffix, [int(t) for t in matched_tokens])
        else:
            self._verifying.pop(request, None)

    def forget(self, live_requests) -> None:
        """Drops what is kept for requests that have finished."""
        live = set(live_requests)
        for request in [r for r in self._verifying if r not in live]:
            del self._verifying[request]

    def _counts(self, suffix: int) -> tuple[np.ndarray, np.ndarray]:
        if suffix not in self._reached:
            self._reached[suffix] = np.full(self.k, PRIOR_DRAFTS)
            self._accepted[suffix] = np.full(self.k, PRIOR_DRAFTS)
        return self._reached[suffix], self._accepted[suffix]

    def describe(self) -> str:
        """Each suffix length's chained rates: the estimate that positions 1..j are all accepted."""
        return "; ".join(f"{suffix}-token matches " + " / ".join(f"{r:.2f}" for r in np.cumprod(self.rates(suffix)))
                         for suffix in sorted(self._reached)) or "no matches verified yet"
