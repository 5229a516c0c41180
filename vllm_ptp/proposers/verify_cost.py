"""min_draft_confidence "auto": the confidence cut that maximises tokens per second, from this engine's own steps.

A verified draft position costs the target b seconds more in its step and earns P tokens on average (P: its chained
confidence, the draft's estimate that it is accepted). The engine makes r tokens per second. Keeping the position
raises tokens per second exactly when P / b > r, so the best cut is

    threshold = b * r

b differs from machine to machine and day to day (on two CPU cores a verified token cost 2-30% of a plain step on
different days), and grows with the batch, where the target turns compute-bound: one fixed cut is wrong somewhere.
Both are measured here on the engine's decode steps: b is the slope of the step's wall time in the number of draft
tokens it verified (a least-squares fit of the median times of each (requests, drafts) pair over a window of recent
steps; the median ignores the odd step a collector or another process stretched), r the tokens those steps made per
second, both apart for batches of 1, 2-3, 4-7, 8-15, ... requests.

Lossless: the cut depends on wall times and the draft's own distributions, never on the target's.
"""
from __future__ import annotations

import collections
import statistics
import time

import numpy as np

START_THRESHOLD = 0.1  # until the window holds steps with different numbers of drafts
MIN_THRESHOLD, MAX_THRESHOLD = 0.01, 0.9  # below 0.9 some drafts stay verified, so b stays measurable
WINDOW_STEPS = 256  # per range of batch sizes
MIN_STEPS_PER_POINT = 3
REFIT_EVERY = 8  # steps; a fit reads the whole window


class VerifyCost:
    """Fed every step's wall time (start of one drafting to the start of the next: the target's step verifying the
    drafts, its sampling, the scheduler and the drafting itself) with what the step computed; gives the cut for a
    step of so many requests. Batches of 1, 2-3, 4-7, 8-15, ... requests are fitted apart: a verified token costs
    more where the target is compute-bound, and the tokens per second differ."""

    def __init__(self, clock=time.perf_counter):
        self.clock = clock
        self.buckets: dict[int, BatchCost] = collections.defaultdict(BatchCost)
        self._last_start: float | None = None

    def step(self, decode_only: bool, requests: int, draft_tokens: int, new_tokens: int) -> None:
        """Called as drafting starts. decode_only: the step that just ran verified drafts and computed nothing
        else (no prefill: its time is then a function of requests and drafts); requests: requests in it;
        draft_tokens: draft tokens it verified; new_tokens: tokens it added to the requests' outputs."""
        now = self.clock()
        if self._last_start is not None and decode_only and requests > 0:
            self.buckets[requests.bit_length()].add((requests, draft_tokens, new_tokens, now - self._last_start))
        self._last_start = now

    def threshold(self, requests: int) -> float:
        bucket = self.buckets.get(max(requests, 1).bit_length())
        return START_THRESHOLD if bucket is None else bucket.threshold

    def describe(self) -> str:
        return "; ".join(f"{2 ** (key - 1)}-{2 ** key - 1} requests: {bucket.describe()}"
                         for key, bucket in sorted(self.buckets.items())) or "no decode steps yet"


class BatchCost:
    """The fit for steps of one range of batch sizes."""

    def __init__(self):
        self.steps: collections.deque = collections.deque(maxlen=WINDOW_STEPS)
        self.threshold = START_THRESHOLD
        self.slope_seconds: float | None = None  # b
        self.tokens_per_second: float | None = None  # r
        self._seen = 0

    def add(self, step: tuple[int, int, int, float]) -> None:
        self.steps.append(step)
        self._seen += 1
        if self._seen % REFIT_EVERY == 0:
            self._refit()

    def describe(self) -> str:
        if self.slope_seconds is None:
            return f"{self.threshold:.3f} (the starting value: no steps with different numbers of drafts yet)"
        return (f"{self.threshold:.3f} (a verified draft token costs {1000 * self.slope_seconds:.2f} ms of a step; "
                f"{self.tokens_per_second:.1f} tokens/s over the last {len(self.steps)} decode steps)")

    def _refit(self) -> None:
        points = collections.defaultdict(list)
        for requests, drafts, _, seconds in self.steps:
            points[(requests, drafts)].append(seconds)
        points = {key: times for key, times in points.items() if len(times) >= MIN_STEPS_PER_POINT}
        if len({drafts for _, drafts in points}) < 2:
            return
        keys = list(points)
        weights = np.sqrt([len(points[key]) for key in keys])
        features = np.array([[1.0, requests, drafts] for requests, drafts in keys]) * weights[:, None]
        times = np.array([statistics.median(points[key]) for key in keys]) * weights
        # min-norm least squares: a constant batch leaves the per-request term confounded with the fixed one,
        # which does not touch the slope in drafts
        self.slope_seconds = float(np.linalg.lstsq(features, times, rcond=None)[0][2])
        self.tokens_per_second = sum(step[2] for step in self.steps) / sum(step[3] for step in self.steps)
        self.threshold = min(max(self.slope_seconds * self.tokens_per_second, MIN_THRESHOLD), MAX_THRESHOLD)
