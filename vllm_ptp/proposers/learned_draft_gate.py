"""hybrid_draft_max_batch_size "auto": whether the learned draft drafts in a step, decided by the clock.

With the hybrid mode a step can draft the context matches alone (as vLLM's ngram does) or the matches and the
learned draft for the requests without one. Which is faster depends on the batch and the machine: at batch 1 the
learned draft's tokens come nearly free, while where the target is compute-bound (large batches; on two CPU cores
already at 8) its forward and its verified tokens can cost more than they earn. A fixed limit is right for one
machine and one workload; this gate measures instead. For each range of batch sizes (1, 2-3, 4-7, 8-15, ... requests,
as verify_cost) it runs TRIAL_STEPS decode steps with the learned draft and TRIAL_STEPS without, keeps whichever made
more tokens per second for HOLD_STEPS steps, then tries both again (the workload changes).

A step's time runs from the end of one drafting to the end of the next, and its tokens are those its verification
accepted: both belong to the drafts of the step before, so a step is counted for the way that drafting went. A
range that has just changed its way leaves out the step that verifies the old way's drafts. The two ways take turns
at going first, trial after trial, so that neither always meets the shorter contexts.

Lossless: the choice depends on wall times and token counts of earlier steps, never on the target's distribution in
the step it drafts for.
"""
from __future__ import annotations

import collections
import time
from dataclasses import dataclass

TRIAL_STEPS = 8  # counted steps per way and trial
HOLD_STEPS = 128  # steps the faster way is kept before the next trial


class LearnedDraftGate:
    """Fed every step (step()) after the runner drafted; answers drafts_learned() for the next drafting."""

    def __init__(self, clock=time.perf_counter):
        self.clock = clock
        self.ranges: dict[int, _Range] = collections.defaultdict(_Range)
        self._last_end: float | None = None
        self._last_way: bool | None = None  # whether the last drafting used the learned draft

    def drafts_learned(self, requests: int) -> bool:
        return self.ranges[_key(requests)].way

    def step(self, decode_only: bool, requests: int, new_tokens: int, learned: bool) -> None:
        """Called as drafting ends. decode_only: the step verified drafts and computed nothing else (no prefill);
        requests: requests in it; new_tokens: tokens it added to the requests' outputs; learned: whether the
        drafting that just ended used the learned draft."""
        now = self.clock()
        if self._last_end is not None and decode_only and requests > 0:
            self.ranges[_key(requests)].add(self._last_way, new_tokens, now - self._last_end)
        self._last_end, self._last_way = now, learned

    def describe(self) -> str:
        return "; ".join(f"{2 ** (key - 1)}-{2 ** key - 1} requests: {r.describe()}"
                         for key, r in sorted(self.ranges.items())) or "no decode steps yet"


def _key(requests: int) -> int:
    return max(requests, 1).bit_length()


@dataclass
class _Tally:
    steps: int = 0
    seconds: float = 0.0
    tokens: int = 0

    @property
    def tokens_per_second(self) -> float:
        return self.tokens / self.seconds if self.seconds > 0 else 0.0


class _Range:
    """The trials and the choice for one range of batch sizes: a trial of each way, then the faster way held."""

    def __init__(self):
        self.way = True  # the learned draft drafts
        self.first_way = True  # the way the current (or last) trial began with
        self.trial: dict[bool, _Tally] | None = {True: _Tally(), False: _Tally()}  # None while a way is held
        self.held = 0
        self.rates: dict[bool, float] = {}  # tokens per second of each way in the last trial

    def add(self, learned: bool, tokens: int, seconds: float) -> None:
        """A counted step of this range, whose verified drafts were drafted with the learned draft or without."""
        if self.trial is None:
            self.held += 1
            if self.held >= HOLD_STEPS:
                self.first_way = not self.first_way
                self.trial, self.held, self.way = {True: _Tally(), False: _Tally()}, 0, self.first_way
            return
        if learned != self.way:
            return  # drafted before this range's trial changed way
        tally = self.trial[learned]
        tally.steps, tally.seconds, tally.tokens = tally.steps + 1, tally.seconds + seconds, tally.tokens + tokens
        if tally.steps < TRIAL_STEPS:
            return
        if self.trial[not learned].steps == 0:  # the other way's turn
            self.way = not learned
            return
        self.rates = {way: t.tokens_per_second for way, t in self.trial.items()}
        self.way = self.rates[True] > self.rates[False]
        self.trial = None

    def describe(self) -> str:
        if self.trial is not None:
            return "on trial" + (f" (last: {self._rates()})" if self.rates else "")
        return f"learned draft {'on' if self.way else 'off'} ({self._rates()}, last trial)"

    def _rates(self) -> str:
        return f"{self.rates[True]:.1f} tokens/s with the learned draft, {self.rates[False]:.1f} without"
