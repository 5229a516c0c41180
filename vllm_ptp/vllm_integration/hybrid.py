"""Hybrid drafting (speculative_config.hybrid): context matches ahead of our drafts, one-hot where they win."""
from __future__ import annotations

import torch

from vllm_ptp.proposers.context_match import ContextMatcher, HybridSettings, overlay_matches


def context_matcher(vllm_config) -> ContextMatcher | None:
    """The engine's matcher, or None when hybrid drafting is off."""
    spec = vllm_config.speculative_config
    if getattr(spec, "hybrid", None) is None:
        return None
    if vllm_config.scheduler_config.async_scheduling:
        # The runner's CPU token table then lags the GPU by a step: the matcher would search a stale history.
        raise ValueError("speculative_config.hybrid needs the runner's token history on the CPU each step: start "
                         "the engine with async scheduling off (--no-async-scheduling)")
    settings = HybridSettings(spec.hybrid, spec.prompt_lookup_min, spec.prompt_lookup_max,
                              spec.hybrid_draft_max_batch_size)
    return ContextMatcher(settings, spec.num_speculative_tokens, vllm_config.model_config.max_model_len,
                          vllm_config.scheduler_config.max_num_seqs)


def overlay_on_ptp_drafts(runner, matcher: ContextMatcher, drafts: torch.Tensor, sampled_token_ids
                          ) -> tuple[torch.Tensor, list[int]]:
    """PTP drafts -> (drafts with the matches first, each row's matched length). vLLM's padded drafting (its
    default) proposes before the runner's bookkeeping, from the sampled tokens as a tensor (-1: rejected slots): each
    row's history is then the token table plus those tokens. Without padding it proposes after the bookkeeping, from
    lists, and the table already holds them. Rows in a partial prefill draft nothing that is kept; they are
    skipped."""
    batch = min(drafts.shape[0], runner.input_batch.num_reqs)
    before_bookkeeping = torch.is_tensor(sampled_token_ids)
    new_rows = sampled_token_ids.tolist() if before_bookkeeping else sampled_token_ids
    new_tokens = [[t for t in row if t >= 0] for row in new_rows[:batch]]
    discarded = runner.discard_request_mask.np[:batch]
    active = [bool(tokens) and not discarded[i] for i, tokens in enumerate(new_tokens)]
    matches = matcher.match(runner.input_batch.token_ids_cpu, runner.input_batch.num_tokens_no_spec, active,
                            new_tokens if before_bookkeeping else None)
    ids, probs = overlay_matches(drafts[:batch], runner._draft_probs, matches)
    runner._draft_probs = probs
    matched = matched_lengths(matches, drafts.shape[1]) + [0] * (drafts.shape[0] - batch)
    return (torch.cat([ids, drafts[batch:]]) if batch < drafts.shape[0] else ids), matched


def cp_matches(runner, matcher: ContextMatcher, sampled_token_ids: list[list[int]]) -> list[list[int]]:
    """Each request's context match for the CP path, which drafts after the runner's bookkeeping: the token table
    already holds this step's tokens. Rows without a new token (partial prefills) get none."""
    active = [bool(tokens) for tokens in sampled_token_ids]
    if not any(active):
        return [[] for _ in active]
    return matcher.match(runner.input_batch.token_ids_cpu, runner.input_batch.num_tokens_no_spec, active)


def learned_rows(matcher: ContextMatcher, matches: list[list[int]], batch_size: int) -> list[bool]:
    """The rows the CP heads draft for: those without a match, in steps small enough for the learned draft. Matched
    rows skip the heads: what they would draft after the match is conditioned on the heads' own picks, not on the
    matched tokens, so a match wins its row whole."""
    learned = matcher.settings.drafts_learned(batch_size)
    return [learned and not match for match in matches]


def overlay_on_cp_drafts(drafts: list[list[int]], probs: torch.Tensor | None, matches: list[list[int]], k: int):
    """CP drafts (empty for matched rows) -> (each matched row's match, one-hot in probs, and every other row's
    draft; their probabilities; each row's matched length)."""
    matched = matched_lengths(matches, k)
    if not any(matched):
        return drafts, probs, matched
    if probs is not None:
        _, probs = overlay_matches(torch.zeros(len(drafts), k, dtype=torch.long), probs, matches)
    return [match[:k] if match else draft for draft, match in zip(drafts, matches)], probs, matched


def keep_matched_only(drafts: list[list[int]], matched: list[int]) -> list[list[int]]:
    """A step too large for the learned draft: each row keeps only its matched leading positions."""
    return [draft[:n] for draft, n in zip(drafts, matched)]


def matched_lengths(matches: list[list[int]], k: int) -> list[int]:
    return [min(len(m), k) for m in matches]
