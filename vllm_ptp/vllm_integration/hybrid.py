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
    settings = HybridSettings(spec.hybrid, spec.prompt_lookup_min, spec.prompt_lookup_max)
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


def overlay_on_cp_drafts(runner, matcher: ContextMatcher, drafts: list[list[int]], probs: torch.Tensor | None):
    """CP drafts after the runner's bookkeeping: the token table already holds this step's tokens
    -> (drafts with the matches first, their probabilities, each row's matched length)."""
    active = [bool(d) for d in drafts]
    if not any(active):
        return drafts, probs, [0] * len(drafts)
    matches = matcher.match(runner.input_batch.token_ids_cpu, runner.input_batch.num_tokens_no_spec, active)
    k = max(len(d) for d in drafts)
    ids = torch.tensor([d if d else [0] * k for d in drafts])
    ids, probs = overlay_matches(ids, probs, matches)
    return [row if drafts[i] else [] for i, row in enumerate(ids.tolist())], probs, matched_lengths(matches, k)


def matched_lengths(matches: list[list[int]], k: int) -> list[int]:
    return [min(len(m), k) for m in matches]
