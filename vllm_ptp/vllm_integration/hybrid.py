"""Hybrid drafting (speculative_config.hybrid): context matches ahead of our drafts, one-hot where they win."""
from __future__ import annotations

import torch

from vllm_ptp.proposers.context_match import SUFFIX, ContextMatcher, HybridSettings, StepHistory, overlay_matches
from vllm_ptp.proposers.draft_confidence import keep_confident
from vllm_ptp.proposers.match_acceptance import MatchAcceptance
from vllm_ptp.proposers.suffix_match import SuffixMatcher


def context_matcher(vllm_config) -> ContextMatcher | SuffixMatcher | None:
    """The engine's matcher, or None when hybrid drafting is off."""
    spec = vllm_config.speculative_config
    if getattr(spec, "hybrid", None) is None:
        return None
    if vllm_config.scheduler_config.async_scheduling:
        # The runner's CPU token table then lags the GPU by a step: the matcher would search a stale history.
        raise ValueError("speculative_config.hybrid needs the runner's token history on the CPU each step: start "
                         "the engine with async scheduling off (--no-async-scheduling)")
    if spec.hybrid == SUFFIX:
        return SuffixMatcher(HybridSettings(SUFFIX, None, None, spec.hybrid_draft_max_batch_size), vllm_config)
    settings = HybridSettings(spec.hybrid, spec.prompt_lookup_min, spec.prompt_lookup_max,
                              spec.hybrid_draft_max_batch_size)
    return ContextMatcher(settings, spec.num_speculative_tokens, vllm_config.model_config.max_model_len,
                          vllm_config.scheduler_config.max_num_seqs)


def ptp_matches(runner, matcher, sampled_token_ids) -> tuple[list[list[int]], list[int]]:
    """Each request's context match and its key (the matcher's match) for the PTP path. vLLM's padded drafting (its
    default) proposes before the runner's bookkeeping, from the sampled tokens as a tensor (-1: rejected slots):
    each row's history is then the token table plus those tokens. Without padding it proposes after the
    bookkeeping, from lists, and the table already holds them. Rows in a partial prefill draft nothing that is
    kept; they get no match."""
    batch = runner.input_batch.num_reqs
    before_bookkeeping = torch.is_tensor(sampled_token_ids)
    new_rows = sampled_token_ids.tolist() if before_bookkeeping else sampled_token_ids
    discarded = runner.discard_request_mask.np[:batch]
    new_tokens = [[] if discarded[i] else [t for t in row if t >= 0] for i, row in enumerate(new_rows[:batch])]
    return matcher.match(step_history(runner.input_batch, new_tokens, in_table=not before_bookkeeping))


def overlay_on_ptp_drafts(runner, drafts: torch.Tensor, matches: list[list[int]]) -> tuple[torch.Tensor, list[int]]:
    """PTP drafts [B, k] -> (drafts with each request's match first, one-hot in the runner's draft probabilities;
    each row's matched length). B may exceed the requests (padding rows), which keep their drafts."""
    batch = min(len(matches), drafts.shape[0])
    ids, probs = overlay_matches(drafts[:batch], runner._draft_probs, matches[:batch])
    runner._draft_probs = probs
    matched = matched_lengths(matches, drafts.shape[1]) + [0] * (drafts.shape[0] - batch)
    return (torch.cat([ids, drafts[batch:]]) if batch < drafts.shape[0] else ids), matched


def cp_matches(runner, matcher, sampled_token_ids: list[list[int]]) -> tuple[list[list[int]], list[int]]:
    """Each request's context match and its key for the CP path, which drafts after the runner's bookkeeping: the
    token table already holds this step's tokens. Rows without a new token (partial prefills) get none."""
    return matcher.match(step_history(runner.input_batch, [list(tokens) for tokens in sampled_token_ids],
                                      in_table=True))


def step_history(input_batch, new_tokens: list[list[int]], in_table: bool) -> StepHistory:
    """The runner's input batch and this step's tokens per request -> what the matchers search."""
    return StepHistory.from_table(input_batch.token_ids_cpu, input_batch.num_tokens_no_spec, new_tokens,
                                  input_batch.req_ids, input_batch.num_prompt_tokens, in_table)


def learned_rows(matcher, matched: list[bool], batch_size: int) -> list[bool]:
    """The rows the CP heads draft for: those without a match worth verifying (worth_matching), in steps small
    enough for the learned draft. Matched rows skip the heads: what they would draft after the match is conditioned
    on the heads' own picks, not on the matched tokens, so a match wins its row whole."""
    learned = matcher.settings.drafts_learned(batch_size)
    return [learned and not match for match in matched]


def overlay_on_cp_drafts(drafts: list[list[int]], probs: torch.Tensor | None, matches: list[list[int]], k: int):
    """CP drafts (empty for matched rows) -> (each matched row's match, one-hot in probs, and every other row's
    draft; their probabilities; each row's matched length)."""
    matched = matched_lengths(matches, k)
    if not any(matched):
        return drafts, probs, matched
    if probs is not None:
        probs = one_hot_matches(probs, matches)
    return [match[:k] if match else draft for draft, match in zip(drafts, matches)], probs, matched


def choose_drafts(acceptance: MatchAcceptance, requests: list[str], learned: list[list[int]],
                  confidence: torch.Tensor | None, matches: list[list[int]], suffixes: list[int], k: int,
                  probs: torch.Tensor | None, threshold: float) -> tuple[list[list[int]], torch.Tensor | None]:
    """min_draft_confidence with the hybrid: each row's learned draft ([] where it drafted none) and context match
    -> each row's draft (at most k tokens), the match or the learned draft, cut where its chained confidence falls
    below the threshold (a matched position's confidence: the acceptance rate measured for its position and suffix
    length), and the draft probabilities with the kept matched positions one-hot. Rows past the requests (padding)
    get no match."""
    matches = [match[:k] for match in matches] + [[] for _ in range(len(learned) - len(matches))]
    rates = [acceptance.rates_to_offer(suffix) if match else [] for suffix, match in zip(suffixes, matches)]
    rates += [[] for _ in range(len(learned) - len(rates))]
    drafts, matched = keep_confident(learned, confidence, matches, rates, threshold)
    if probs is not None and any(matched):
        probs = one_hot_matches(probs, [draft[:n] for draft, n in zip(drafts, matched)])
    for request, suffix, draft, n in zip(requests, suffixes, drafts, matched):
        acceptance.drafted(request, suffix, draft[:n])
    return drafts, probs


def worth_matching(acceptance: MatchAcceptance | None, matches: list[list[int]], suffixes: list[int],
                   threshold: float | None) -> list[bool]:
    """Whether each row's match keeps a position under the cut: the rows CP heads skip. A match whose first
    position's rate is below the cut drafts nothing, and its row may as well get the heads' draft (decided from the
    measured rates alone: lossless)."""
    if acceptance is None or threshold is None:
        return [bool(match) for match in matches]
    return [bool(match) and acceptance.rates(suffix)[0] >= threshold for match, suffix in zip(matches, suffixes)]


def observe_verified(acceptance: MatchAcceptance, requests: list[str], scheduler_output, sampled_token_ids) -> None:
    """What this step's verification made of each request's last draft (its matched positions), for
    match_acceptance: the draft tokens scheduled, and the tokens added (a list per request, or a tensor with -1 in
    rejected slots)."""
    scheduled = scheduler_output.scheduled_spec_decode_tokens
    rows = sampled_token_ids.tolist() if torch.is_tensor(sampled_token_ids) else sampled_token_ids
    for request, row in zip(requests, rows):
        acceptance.verified(request, scheduled.get(request, []), sum(1 for t in row if t >= 0))
    acceptance.forget(requests)


def one_hot_matches(probs: torch.Tensor, matches: list[list[int]]) -> torch.Tensor:
    """Draft probabilities [B, k, V] with each row's matched leading positions one-hot (rows drafted as lists)."""
    return overlay_matches(torch.zeros(len(matches), probs.shape[1], dtype=torch.long), probs, matches)[1]


def keep_matched_only(drafts: list[list[int]], matched: list[int]) -> list[list[int]]:
    """A step too large for the learned draft: each row keeps only its matched leading positions."""
    return [draft[:n] for draft, n in zip(drafts, matched)]


def matched_lengths(matches: list[list[int]], k: int) -> list[int]:
    return [min(len(m), k) for m in matches]
