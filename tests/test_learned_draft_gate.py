"""hybrid_draft_max_batch_size "auto": per range of batch sizes, a trial with the learned draft and one without,
then the faster way held, then trials again; steps that mix the two ways are not counted."""
from vllm_ptp.proposers import learned_draft_gate
from vllm_ptp.proposers.learned_draft_gate import HOLD_STEPS, TRIAL_STEPS, LearnedDraftGate


class Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


def run_steps(gate, clock, requests, n, seconds_with, seconds_without, tokens=10):
    """n decode steps of `requests`, each drafting the way the gate says, lasting as that way lasts."""
    ways = []
    for _ in range(n):
        way = gate.drafts_learned(requests)
        ways.append(way)
        clock.now += seconds_with if way else seconds_without
        gate.step(True, requests, tokens, way)
    return ways


def test_the_faster_way_is_held_after_a_trial_of_each():
    clock = Clock()
    gate = LearnedDraftGate(clock)
    gate.step(True, 8, 0, True)  # the first drafting: no step before it to time
    ways = run_steps(gate, clock, 8, 2 * TRIAL_STEPS + 1 + 20, seconds_with=0.02, seconds_without=0.01)
    # TRIAL_STEPS with, one step that mixes both (not counted), TRIAL_STEPS without: then without is held
    assert ways[:TRIAL_STEPS] == [True] * TRIAL_STEPS
    assert ways[TRIAL_STEPS:2 * TRIAL_STEPS + 1] == [False] * (TRIAL_STEPS + 1)
    assert not any(ways[2 * TRIAL_STEPS + 1:])
    assert "off" in gate.describe() and "500.0 tokens/s with it, 1000.0 without" in gate.describe()

    clock = Clock()
    gate = LearnedDraftGate(clock)
    gate.step(True, 1, 0, True)
    ways = run_steps(gate, clock, 1, 2 * TRIAL_STEPS + 1 + 20, seconds_with=0.01, seconds_without=0.02)
    assert all(ways[2 * TRIAL_STEPS + 2:]), "the learned draft, faster here, comes back after its trial"


def test_trials_come_again_after_the_hold_and_can_change_the_choice():
    clock = Clock()
    gate = LearnedDraftGate(clock)
    gate.step(True, 8, 0, True)
    run_steps(gate, clock, 8, 2 * TRIAL_STEPS + 2, seconds_with=0.02, seconds_without=0.01)
    assert not gate.drafts_learned(8)
    # the workload changes: the learned draft now pays; after the hold a new trial finds it
    ways = run_steps(gate, clock, 8, HOLD_STEPS + 2 * TRIAL_STEPS + 40, seconds_with=0.01, seconds_without=0.02)
    assert not any(ways[:HOLD_STEPS - 2]) and all(ways[-20:])


def test_ranges_of_batch_sizes_choose_apart_and_prefills_are_not_counted(monkeypatch):
    monkeypatch.setattr(learned_draft_gate, "TRIAL_STEPS", 2)
    clock = Clock()
    gate = LearnedDraftGate(clock)
    gate.step(True, 8, 0, True)
    for _ in range(40):
        for requests, (slow, fast) in ((8, (0.02, 0.01)), (1, (0.01, 0.02))):
            way = gate.drafts_learned(requests)
            clock.now += slow if way else fast
            gate.step(True, requests, 10, way)
    assert not gate.drafts_learned(8) and not gate.drafts_learned(15) and gate.drafts_learned(1)
    assert gate.drafts_learned(16), "an unseen range starts with its trial, learned draft on"
    # a prefill step (not decode-only) counts for nothing, however long
    gate = LearnedDraftGate(clock)
    gate.step(True, 8, 0, True)
    for _ in range(TRIAL_STEPS + 5):
        clock.now += 5.0
        gate.step(False, 8, 10, True)
    assert gate.drafts_learned(8) and gate.describe().endswith("on trial")
