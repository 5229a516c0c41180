"""Hybrid drafting (speculative_config "hybrid": "ngram"): context matches ahead of a PTP draft or CP heads.

Greedy output stays plain vLLM's, in batches where some requests match their context and some do not; the match
raises acceptance where the text repeats; sampled tokens keep the target's distribution (chi-square); a bad setting
fails when the engine is configured."""
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from hybrid_run import MATCHES_ONLY_ABOVE
from test_sampling_lossless import ALPHA, PROMPT, exact_joint, marginal, p_value
from tiny_models import stdlib_text
from vllm_runs import engine_config

from vllm_ptp.proposers.context_match import SUFFIX_PACKAGE, HybridSettings, overlay_matches
from vllm_ptp.proposers.match_acceptance import MatchAcceptance

LINES = [line.strip() for line in stdlib_text(20_000).splitlines() if len(line.strip()) > 20]
# Half the prompts repeat a line (a context match from the first step on), half do not.
PROMPTS = [f"{line}\n{line}\n{line[:len(line) // 2]}" for line in LINES[:6]] + LINES[6:12]


def run_hybrid(*args) -> dict:
    """tests/hybrid_run.py in a fresh interpreter (in-process engines, as here)."""
    proc = subprocess.run([sys.executable, str(Path(__file__).with_name("hybrid_run.py")), *map(str, args)],
                          capture_output=True, text=True, timeout=1500, cwd=Path(__file__).parent)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    assert proc.returncode == 0 and lines, proc.stderr[-3000:]
    return json.loads(lines[-1][len("RESULT "):])


def mixed_steps(steps) -> int:
    """Steps in which some drafting rows had a context match and some did not."""
    return sum(0 < matched < drafting for drafting, matched, _ in steps)


def matched_tokens(steps) -> int:
    return sum(tokens for _, _, tokens in steps)


def test_matches_are_vllm_ngram_s_with_their_suffix_length():
    result = run_hybrid("matcher")
    assert result["same_matches"]
    assert result["suffixes"] == result["longest"] and {2, 3, 4} <= set(result["suffixes"])


@pytest.mark.engine
@pytest.mark.parametrize("draft", ["tiny_ptp", "tiny_cp"])
def test_greedy_output_identical_and_matches_accepted(tiny_target, draft, request):
    result = run_hybrid("greedy", tiny_target, request.getfixturevalue(draft))
    assert len(result["plain"]) == len(PROMPTS)
    assert result["hybrid"]["outputs"] == result["plain"]
    assert result["alone"]["outputs"] == result["plain"]
    assert mixed_steps(result["steps"]) > 0, f"no step had matched and unmatched rows together: {result['steps']}"
    assert result["hybrid"]["acceptance_length"] > result["alone"]["acceptance_length"]
    assert result["hybrid"]["draft_tokens"] > matched_tokens(result["steps"]), "the learned draft drafted nothing"
    # hybrid_draft_max_batch_size "auto" (trials of 2 steps here): the same output, with and without the learned draft
    gated = run_hybrid("gated", tiny_target, request.getfixturevalue(draft))
    assert gated["outputs"] == result["plain"]
    assert {True, False} <= set(gated["ways"]), gated["ways"]
    # A k above the draft's 3 heads / 4 slots: matches draft the positions past them, and are accepted there.
    learned_k, long_k = (3, 5) if draft == "tiny_cp" else (4, 6)
    long_matches = run_hybrid("long_matches", tiny_target, request.getfixturevalue(draft), long_k)
    assert long_matches["outputs"] == result["plain"]
    assert sum(long_matches["accepted_per_position"][learned_k:]) > 0, long_matches["accepted_per_position"]
    # hybrid_draft_max_batch_size: the same output, and in steps of more requests no draft token beyond the matches.
    # The smaller steps' learned drafts are cut where min_draft_confidence "auto" says (CP: k above its heads).
    k = 5 if draft == "tiny_cp" else 3
    matches_only = run_hybrid("matches_only", tiny_target, request.getfixturevalue(draft), k)
    assert matches_only["outputs"] == result["plain"]
    allowed = sum(tokens if rows > MATCHES_ONLY_ABOVE else k * rows for rows, _, tokens in matches_only["steps"])
    assert 0 < matches_only["draft_tokens"] <= allowed


@pytest.mark.engine
@pytest.mark.parametrize("draft", ["tiny_ptp", "tiny_ptp_two_layers"])
def test_ptp_draft_kv_stays_in_step_through_steps_of_matches_only(tiny_target, draft, request):
    """In a step whose drafts are all matches the PTP draft runs without mask slots, logits or picks. The drafting
    steps after such steps still compute exactly what the plain-torch draft computes from scratch (two layers: the
    second attends to the first's outputs at every earlier position; two requests drafted together)."""
    result = run_hybrid("kv_in_step", tiny_target, request.getfixturevalue(draft))
    assert result["forwards"] == result["proposes"], "every step, drafting or not, runs the draft once"
    assert result["matches_only_steps"] >= 3 and result["checked"] >= 3, result
    assert result["worst"] <= 2e-3, result


@pytest.mark.engine
@pytest.mark.parametrize("draft", ["tiny_ptp", "tiny_cp"])
def test_suffix_hybrid_greedy_output_identical(tiny_target, draft, request):
    """"hybrid": "suffix" (vLLM's suffix decoding as the match), its matches cut by their measured acceptance."""
    pytest.importorskip(SUFFIX_PACKAGE)
    result = run_hybrid("suffix", tiny_target, request.getfixturevalue(draft))
    assert result["hybrid"]["outputs"] == result["plain"]
    # each request's suffix tree was given its prompt and then exactly its output, in order (tokens accepted past
    # max_tokens, which the engine drops from the output, may follow)
    for prompt, given, output in zip(result["prompts"], result["given"], result["plain"]):
        assert given is not None and given["prompt"] == prompt
        assert given["output"][:len(output)] == output and len(given["output"]) - len(output) <= 3
    assert mixed_steps(result["steps"]) > 0, f"no step had matched and unmatched rows together: {result['steps']}"
    assert result["hybrid"]["acceptance_length"] > 1 and matched_tokens(result["steps"]) > 0


def test_suffix_matches_are_vllm_suffix_decoding_s():
    """The suffix matcher, handed each step's tokens before the runner writes them (PTP's padded drafting), drafts
    what vLLM's SuffixDecodingProposer drafts from the runner's table after it: rows joining, leaving, and pausing
    (a partial prefill), with two requests sharing text so that the tree of earlier outputs matters."""
    pytest.importorskip(SUFFIX_PACKAGE)
    import numpy as np
    from types import SimpleNamespace

    from vllm.v1.spec_decode.suffix_decoding import SuffixDecodingProposer

    from vllm_ptp.proposers.context_match import StepHistory
    from vllm_ptp.proposers.suffix_match import SuffixMatcher
    config = SimpleNamespace(speculative_config=SimpleNamespace(
        num_speculative_tokens=3, suffix_decoding_max_tree_depth=24, suffix_decoding_max_cached_requests=100,
        suffix_decoding_max_spec_factor=1.0, suffix_decoding_min_token_prob=0.1),
        model_config=SimpleNamespace(max_model_len=400))
    ours, vllms = SuffixMatcher(HybridSettings("suffix", None, None), config), SuffixDecodingProposer(config)
    rng = np.random.default_rng(0)
    phrase = rng.integers(0, 50, 12).tolist()
    outputs = {r: (phrase * 8 if r in "ac" else rng.integers(0, 8, 96).tolist()) for r in "abcd"}
    prompts = {r: rng.integers(0, 50, 5 + i).tolist() for i, r in enumerate("abcd")}
    schedule = [("a", "b"), ("a", "b"), ("a", "b", "d"), ("b", "d"), ("b", "c", "d"), ("c", "d")]
    written = {r: 0 for r in "abcd"}
    drafted = 0
    for step in range(60):
        requests = list(schedule[min(step // 10, len(schedule) - 1)])
        table = np.zeros((len(requests), 200), dtype=np.int32)
        new = []
        for i, r in enumerate(requests):
            sequence = prompts[r] + outputs[r][:written[r]]
            table[i, :len(sequence)] = sequence
            pausing = step % 7 == 3 and r == "b"
            n = 0 if pausing else 1 + (step + i) % 2  # one or two tokens a step (an accepted draft adds more)
            new.append(outputs[r][written[r]:written[r] + n])
        lengths = np.array([len(prompts[r]) + written[r] for r in requests], dtype=np.int32)
        prompt_lengths = np.array([len(prompts[r]) for r in requests], dtype=np.int32)
        matches, keys = ours.match(StepHistory.from_table(table, lengths, new, requests, prompt_lengths,
                                                          in_table=False))
        for i, r in enumerate(requests):
            table[i, lengths[i]:lengths[i] + len(new[i])] = new[i]
            written[r] += len(new[i])
        batch = SimpleNamespace(req_ids=requests, req_id_to_index={r: i for i, r in enumerate(requests)},
                                num_tokens_no_spec=lengths + np.array([len(t) for t in new], dtype=np.int32),
                                num_prompt_tokens=prompt_lengths, token_ids_cpu=table)
        expected = vllms.propose(3, batch, new)
        assert matches == [list(map(int, e)) for e in expected], f"step {step}"
        assert keys == [len(m) for m in matches]
        drafted += sum(map(len, matches))
    assert drafted > 100


@pytest.mark.parametrize("draft, cut", [("tiny_ptp", None), ("tiny_ptp", 0.05), ("tiny_cp", 0.05),
                                        ("tiny_ptp_one_slot", None), ("tiny_ptp_one_slot", 0.05)])
def test_matched_drafts_keep_the_target_distribution(tiny_target, draft, cut, request):
    """Every row of every step is given a one-hot matched draft (the most likely second token, k = 3 times): vLLM's
    rejection sampler accepts it or resamples, and the first three tokens still follow the target exactly. With
    min_draft_confidence the matches are cut where their measured acceptance falls (the repeated token is rarely
    right twice), or lose their row to the learned draft: rows of every length and of either origin verify
    together. A one-slot PTP draft is given matches in every other row, so that the learned draft drafts in every
    step: the matches run past its slot, beside learned rows, and their positions' draft probabilities there exist
    only because the matches fill them."""
    samples = 3000
    joint = exact_joint(tiny_target)
    second = max(marginal(joint, (1,)).items(), key=lambda item: item[1])[0][0]
    mixed = draft == "tiny_ptp_one_slot"
    result = run_hybrid("forced_mixed" if mixed else "forced", tiny_target, request.getfixturevalue(draft), PROMPT,
                        samples, second, *([cut] if cut else []))
    assert result["accepted"] > samples // 10, "matched drafts were hardly accepted: the test would not see a bias"
    if cut:
        assert result["draft_tokens"] < 2 * result["drafts"], "the matches were not cut by their measured acceptance"
    if not cut:
        # A one-hot draft of s is accepted exactly when the target samples s. In each request's first verifying step
        # positions 1 and 2 are so accepted with probability p(x2 = s) and p(x2 = x3 = s) (in about half the rows
        # where every other row matches); later steps only add. A position whose draft probability were left at
        # zero (past a one-slot draft's slot) would never be accepted.
        for position, p in enumerate([marginal(joint, (1,))[(second,)],
                                      sum(q for (_, b, c), q in joint.items() if b == c == second)]):
            n = samples // 3 if mixed else samples
            sigma = (n * p * (1 - p)) ** 0.5
            assert result["accepted_per_position"][position] > n * p - 4 * sigma, (position, p, result)
    outputs = result["outputs"]
    assert p_value([tuple(o[:2]) for o in outputs], marginal(joint, (0, 1))) > ALPHA
    assert p_value([tuple(o[1:3]) for o in outputs], marginal(joint, (1, 2))) > ALPHA


@pytest.mark.parametrize("config, message", [
    ({"hybrid": "suffixes"}, "speculative_config.hybrid: expected one of"),
    ({"hybrid": "suffix", "prompt_lookup_max": 3}, "\"suffix\" matches any length"),
    ({"hybrid": "ngram", "prompt_lookup_min": 4, "prompt_lookup_max": 2}, "prompt_lookup_min <= prompt_lookup_max"),
    ({"prompt_lookup_max": 3}, "only with \"hybrid\": \"ngram\""),
    ({"hybrid_draft_max_batch_size": 4}, "it needs \"hybrid\" \\(\"ngram\" or \"suffix\"\\)"),
    ({"hybrid": "ngram", "hybrid_draft_max_batch_size": 0}, "hybrid_draft_max_batch_size: expected a whole number"),
    ({"hybrid": "ngram", "hybrid_draft_max_batch_size": 2.5}, "hybrid_draft_max_batch_size: expected a whole number"),
    ({"hybrid": "ngram", "hybrid_draft_max_batch_size": "fast"}, "or \"auto\" \\(whichever is faster"),
])
def test_bad_hybrid_settings_fail_at_configuration(tiny_target, tiny_ptp, config, message):
    with pytest.raises(Exception, match=message):
        engine_config(tiny_target, {"model": str(tiny_ptp), **config})


def test_suffix_without_arctic_inference_fails_at_configuration(tiny_target, tiny_ptp, monkeypatch):
    """A missing package, or one whose compiled suffix trees do not load."""
    import importlib
    import_module = importlib.import_module

    def without_suffix_trees(name, *args):
        if name.startswith(SUFFIX_PACKAGE):
            raise ImportError(f"no {name}")
        return import_module(name, *args)
    monkeypatch.setattr(importlib, "import_module", without_suffix_trees)
    with pytest.raises(Exception, match="needs the arctic-inference package"):
        engine_config(tiny_target, {"model": str(tiny_ptp), "hybrid": "suffix"})


def test_bad_suffix_settings_get_vllm_s_own_error(tiny_target, tiny_ptp):
    pytest.importorskip(SUFFIX_PACKAGE)
    with pytest.raises(Exception, match="suffix_decoding_min_token_prob=2.0 must be in"):
        engine_config(tiny_target, {"model": str(tiny_ptp), "hybrid": "suffix", "suffix_decoding_min_token_prob": 2.0})


@pytest.mark.parametrize("field", [{"hybrid": "ngram"}, {"hybrid_draft_max_batch_size": 4}])
def test_hybrid_is_refused_for_methods_that_are_not_ours(tiny_target, field):
    with pytest.raises(Exception, match="vllm-ptp setting of 'ptp' and 'cp'"):
        engine_config(tiny_target, {"method": "ngram", "num_speculative_tokens": 3, "prompt_lookup_max": 3, **field})


def test_hybrid_settings_default_to_the_bench_ngram_lengths():
    assert HybridSettings.from_fields(None, None, None) is None
    assert HybridSettings.from_fields("ngram", None, None) == HybridSettings("ngram", 2, 4)
    assert HybridSettings.from_fields("ngram", 3, None) == HybridSettings("ngram", 3, 4)
    assert HybridSettings.from_fields("ngram", None, 1) == HybridSettings("ngram", 1, 1)
    gated = HybridSettings.from_fields("ngram", None, None, 4)
    assert gated.drafts_learned(4) and not gated.drafts_learned(5)
    assert HybridSettings.from_fields("ngram", None, None).drafts_learned(1024)
    assert HybridSettings.from_fields("ngram", None, None, "auto").draft_max_batch_size == "auto"


def test_overlay_puts_matches_first_and_one_hot():
    ids = torch.tensor([[5, 6, 7], [8, 9, 10], [11, 12, 13]])
    probs = torch.rand(3, 3, 20).softmax(-1)
    before = probs.clone()
    out, out_probs = overlay_matches(ids, probs, [[1, 2], [], [3, 4, 5, 6]])
    assert out.tolist() == [[1, 2, 7], [8, 9, 10], [3, 4, 5]]
    for i, j, token in [(0, 0, 1), (0, 1, 2), (2, 0, 3), (2, 1, 4), (2, 2, 5)]:
        assert out_probs[i, j, token] == 1.0 and out_probs[i, j].sum() == 1.0
    assert torch.equal(out_probs[1], before[1]) and torch.equal(out_probs[0, 2], before[0, 2])
    assert ids.tolist()[0] == [5, 6, 7], "the drafts handed in are not modified"


def test_matches_longer_than_the_ptp_slots_draft_their_rows_alone():
    """k = 5 over a draft of 3 slots (and a padding row): a match longer than the slots drafts up to k tokens, one-hot
    at every position, the probabilities widened to k; shorter matches lead their row's learned draft; rows without
    a match keep it whole. With no match past the slots the drafts stay a [B, 3] tensor."""
    from types import SimpleNamespace

    from vllm_ptp.vllm_integration.hybrid import overlay_on_ptp_drafts
    drafts = torch.tensor([[5, 6, 7], [8, 9, 10], [11, 12, 13], [14, 15, 16]])
    probs = torch.rand(4, 3, 20).softmax(-1)
    runner = SimpleNamespace(_draft_probs=probs.clone())
    out = overlay_on_ptp_drafts(runner, drafts, [[1, 2, 3, 4, 17, 18], [0], []], k=5)
    assert out == [[1, 2, 3, 4, 17], [0, 9, 10], [11, 12, 13], [14, 15, 16]]
    widened = runner._draft_probs
    assert widened.shape == (4, 5, 20)
    for j, token in enumerate([1, 2, 3, 4, 17]):
        assert widened[0, j, token] == 1.0 and widened[0, j].sum() == 1.0
    assert widened[1, 0, 0] == 1.0 and torch.equal(widened[1, 1:3], probs[1, 1:])
    assert torch.equal(widened[2:, :3], probs[2:]) and not widened[1:, 3:].any()
    runner = SimpleNamespace(_draft_probs=probs.clone())
    out = overlay_on_ptp_drafts(runner, drafts, [[1, 2], [], []], k=5)
    assert out.tolist() == [[1, 2, 7], [8, 9, 10], [11, 12, 13], [14, 15, 16]] and runner._draft_probs.shape[1] == 3


def test_a_cut_match_is_one_hot_only_where_it_is_kept():
    """choose_drafts: the kept matched prefix is one-hot in the draft probabilities; a row that took the learned
    draft, and a matched row's positions past the cut, keep the learned distributions."""
    from vllm_ptp.vllm_integration.hybrid import choose_drafts
    acceptance = MatchAcceptance(3)
    for step in range(1000):  # 2-token matches: the first position accepted 70% of the time, the second never
        acceptance.drafted("x", 2, [1, 2, 3])
        acceptance.verified("x", [1, 2, 3], 2 if step % 10 < 7 else 1)
    probs = torch.full((3, 3, 8), 1 / 8)
    learned = [[4, 5, 6], [4, 5, 6], [4, 5, 6]]
    confidence = torch.tensor([[0.2, 0.9, 0.9], [0.99, 0.9, 0.9], [0.99, 0.9, 0.9]])
    drafts, out = choose_drafts(acceptance, ["a", "b", "c"], learned, confidence, [[1, 2, 3], [1, 2, 3], []],
                                [2, 2, 0], 3, probs.clone(), 0.5)
    # a: the match (worth .7 - .5), cut after its first position; b: the learned draft's first slot is worth more
    # (.99 - .5); c: no match
    assert drafts == [[1], [4, 5, 6], [4, 5, 6]]
    assert torch.equal(out[0, 0], torch.nn.functional.one_hot(torch.tensor(1), 8).float())
    assert torch.equal(out[0, 1:], probs[0, 1:]) and torch.equal(out[1:], probs[1:])
