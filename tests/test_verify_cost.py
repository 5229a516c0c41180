"""min_draft_confidence "auto": the cut is the measured cost of a verified draft token times the tokens per second."""
import random
from types import SimpleNamespace

import pytest
import torch

from vllm_ptp.proposers.verify_cost import MAX_THRESHOLD, MIN_THRESHOLD, START_THRESHOLD, VerifyCost
from vllm_ptp.vllm_integration.runner import count_new_tokens, step_summary


class FakeClock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


def run_steps(cost: VerifyCost, clock: FakeClock, steps: int, seconds, requests=lambda: 1, seed=0):
    """Decode steps of random numbers of drafts, each taking seconds(requests, drafts, rng)."""
    rng = random.Random(seed)
    cost.step(True, 1, 0, 1)
    for _ in range(steps):
        batch = requests()
        drafts = sum(rng.randint(0, 3) for _ in range(batch))
        made = batch + rng.randint(0, drafts)
        clock.now += seconds(batch, drafts, rng)
        cost.step(True, batch, drafts, made)
    return cost


def test_the_cut_is_the_slope_times_the_throughput():
    clock = FakeClock()
    cost = VerifyCost(clock)
    run_steps(cost, clock, 400, lambda batch, drafts, rng: 0.1 + 0.02 * drafts)
    window = list(cost.buckets[1].steps)
    rate = sum(s[2] for s in window) / sum(s[3] for s in window)
    assert cost.buckets[1].slope_seconds == pytest.approx(0.02, rel=1e-6)
    assert cost.threshold(1) == pytest.approx(0.02 * rate, rel=1e-6)
    assert 0.1 < cost.threshold(1) < 0.5
    assert cost.threshold(8) == cost.threshold(1)  # no step of 8-15 requests yet: the nearest fitted range's


def test_stretched_steps_and_prefills_move_neither_the_slope_nor_the_throughput():
    clock = FakeClock()
    cost = VerifyCost(clock)
    # one step in ten stretched fivefold (a collector, another process): the second fit leaves them out
    run_steps(cost, clock, 400, lambda batch, drafts, rng: (0.1 + 0.01 * drafts) * (5 if rng.random() < 0.1 else 1))
    before = cost.buckets[1].slope_seconds
    clock.now += 30.0  # a long prefill: not a decode step, so not in the fit
    cost.step(False, 1, 0, 1)
    assert cost.buckets[1].slope_seconds == before == pytest.approx(0.01, rel=1e-6)
    window = cost.buckets[1].steps
    assert all(step[3] < 1.0 for step in window)
    unstretched = [step for step in window if step[3] < 0.2]
    assert len(unstretched) < len(window)
    rate = sum(step[2] for step in unstretched) / sum(step[3] for step in unstretched)
    assert cost.threshold(1) == pytest.approx(0.01 * rate, rel=1e-6)


def test_the_batch_size_is_not_taken_for_the_drafts_and_batch_ranges_are_fitted_apart():
    clock = FakeClock()
    cost = VerifyCost(clock)
    sizes = iter([1, 4, 5, 6, 7] * 400)
    per_draft = {1: 0.01, 4: 0.03, 5: 0.03, 6: 0.03, 7: 0.03}  # dearer in a larger batch (compute-bound)
    run_steps(cost, clock, 1500, lambda batch, drafts, rng: 0.05 + 0.03 * batch + per_draft[batch] * drafts,
              requests=lambda: next(sizes))
    assert cost.buckets[1].slope_seconds == pytest.approx(0.01, rel=1e-6)
    assert cost.buckets[3].slope_seconds == pytest.approx(0.03, rel=1e-6)
    assert cost.threshold(6) > cost.threshold(1)
    assert cost.threshold(12) == cost.threshold(2) == cost.threshold(6)  # between two: the larger's


def test_the_start_value_holds_until_the_drafts_vary_and_the_cut_stays_in_bounds():
    clock = FakeClock()
    cost = VerifyCost(clock)
    cost.step(True, 1, 3, 1)
    for _ in range(100):  # every step verifies 3 drafts: nothing tells what one draft token costs
        clock.now += 0.1
        cost.step(True, 1, 3, 2)
    assert cost.threshold(1) == START_THRESHOLD and cost.buckets[1].slope_seconds is None
    assert "no fit yet" in cost.describe()
    free = run_steps(VerifyCost(clock), clock, 200, lambda batch, drafts, rng: 0.1 - 0.001 * drafts)
    assert free.threshold(1) == MIN_THRESHOLD
    dear = run_steps(VerifyCost(clock), clock, 200, lambda batch, drafts, rng: 0.1 + 0.5 * drafts)
    assert dear.threshold(1) == MAX_THRESHOLD
    assert "ms of a step" in dear.describe()


def test_a_cut_that_stops_every_draft_starts_over():
    clock = FakeClock()
    cost = run_steps(VerifyCost(clock), clock, 200, lambda batch, drafts, rng: 0.1 + 0.5 * drafts)
    assert cost.threshold(1) == MAX_THRESHOLD
    for _ in range(300):  # no draft is sure enough any more: nothing left to measure a draft token by
        clock.now += 0.1
        cost.step(True, 1, 0, 1)
    assert cost.threshold(1) == START_THRESHOLD


def test_a_step_is_summarised_from_what_the_scheduler_scheduled():
    decode = SimpleNamespace(num_scheduled_tokens={"a": 4, "b": 1, "c": 2},
                             scheduled_spec_decode_tokens={"a": [5, 6, 7], "c": [8]})
    assert step_summary(decode) == (True, 3, 4)
    # "d" is in a prefill chunk (a 1-token chunk would pass for a decode step: the only misreading)
    mixed = SimpleNamespace(num_scheduled_tokens={"a": 4, "d": 9}, scheduled_spec_decode_tokens={"a": [5, 6, 7]})
    assert step_summary(mixed) == (False, 2, 3)
    assert count_new_tokens([[1, 2], [], [3]]) == 3
    assert count_new_tokens(torch.tensor([[1, 2, -1], [3, -1, -1]])) == 3  # -1: rejected slots
