"""speculative_config "min_draft_confidence": each row's draft stops at its first position the draft is unsure of.

Greedy output stays plain vLLM's while rows of different lengths (none, some, all of k) verify together; sampled
tokens keep the target's distribution (chi-square); the cut depends only on the draft; a bad setting fails at
start-up."""
import pytest
import torch
from test_hybrid import PROMPTS
from test_sampling_lossless import ALPHA, PROMPT, SAMPLES, TOP_K, exact_joint, marginal, p_value
from vllm_runs import engine_config, generate

from vllm_ptp.proposers.draft_confidence import check_threshold, keep_confident, top_probability

# About the median top probability of the tiny drafts' first slot: some rows keep nothing, some one or more.
THRESHOLD = 0.05


def test_a_row_stops_at_its_first_unsure_position():
    confidence = torch.tensor([[0.9, 0.5, 0.9], [0.2, 0.9, 0.9], [0.04, 0.99, 0.99], [0.9, 0.9, 0.9]])
    drafts = [[1, 2, 3], [4, 5, 6], [7, 8, 9], [10, 11, 12]]
    none = [[]] * 4
    # chained: 0.9, 0.45, 0.405 | 0.2, 0.18, 0.162 | 0.04 ... | 0.9, 0.81, 0.729
    assert keep_confident(drafts, confidence, none, none, 0.3) == ([[1, 2, 3], [], [], [10, 11, 12]], [0] * 4)
    assert keep_confident(drafts, confidence, none, none, 0.17)[0] == [[1, 2, 3], [4, 5], [], [10, 11, 12]]


def test_a_matched_row_takes_the_draft_worth_more():
    """Matched positions count at their measured rates; the row keeps the match, cut where its chained rate falls
    below the threshold, or the learned draft alone, whichever sums the larger P - threshold."""
    confidence = torch.tensor([[0.9, 0.9, 0.9]] * 3 + [[0.5, 0.9, 0.9], [0.9, 0.9, 0.9]])
    learned = [[1, 2, 3], [1, 2, 3], [1, 2, 3], [1, 2, 3], []]
    matches = [[1, 2, 3], [7, 8, 9], [1], [7], [5, 6, 7]]
    rates = [[0.95, 0.9, 0.9], [0.8, 0.5, 0.5], [0.9], [0.95], [0.45, 1.0, 1.0]]
    drafts, matched = keep_confident(learned, confidence, matches, rates, 0.5)
    # The match's worth against the learned draft's first slot (.9 - .5 = .4):
    # 0: the match, chained .95, .855, .77, is worth 1.075
    # 1: the match keeps one position (.8, then .4): .3; the learned draft is kept (.9, .81, .729)
    # 2: a one-token match worth .4, a tie; the learned draft agrees with it, so its positions follow (.81, .729)
    # 3: the learned draft's first slot is worth 0, the match .45; the learned draft disagrees: nothing follows
    # 4: no learned draft (CP heads skip matched rows) and a first rate below the threshold: nothing
    assert drafts == [[1, 2, 3], [1, 2, 3], [1, 2, 3], [7], []]
    assert matched == [3, 0, 1, 1, 0]


def test_the_choice_of_a_matched_row_ignores_the_learned_draft_s_picks():
    """Which draft a matched row takes may depend on the learned draft's first-slot confidence, never on its picks
    or later slots (a PTP draft's slot j is conditioned on the u's before it): otherwise the learned draft would be
    offered only for some of its picks, and what is verified would no longer follow its distribution."""
    match, rates = [[4, 5]], [[0.99, 0.8]]
    for first in (0.3, 0.6, 0.95):
        chosen = set()
        for own in ([4, 5, 6], [4, 7, 8], [9, 5, 6]):
            for later in (0.05, 0.5, 0.99):
                _, matched = keep_confident([own], torch.tensor([[first, later, later]]), match, rates, 0.5)
                chosen.add(matched[0] > 0)
        assert len(chosen) == 1, f"first-slot confidence {first}: the branch depended on the learned picks"


def test_top_probability_reads_greedy_rows_at_temperature_one():
    logits = torch.tensor([[2.0, 0.0, 0.0], [2.0, 0.0, 0.0]])
    at_one = logits.softmax(-1).amax(-1)
    got = top_probability(logits, torch.tensor([0.0, 0.5]))
    assert torch.allclose(got[0], at_one[0]) and torch.allclose(got[1], (logits[1] / 0.5).softmax(-1).amax())
    assert torch.allclose(top_probability(logits, None), at_one)


@pytest.mark.parametrize("value", [0, 1, 1.5, -0.1, "0.2", True, "Auto", "automatic"])
def test_threshold_outside_zero_one_is_refused(value):
    with pytest.raises(ValueError, match="min_draft_confidence: expected a number in \\(0, 1\\).* or \"auto\""):
        check_threshold(value)


def test_auto_is_taken_as_it_is():
    assert check_threshold("auto") == "auto" and check_threshold(0.25) == 0.25 and check_threshold(None) is None


@pytest.mark.parametrize("config, message", [
    ({"min_draft_confidence": 2}, "expected a number in \\(0, 1\\)"),
    ({"min_draft_confidence": "high"}, "min_draft_confidence"),
])
def test_bad_threshold_fails_at_configuration(tiny_target, tiny_ptp, config, message):
    with pytest.raises(Exception, match=message):
        engine_config(tiny_target, {"model": str(tiny_ptp), **config})


def test_threshold_is_refused_for_methods_that_are_not_ours(tiny_target):
    with pytest.raises(Exception, match="min_draft_confidence is a vllm-ptp setting"):
        engine_config(tiny_target, {"method": "ngram", "num_speculative_tokens": 3, "prompt_lookup_max": 3,
                                    "min_draft_confidence": 0.1})


def test_threshold_needs_async_scheduling_off():
    """The CPU backend always schedules synchronously, so the check is driven with the config a GPU engine has."""
    from types import SimpleNamespace

    from vllm_ptp.vllm_integration.runner import runner_init
    spec = SimpleNamespace(method="cp", hybrid=None, min_draft_confidence=0.1)
    config = SimpleNamespace(speculative_config=spec, additional_config={},
                             scheduler_config=SimpleNamespace(async_scheduling=True))
    with pytest.raises(ValueError, match="--no-async-scheduling"):
        runner_init(SimpleNamespace(), config, "cpu")


@pytest.mark.engine
@pytest.mark.parametrize("draft", ["tiny_ptp", "tiny_cp"])
def test_greedy_output_identical_with_rows_of_every_length(tiny_target, draft, request):
    from vllm import SamplingParams
    draft = str(request.getfixturevalue(draft))
    params = SamplingParams(temperature=0, max_tokens=32, ignore_eos=True)
    plain = generate(tiny_target, PROMPTS, params)
    every = generate(tiny_target, PROMPTS, params, {"model": draft, "num_speculative_tokens": 3})
    cut = generate(tiny_target, PROMPTS, params, {"model": draft, "num_speculative_tokens": 3,
                                                  "min_draft_confidence": THRESHOLD})
    assert cut.outputs == plain.outputs
    assert every.draft_tokens == 3 * every.drafts
    assert 0 < cut.draft_tokens < 3 * cut.drafts, "no row was cut short, or none drafted at all"
    assert cut.draft_tokens < every.draft_tokens / 2
    assert cut.accepted > 0


@pytest.mark.engine
@pytest.mark.parametrize("draft", ["tiny_ptp", "tiny_cp"])
def test_greedy_output_identical_with_the_measured_cut(tiny_target, draft, request, monkeypatch):
    """"auto": the runner reports every step to the cost model and cuts where it says; here the cut is moved every
    step (0.01 ... 0.9), as a measured cut may move, and greedy output stays plain vLLM's (with the hybrid's
    matches: test_hybrid)."""
    from vllm import SamplingParams

    from vllm_ptp.proposers.verify_cost import VerifyCost
    steps, cuts = [], iter([0.01, 0.3, 0.9, 0.05] * 1000)
    step = VerifyCost.step
    monkeypatch.setattr(VerifyCost, "step", lambda cost, *args, **kw: (steps.append((*args, *kw.values())),
                                                                        step(cost, *args, **kw)))
    monkeypatch.setattr(VerifyCost, "threshold", lambda cost, requests: next(cuts))
    draft = str(request.getfixturevalue(draft))
    params = SamplingParams(temperature=0, max_tokens=32, ignore_eos=True)
    plain = generate(tiny_target, PROMPTS, params)
    auto = generate(tiny_target, PROMPTS, params, {"model": draft, "num_speculative_tokens": 3,
                                                   "min_draft_confidence": "auto"})
    assert auto.outputs == plain.outputs
    decode = [s for s in steps if s[0]]
    assert len(decode) > 10 and len({drafts for _, _, drafts, _ in decode}) > 1, steps
    assert sum(new for _, _, _, new in decode) >= sum(requests for _, requests, _, _ in decode)
    assert 0 < auto.draft_tokens < 3 * auto.drafts


@pytest.mark.engine
@pytest.mark.parametrize("draft", ["tiny_ptp", "tiny_cp"])
def test_sampled_tokens_follow_the_target_distribution_with_rows_cut(tiny_target, draft, request):
    from vllm import SamplingParams
    sampled = SamplingParams(temperature=1.0, top_k=TOP_K, max_tokens=3, ignore_eos=True)
    spec = generate(tiny_target, [PROMPT] * SAMPLES, sampled, {"model": str(request.getfixturevalue(draft)),
                                                                "num_speculative_tokens": 3,
                                                                "min_draft_confidence": THRESHOLD})
    assert spec.accepted > 0 and 0 < spec.draft_tokens < 3 * spec.drafts
    joint = exact_joint(tiny_target)
    assert p_value([tuple(o[:2]) for o in spec.outputs], marginal(joint, (0, 1))) > ALPHA
    assert p_value([tuple(o[1:3]) for o in spec.outputs], marginal(joint, (1, 2))) > ALPHA
