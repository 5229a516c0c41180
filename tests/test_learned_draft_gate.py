"""hybrid_draft_max_batch_size "auto": per range of batch sizes, a trial with the learned draft and one without,
then the faster way held, then trials again (the other way first); a step counts for the way its verified drafts
were drafted, and prefills count for nothing."""
from vllm_ptp.proposers import learned_draft_gate
from vllm_ptp.proposers.learned_draft_gate import HOLD_STEPS, TRIAL_STEPS, LearnedDraftGate


class Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


def run_steps(gate, clock, steps, seconds, tokens=10):
    """Decode steps, each of `requests` from the list `steps`, drafting the way the gate says; a step lasts
    seconds[requests][way of the drafts it verifies]. Returns the way each step drafted."""
    ways, last = [], gate._last_way
    for requests in steps:
        way = gate.drafts_learned(requests)
        clock.now += seconds[requests][last]
        gate.step(True, requests, tokens, way)
        ways.append(way)
        last = way
    return ways


def started(requests=8):
    clock = Clock()
    gate = LearnedDraftGate(clock)
    gate.step(True, requests, 0, True)  # the first drafting: no step before it to time
    return gate, clock


SLOWER_WITH = {8: {True: 0.02, False: 0.01}}
FASTER_WITH = {8: {True: 0.01, False: 0.02}}


def test_the_faster_way_is_held_after_a_trial_of_each():
    gate, clock = started()
    ways = run_steps(gate, clock, [8] * (2 * TRIAL_STEPS + 1 + 20), SLOWER_WITH)
    # TRIAL_STEPS with; one step verifying the last drafts made with it (not counted); TRIAL_STEPS without; held
    assert ways[:TRIAL_STEPS] == [True] * TRIAL_STEPS
    assert ways[TRIAL_STEPS:2 * TRIAL_STEPS + 1] == [False] * (TRIAL_STEPS + 1)
    assert not any(ways[2 * TRIAL_STEPS + 1:])
    assert gate.describe() == ("8-15 requests: learned draft off (500.0 tokens/s with the learned draft, 1000.0 "
                               "without, last trial)")

    gate, clock = started()
    ways = run_steps(gate, clock, [8] * (2 * TRIAL_STEPS + 1 + 20), FASTER_WITH)
    assert all(ways[2 * TRIAL_STEPS + 1:]), "the learned draft, faster here, comes back after its trial"


def test_trials_come_again_after_the_hold_the_other_way_first():
    gate, clock = started()
    run_steps(gate, clock, [8] * (2 * TRIAL_STEPS + 1), SLOWER_WITH)
    assert not gate.drafts_learned(8)
    # the workload changes and the learned draft now pays: a new trial after the hold finds it
    ways = run_steps(gate, clock, [8] * (HOLD_STEPS + 2 * TRIAL_STEPS + 40), FASTER_WITH)
    assert not any(ways[:HOLD_STEPS]), "held, and the next trial begins without the learned draft"
    assert not any(ways[HOLD_STEPS:HOLD_STEPS + TRIAL_STEPS]) and all(ways[-20:])
    assert "on trial" not in gate.describe()


def test_ranges_choose_apart_and_keep_trying_when_their_steps_alternate(monkeypatch):
    monkeypatch.setattr(learned_draft_gate, "TRIAL_STEPS", 2)
    monkeypatch.setattr(learned_draft_gate, "HOLD_STEPS", 6)
    gate, clock = started()
    seconds = {**SLOWER_WITH, 1: {True: 0.01, False: 0.02}}
    ways = run_steps(gate, clock, [8, 1] * 60, seconds)
    batch_8, batch_1 = ways[0::2], ways[1::2]
    assert not batch_8[-1] and batch_1[-1]
    assert gate.drafts_learned(16), "an unseen range starts with its trial, learned draft on"
    # held ways end and trials come again, though every step of one range verifies drafts of the other's way
    assert sum(a != b for a, b in zip(batch_8, batch_8[1:])) >= 6
    assert sum(a != b for a, b in zip(batch_1, batch_1[1:])) >= 6


def test_prefill_steps_count_for_nothing():
    gate, clock = started()
    for _ in range(TRIAL_STEPS + 5):
        clock.now += 5.0
        gate.step(False, 8, 10, True)
    assert gate.drafts_learned(8) and gate.describe() == "8-15 requests: on trial"
