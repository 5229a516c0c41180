"""match_acceptance: the hybrid's matched positions get the acceptance rates measured for their position and suffix
length, from what each step's verification made of the previous step's drafts."""
import pytest

from vllm_ptp.proposers.match_acceptance import HALF_LIFE_DRAFTS, MatchAcceptance


def test_matches_count_as_accepted_until_measured():
    assert MatchAcceptance(3).rates(4) == [1.0, 1.0, 1.0]


def test_each_position_counts_only_when_the_positions_before_it_were_accepted():
    acceptance = MatchAcceptance(3)
    acceptance.drafted("a", 2, 3)
    acceptance.verified("a", 3, 2)  # one draft token accepted, then the target's own: positions 1 and 2 reached
    first, second, third = acceptance.rates(2)
    assert first == pytest.approx(1.0) and second < first and third == pytest.approx(1.0)
    assert acceptance.rates(4) == [1.0, 1.0, 1.0], "another suffix length's counts moved"


def test_only_the_matched_positions_verified_are_counted():
    acceptance = MatchAcceptance(3)
    acceptance.drafted("a", 2, 1)  # one matched position, then learned ones
    acceptance.verified("a", 3, 1)  # nothing accepted
    acceptance.drafted("b", 2, 3)
    acceptance.verified("b", 1, 1)  # the scheduler verified only the first draft token; it was rejected
    first, second, third = acceptance.rates(2)
    assert first < 1.0 and second == pytest.approx(1.0) and third == pytest.approx(1.0)
    acceptance.verified("c", 3, 4)  # no matched draft: nothing counted
    assert acceptance.rates(2) == [first, second, third]


def test_rates_follow_what_is_accepted():
    acceptance = MatchAcceptance(3)
    for step in range(int(8 * HALF_LIFE_DRAFTS)):
        acceptance.drafted("a", 3, 3)
        acceptance.verified("a", 3, 1 + 3 * (step % 2))  # half the drafts accepted whole, half not at all
    assert acceptance.rates(3) == pytest.approx([0.5, 1.0, 1.0], abs=0.02)


def test_finished_requests_are_forgotten():
    acceptance = MatchAcceptance(3)
    acceptance.drafted("a", 2, 3)
    acceptance.drafted("b", 2, 3)
    acceptance.forget(["b"])
    acceptance.verified("a", 3, 1)  # a's draft was dropped with it: nothing counted
    assert acceptance.rates(2) == [1.0, 1.0, 1.0]
    acceptance.verified("b", 3, 1)
    assert acceptance.rates(2)[0] < 1.0
