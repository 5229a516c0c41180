"""match_acceptance: the hybrid's matched positions get the acceptance rates measured for their position and suffix
length, from what each step's verification made of the previous step's drafts."""
import pytest

from vllm_ptp.proposers.match_acceptance import EXPLORE_EVERY, HALF_LIFE_DRAFTS, MatchAcceptance


def test_matches_count_as_accepted_until_measured():
    assert MatchAcceptance(3).rates(4) == [1.0, 1.0, 1.0]


def test_each_position_counts_only_when_the_positions_before_it_were_accepted():
    acceptance = MatchAcceptance(3)
    acceptance.drafted("a", 2, [5, 6, 7])
    acceptance.verified("a", [5, 6, 7], 2)  # one draft token accepted, then the target's own: positions 1, 2 reached
    first, second, third = acceptance.rates(2)
    assert first == pytest.approx(1.0) and second < first and third == pytest.approx(1.0)
    assert acceptance.rates(4) == [1.0, 1.0, 1.0], "another suffix length's counts moved"


def test_only_the_matched_positions_verified_are_counted():
    acceptance = MatchAcceptance(3)
    acceptance.drafted("a", 2, [5])  # one matched position, then learned ones
    acceptance.verified("a", [5, 1, 2], 1)  # nothing accepted
    acceptance.drafted("b", 2, [5, 6, 7])
    acceptance.verified("b", [5], 1)  # the scheduler verified only the first draft token; it was rejected
    first, second, third = acceptance.rates(2)
    assert first < 1.0 and second == pytest.approx(1.0) and third == pytest.approx(1.0)
    acceptance.verified("c", [5, 6, 7], 4)  # no matched draft: nothing counted
    assert acceptance.rates(2) == [first, second, third]


def test_drafts_the_runner_did_not_make_are_not_counted():
    """vLLM may skip the drafter for a step and schedule drafts of its own (zeros): the match drafted before is
    then not what was verified."""
    acceptance = MatchAcceptance(3)
    acceptance.drafted("a", 2, [5, 6, 7])
    acceptance.verified("a", [0, 0, 0], 1)
    assert acceptance.rates(2) == [1.0, 1.0, 1.0]


def test_rates_follow_what_is_accepted():
    acceptance = MatchAcceptance(3)
    for step in range(int(8 * HALF_LIFE_DRAFTS)):
        acceptance.drafted("a", 3, [5, 6, 7])
        acceptance.verified("a", [5, 6, 7], 1 + 3 * (step % 2))  # half the drafts accepted whole, half not at all
    assert acceptance.rates(3) == pytest.approx([0.5, 1.0, 1.0], abs=0.02)


def test_one_match_in_so_many_is_offered_whole():
    acceptance = MatchAcceptance(3)
    for _ in range(50):
        acceptance.drafted("a", 2, [5, 6, 7])
        acceptance.verified("a", [5, 6, 7], 1)
    offered = [acceptance.rates_to_offer(2) for _ in range(2 * EXPLORE_EVERY)]
    whole = [rates == [1.0, 1.0, 1.0] for rates in offered]
    assert sum(whole) == 2 and whole[EXPLORE_EVERY - 1] and offered[0][0] < 0.2


def test_finished_requests_are_forgotten():
    acceptance = MatchAcceptance(3)
    acceptance.drafted("a", 2, [5, 6, 7])
    acceptance.drafted("b", 2, [5, 6, 7])
    acceptance.forget(["b"])
    acceptance.verified("a", [5, 6, 7], 1)  # a's draft was dropped with it: nothing counted
    assert acceptance.rates(2) == [1.0, 1.0, 1.0]
    acceptance.verified("b", [5, 6, 7], 1)
    assert acceptance.rates(2)[0] < 1.0
