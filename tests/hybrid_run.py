"""Run in a fresh interpreter by test_hybrid.py: engines with the hybrid mode compile vLLM's numba ngram matcher,
after which vLLM 0.32 cannot build another in-process engine (its CPU kernel registration trips over llvmlite
objects in sys.modules), so the tests' own process never runs one. Prints one RESULT line of JSON.

usage: hybrid_run.py matcher | hybrid_run.py greedy|gated|kv_in_step|suffix TARGET DRAFT | hybrid_run.py matches_only|long_matches TARGET DRAFT K | hybrid_run.py forced|forced_mixed TARGET DRAFT PROMPT SAMPLES TOKEN [MIN_DRAFT_CONFIDENCE]
"""
import json
import sys

from vllm_runs import generate

from vllm_ptp.proposers.context_match import ContextMatcher, StepHistory

HYBRID = {"hybrid": "ngram", "prompt_lookup_min": 2, "prompt_lookup_max": 4}
MATCHES_ONLY_ABOVE = 4  # hybrid_draft_max_batch_size of the matches_only run


def log_matches(matcher_class=ContextMatcher) -> list[tuple[int, int, int]]:
    """(rows drafting, rows with a match, matched tokens) at every step of the engines built from here on."""
    steps = []
    match = matcher_class.match

    def logged(matcher, history):
        matches, keys = match(matcher, history)
        steps.append((sum(history.active), sum(bool(m) for m in matches),
                      sum(min(len(m), matcher.k) for m in matches)))
        return matches, keys

    matcher_class.match = logged
    return steps


def log_gate_ways() -> list[bool]:
    """hybrid_draft_max_batch_size "auto" with trials of 2 steps and holds of 6, for the engines built from here on:
    whether each step drafted with the learned draft."""
    from vllm_ptp.proposers import learned_draft_gate
    learned_draft_gate.TRIAL_STEPS, learned_draft_gate.HOLD_STEPS = 2, 6
    ways, step = [], learned_draft_gate.LearnedDraftGate.step

    def logged(gate, decode_only, requests, new_tokens, learned):
        ways.append(learned)
        return step(gate, decode_only, requests, new_tokens, learned)

    learned_draft_gate.LearnedDraftGate.step = logged
    return ways


def force_matches(token: int, every_other_row: bool = False) -> None:
    """Every drafting row (or every other row of the batch) 'matches' with k copies of `token`: every draft of the
    run (or about half, beside learned drafts in the same steps) meets the rejection sampler as a one-hot matched
    draft."""
    def forced(matcher, history):
        rows = [on and not (every_other_row and i % 2) for i, on in enumerate(history.active)]
        return [[token] * matcher.k if on else [] for on in rows], [matcher.settings.max_match if on else 0
                                                                  for on in rows]

    ContextMatcher.match = forced


def force_matches_every_other_step(token: int) -> None:
    """Every other step, each drafting row 'matches' with k copies of `token`; in the steps between, none does."""
    steps = []

    def forced(matcher, history):
        steps.append(len(steps) % 2 == 0)
        return ([[token] * matcher.k if on and steps[-1] else [] for on in history.active],
                [matcher.settings.max_match if on and steps[-1] else 0 for on in history.active])

    ContextMatcher.match = forced


def draft_logits_against_plain_torch(target, draft) -> dict:
    """Two sampled requests at once through PTP + hybrid whose every other step is all matches (the draft then runs
    only to keep its KV cache in step): each drafting row's slot logits against the plain-torch draft's, computed
    from scratch on its request's target states for the same tokens, u's and temperature."""
    import pytest
    import torch
    from test_ptp_vllm import PROMPTS, Recorder
    from vllm import SamplingParams
    from vllm_runs import draft_with_target_states
    k, temperature, prompts = 3, 0.8, PROMPTS[:2]
    force_matches_every_other_step(token=7)
    with pytest.MonkeyPatch.context() as monkeypatch:
        recorder = Recorder(monkeypatch)
        run = generate(target, prompts, SamplingParams(temperature=temperature, max_tokens=24, ignore_eos=True),
                       {"model": draft, "num_speculative_tokens": k, **HYBRID})
    requests = [draft_with_target_states(target, draft, p, out) for p, out in zip(prompts, run.outputs)]
    worst, checked = 0.0, 0
    for step in recorder.steps:
        if "logits" not in step:
            continue
        logits = step["logits"].view(-1, k, step["logits"].shape[-1])  # request-major slots
        bonus_slots = zip(step["positions"][::k].tolist(), step["tokens"][::k].tolist())
        for row, (position, token) in enumerate(bonus_slots):
            # the row's request: the one whose text holds this token after this position (rows may move)
            errors = []
            for plain, sequence, aux in requests:
                if position + 2 > len(sequence) or int(sequence[position + 1]) != token:
                    continue
                with torch.no_grad():
                    expected = plain.propose_logits(aux[:position + 1], sequence[1:position + 2],
                                                    step["u"][row, :k - 1], torch.tensor(temperature), k)
                finite = torch.isfinite(expected)
                same = torch.equal(finite, torch.isfinite(logits[row]))
                errors.append(float((logits[row][finite] - expected[finite]).abs().max()) if same else 1e9)
            if errors:
                worst, checked = max(worst, min(errors)), checked + 1
    return {"proposes": recorder.proposes, "forwards": recorder.forwards, "checked": checked, "worst": worst,
            "matches_only_steps": sum("logits" not in step for step in recorder.steps)}


def record_suffix_trees() -> dict[str, dict]:
    """request -> the prompt and output tokens its suffix tree was given, for the engines built from here on."""
    from arctic_inference.suffix_decoding import SuffixDecodingCache
    given = {}
    start, add = SuffixDecodingCache.start_request, SuffixDecodingCache.add_active_response

    def started(cache, request, prompt_token_ids):
        given[request] = {"prompt": [int(t) for t in prompt_token_ids], "output": []}
        return start(cache, request, prompt_token_ids)

    def added(cache, request, token_ids):
        given[request]["output"] += [int(t) for t in token_ids]
        return add(cache, request, token_ids)

    SuffixDecodingCache.start_request, SuffixDecodingCache.add_active_response = started, added
    return given


def counters(run) -> dict:
    return {"outputs": run.outputs, "acceptance_length": run.acceptance_length, "drafts": run.drafts,
            "draft_tokens": run.draft_tokens, "accepted_per_position": run.accepted_per_position}


def compare_with_ngram(rows: int = 200, length: int = 60, vocab: int = 6) -> dict:
    """ContextMatcher against vLLM's NgramProposer over [2, 4] on random token rows: the same matches, and each
    row's suffix length is the longest of 2..4 whose last tokens occurred before."""
    import numpy as np
    from types import SimpleNamespace

    from vllm.v1.spec_decode.ngram_proposer import NgramProposer

    from vllm_ptp.proposers.context_match import HybridSettings
    rng = np.random.default_rng(0)
    tokens = rng.integers(0, vocab, size=(rows, length), dtype=np.int32)
    lengths = rng.integers(3, length, size=rows).astype(np.int32)
    matcher = ContextMatcher(HybridSettings("ngram", 2, 4), 3, 1024, rows)
    matches, suffixes = matcher.match(StepHistory(tokens, lengths, [[0]] * rows, [str(i) for i in range(rows)],
                                                  lengths))
    ngram = NgramProposer(SimpleNamespace(
        speculative_config=SimpleNamespace(prompt_lookup_min=2, prompt_lookup_max=4, num_speculative_tokens=3),
        model_config=SimpleNamespace(max_model_len=1024), scheduler_config=SimpleNamespace(max_num_seqs=rows),
        parallel_config=SimpleNamespace(tensor_parallel_size=1)))
    expected = ngram.propose(3, [[0]] * rows, lengths, tokens)

    def longest_suffix(row, n_tokens):
        seq = row[:n_tokens].tolist()
        return max([n for n in (2, 3, 4) if any(seq[i:i + n] == seq[-n:] for i in range(n_tokens - n))], default=0)
    return {"same_matches": [list(map(int, m)) for m in matches] == [list(map(int, m)) for m in expected],
            "suffixes": suffixes, "longest": [longest_suffix(tokens[i], lengths[i]) for i in range(rows)]}


if __name__ == "__main__":
    if sys.argv[1] == "matcher":
        print("RESULT " + json.dumps(compare_with_ngram()))
        sys.exit(0)
    from vllm import SamplingParams
    mode, target, draft = sys.argv[1:4]
    if mode == "kv_in_step":
        result = draft_logits_against_plain_torch(target, draft)
    elif mode == "greedy":
        from test_hybrid import PROMPTS
        params = SamplingParams(temperature=0, max_tokens=32, ignore_eos=True)
        plain = generate(target, PROMPTS, params)
        alone = generate(target, PROMPTS, params, {"model": draft, "num_speculative_tokens": 3})
        steps = log_matches()
        hybrid = generate(target, PROMPTS, params, {"model": draft, "num_speculative_tokens": 3, **HYBRID})
        result = {"plain": plain.outputs, "alone": counters(alone), "hybrid": counters(hybrid), "steps": steps}
    elif mode == "gated":
        from test_hybrid import PROMPTS
        ways = log_gate_ways()
        run = generate(target, PROMPTS, SamplingParams(temperature=0, max_tokens=32, ignore_eos=True),
                       {"model": draft, "num_speculative_tokens": 3, **HYBRID, "hybrid_draft_max_batch_size": "auto"})
        result = {**counters(run), "ways": ways}
    elif mode == "suffix":
        from test_hybrid import PROMPTS
        from vllm_ptp.proposers.suffix_match import SuffixMatcher
        params = SamplingParams(temperature=0, max_tokens=32, ignore_eos=True)
        plain = generate(target, PROMPTS, params)
        from transformers import AutoTokenizer
        steps, given = log_matches(SuffixMatcher), record_suffix_trees()
        hybrid = generate(target, PROMPTS, params, {"model": draft, "num_speculative_tokens": 3, "hybrid": "suffix",
                                                    "min_draft_confidence": "auto"})
        prompts = [AutoTokenizer.from_pretrained(target)(p)["input_ids"] for p in PROMPTS]
        by_prompt = {tuple(g["prompt"]): g for g in given.values()}
        result = {"plain": plain.outputs, "hybrid": counters(hybrid), "steps": steps, "prompts": prompts,
                  "given": [by_prompt.get(tuple(p)) for p in prompts]}
    elif mode == "long_matches":
        from test_hybrid import PROMPTS
        run = generate(target, PROMPTS, SamplingParams(temperature=0, max_tokens=32, ignore_eos=True),
                       {"model": draft, "num_speculative_tokens": int(sys.argv[4]), **HYBRID})
        result = counters(run)
    elif mode == "matches_only":
        from test_hybrid import PROMPTS
        params = SamplingParams(temperature=0, max_tokens=32, ignore_eos=True)
        steps = log_matches()
        run = generate(target, PROMPTS, params, {"model": draft, "num_speculative_tokens": int(sys.argv[4]), **HYBRID,
                                                 "hybrid_draft_max_batch_size": MATCHES_ONLY_ABOVE,
                                                 "min_draft_confidence": "auto"})
        result = {**counters(run), "steps": steps}
    else:  # forced, forced_mixed
        prompt, samples, token = sys.argv[4], int(sys.argv[5]), int(sys.argv[6])
        cut = {"min_draft_confidence": float(sys.argv[7])} if len(sys.argv) > 7 else {}
        force_matches(token, every_other_row=mode == "forced_mixed")
        sampled = SamplingParams(temperature=1.0, top_k=8, max_tokens=3, ignore_eos=True)
        run = generate(target, [prompt] * samples, sampled, {"model": draft, "num_speculative_tokens": 3, **HYBRID,
                                                             **cut})
        result = {"outputs": run.outputs, "drafts": run.drafts, "accepted": run.accepted,
                  "draft_tokens": run.draft_tokens, "accepted_per_position": run.accepted_per_position}
    print("RESULT " + json.dumps(result))
