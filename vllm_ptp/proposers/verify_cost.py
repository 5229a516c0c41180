"""min_draft_confidence "auto": the confidence cut that maximises tokens per second, from this engine's own steps.

A verified draft position costs the target b seconds more in its step and earns P tokens on average (P: its chained
confidence, the draft's estimate that it is accepted). The engine makes r tokens per second. Keeping the position
raises tokens per second exactly when P / b > r, so the best cut is

    threshold = b * r

b differs from machine to machine and day to day (on two CPU cores a verified token cost 2-30% of a plain step on
different days), and grows with the batch, where the target turns compute-bound: one fixed cut is wrong somewhere.
Both are measured here on the engine's decode steps: b is the slope of the step's wall time in the number of draft
tokens it verified (least squares in drafts and requests over a window of recent steps, fitted a second time
without the steps it fits worst: the odd step a collector or another process stretched), r the tokens those steps
made per second (decode steps only: prefill time is not in it), both apart for batches of 1, 2-3, 4-7, 8-15, ...
requests.

Lossless: the cut depends on wall times and the draft's own distributions, never on the target's.
"""
from __future__ import annotations

import collections
import time

import numpy as np

START_THRESHOLD = 0.1  # until some window holds steps with different numbers of drafts
MIN_THRESHOLD, MAX_THRESHOLD = 0.01, 0.9  # below 0.9 some drafts stay verified, so b stays measurable
WINDOW_STEPS = 256  # per range of batch sizes
MIN_STEPS = 16
OUTLIER_SPREADS = 4.0  # residuals beyond this many robust standard deviations leave the fit
REFITS = 2
REFIT_EVERY = 8  # steps; a fit reads the whole window


class VerifyCost:
    """Fed every step's wall time (the end of one drafting to the end of the next: the scheduler, the target's step
    verifying the drafts, its sampling, and the drafting after it, whose cost may grow with the tokens verified too)
    with what the step computed; gives the cut for a step of so many requests. Batches of 1, 2-3, 4-7, 8-15, ...
    requests are fitted apart: a verified token costs more where the target is compute-bound, and the tokens per
    second differ."""

    def __init__(self, clock=time.perf_counter):
        self.clock = clock
        self.buckets: dict[int, BatchCost] = collections.defaultdict(BatchCost)
        self._last_end: float | None = None

    def step(self, decode_only: bool, requests: int, draft_tokens: int, new_tokens: int) -> None:
        """Called as drafting ends. decode_only: the step verified drafts and computed nothing else (no prefill: its
        time is then a function of requests and drafts); requests: requests in it; draft_tokens: draft tokens it
        verified; new_tokens: tokens it added to the requests' outputs."""
        now = self.clock()
        if self._last_end is not None and decode_only and requests > 0:
            self.buckets[requests.bit_length()].add((requests, draft_tokens, new_tokens, now - self._last_end))
        self._last_end = now

    def threshold(self, requests: int) -> float:
        """The cut for a step of this many requests; a range of batch sizes without a fit yet borrows the nearest
        fitted range's (a batch reaches each smaller range as its requests finish, briefly)."""
        key = max(requests, 1).bit_length()
        fitted = [k for k, bucket in self.buckets.items() if bucket.slope_seconds is not None]
        if not fitted:
            return START_THRESHOLD
        return self.buckets[min(fitted, key=lambda k: (abs(k - key), -k))].threshold

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
            return "no fit yet (no steps with different numbers of drafts): the nearest fitted range's cut, or 0.1"
        return (f"{self.threshold:.3f} (a verified draft token costs {1000 * self.slope_seconds:.2f} ms of a step; "
                f"{self.tokens_per_second:.1f} tokens/s over the last {len(self.steps)} decode steps)")

    def _refit(self) -> None:
        steps = np.array(self.steps, dtype=np.float64)  # requests, drafts, new tokens, seconds
        requests, drafts, tokens, seconds = steps.T
        if len(steps) < MIN_STEPS or np.unique(drafts).size < 2:
            # Nothing tells what a draft token costs (a cut so high that no draft is verified, say): start over,
            # so that drafts are verified again and measured.
            self.threshold, self.slope_seconds, self.tokens_per_second = START_THRESHOLD, None, None
            return
        columns = [np.ones_like(drafts), drafts] + ([requests] if np.unique(requests).size > 1 else [])
        features = np.stack(columns, axis=1)
        # least squares, twice refitted without the steps it fits worst (stretched by a collector or another
        # process); the spread of the residuals is measured over every step, robustly
        inliers = np.ones(len(steps), dtype=bool)
        for _ in range(REFITS):
            fit = np.linalg.lstsq(features[inliers], seconds[inliers], rcond=None)[0]
            residual = seconds - features @ fit
            deviation = np.abs(residual - np.median(residual))
            inliers = deviation <= OUTLIER_SPREADS * 1.4826 * np.median(deviation) + 1e-9
        if np.unique(drafts[inliers]).size < 2:
            return
        fit = np.linalg.lstsq(features[inliers], seconds[inliers], rcond=None)[0]
        self.slope_seconds = float(fit[1])
        self.tokens_per_second = float(tokens[inliers].sum() / seconds[inliers].sum())
        self.threshold = min(max(self.slope_seconds * self.tokens_per_second, MIN_THRESHOLD), MAX_THRESHOLD)
