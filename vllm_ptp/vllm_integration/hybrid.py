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


def ptp_drafts_learned(runner, learned_on: bool, matches: list[list[int]], suffixes: list[int],
                       acceptance: MatchAcceptance | None, threshold: float | None) -> bool:
    """Whether a PTP step needs the learned draft. Not in a step too large for it, nor where every row that drafts
    has a match worth verifying (worth_matching): the match then wins its row whole, as it does a CP row, and the
    draft runs only to keep its KV cache in step (PTPProposer.matches_only). Decided from the matches and their
    measured rates alone: lossless."""
    if not learned_on:
        return False
    batch = runner.input_batch.num_reqs
    discarded = runner.discard_request_mask.np[:batch]
    return any(not worth and not discarded[i]
               for i, worth in enumerate(worth_matching(acceptance, matches, suffixes, threshold)))


def overlay_on_ptp_drafts(runner, drafts: torch.Tensor, matches: list[list[int]], k: int
                          ) -> torch.Tensor | list[list[int]]:
    """PTP drafts [B, S] -> the drafts with each request's match first, one-hot in the runner's draft
    probabilities. B may exceed the requests (padding rows), which keep their drafts. With a k above the draft's
    S slots, a match longer than S drafts up to k tokens (the rows then go as lists, of their own lengths)."""
    batch, slots = min(len(matches), drafts.shape[0]), drafts.shape[1]
    if max(map(len, matches[:batch]), default=0) > slots:
        if runner._draft_probs is not None:
            runner._draft_probs = one_hot_matches(widened(runner._draft_probs, matches[:batch], k), matches[:batch])
        ids, _ = overlay_matches(drafts[:batch], None, matches[:batch])
        return ([match[:k] if len(match) > slots else row for row, match in zip(ids.tolist(), matches)]
                + drafts[batch:].tolist())
    ids, runner._draft_probs = overlay_matches(drafts[:batch], runner._draft_probs, matches[:batch])
    return torch.cat([ids, drafts[batch:]]) if batch < drafts.shape[0] else ids


def widened(probs: torch.Tensor | None, matches: list[list[int]], k: int) -> torch.Tensor | None:
    """Draft probabilities [B, S, V] -> [B, k, V] (k >= S), zero past S: the positions only matches draft, which
    are made one-hot where a match fills them. Unchanged where no match is longer than S."""
    if probs is None or probs.shape[1] >= k or max(map(len, matches), default=0) <= probs.shape[1]:
        return probs
    return torch.cat([probs, probs.new_zeros(probs.shape[0], k - probs.shape[1], probs.shape[2])], dim=1)


def matches_alone(matches: list[list[int]], k: int, rows: int) -> list[list[int]]:
    """A step without the learned draft: each row's match (at most k tokens), none for padding rows. They reach the
    rejection sampler without draft probabilities, as vLLM's ngram drafts do: one-hot."""
    return [match[:k] for match in matches] + [[] for _ in range(rows - len(matches))]


def cp_matches(runner, matcher, sampled_token_ids: list[list[int]]) -> tuple[list[list[int]], list[int]]:
    """Each request's context match and its key for the CP path, which drafts after the runner's bookkeeping: the
    token table already holds this step's tokens. Rows without a new token (partial prefills) get none."""
    return matcher.match(step_history(runner.input_batch, [list(tokens) for tokens in sampled_token_ids],
                                      in_table=True))


def step_history(input_batch, new_tokens: list[list[int]], in_table: bool) -> StepHistory:
    """The runner's input batch and this step's tokens per request -> what the matchers search."""
    return StepHistory.from_table(input_batch.token_ids_cpu, input_batch.num_tokens_no_spec, new_tokens,
                                  input_batch.req_ids, input_batch.num_prompt_tokens, in_table)


def learned_draft_on(runner, batch_size: int) -> bool:
    """Whether the learned draft may draft in this step: hybrid_draft_max_batch_size, a fixed limit or "auto" (the
    runner's LearnedDraftGate)."""
    gate = runner._vllm_ptp_learned_gate
    if gate is not None:
        return gate.drafts_learned(batch_size)
    return runner._vllm_ptp_matcher.settings.drafts_learned(batch_size)


def learned_rows(learned_on: bool, matched: list[bool]) -> list[bool]:
    """The rows the CP heads draft for: those without a match worth verifying (worth_matching), in steps where the
    learned draft drafts. Matched rows skip the heads: what they would draft after the match is conditioned on the
    heads' own picks, not on the matched tokens, so a match wins its row whole."""
    return [learned_on and not match for match in matched]


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


def matched_lengths(matches: list[list[int]], k: int) -> list[int]:
    return [min(len(m), k) for m in matches]
