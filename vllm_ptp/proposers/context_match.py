"""Hybrid drafting: a context match, where the request has one, ahead of the learned draft.

A small target repeats itself (code, lists, quoted text), and there vLLM's prompt-lookup (ngram) drafts are accepted
far more often than a learned draft's; where nothing matches, ngram drafts nothing while the learned draft still
drafts. The hybrid takes both: every step, each request's own tokens are searched with vLLM's NgramProposer (the
longest suffix of [min_match, max_match] tokens that occurred before), and a request with a match drafts the tokens
that followed it, in as many leading positions as the match gives; the learned draft keeps the rows without a
match (and, for PTP, whose forward drafts every row anyway, a matched row's positions after a short match). CP
heads skip matched rows, and may be given a k above their number of heads: only matches draft the positions beyond.

Where the learned draft costs more than it earns (a large batch makes the target compute-bound, so every verified
token costs), `draft_max_batch_size` keeps it to steps with at most that many requests; larger steps draft context
matches only, as vLLM's ngram would.

Lossless: a matched position's draft distribution is one-hot on the matched token, which is how vLLM verifies its
own ngram drafts, and a learned position's draft is still a pick from exactly the distribution handed to the
rejection sampler (its u is independent of everything before it), so vLLM's unchanged rejection sampler verifies
mixed rows and mixed batches exactly.
"""
from __future__ import annotations

from dataclasses import dataclass
from types import SimpleNamespace

import numpy as np
import torch

HYBRID_KINDS = ("ngram",)
# The bench's ngram setting, which measured best on the embedded default (background.md): a suffix of 2-4 tokens.
DEFAULT_MIN_MATCH, DEFAULT_MAX_MATCH = 2, 4


@dataclass(frozen=True)
class HybridSettings:
    kind: str
    min_match: int = DEFAULT_MIN_MATCH
    max_match: int = DEFAULT_MAX_MATCH
    draft_max_batch_size: int | None = None  # None: the learned draft drafts in every step

    @classmethod
    def from_fields(cls, hybrid, prompt_lookup_min: int | None, prompt_lookup_max: int | None,
                    draft_max_batch_size=None) -> "HybridSettings | None":
        """speculative_config's 'hybrid', vLLM's own prompt_lookup_min/max (the match lengths, as for ngram) and
        'hybrid_draft_max_batch_size'; None when 'hybrid' is unset. One ValueError naming the field otherwise."""
        if hybrid is None:
            if prompt_lookup_min is not None or prompt_lookup_max is not None:
                raise ValueError("speculative_config: prompt_lookup_min/max set a context match, which a 'ptp' or "
                                 "'cp' draft uses only with \"hybrid\": \"ngram\"")
            if draft_max_batch_size is not None:
                raise ValueError("speculative_config.hybrid_draft_max_batch_size limits the learned draft of a "
                                 "hybrid; it needs \"hybrid\": \"ngram\"")
            return None
        if hybrid not in HYBRID_KINDS:
            raise ValueError(f"speculative_config.hybrid: expected one of {list(HYBRID_KINDS)}, got {hybrid!r}")
        low = prompt_lookup_min if prompt_lookup_min is not None else min(DEFAULT_MIN_MATCH,
                                                                           prompt_lookup_max or DEFAULT_MIN_MATCH)
        high = prompt_lookup_max if prompt_lookup_max is not None else max(DEFAULT_MAX_MATCH, low)
        if low < 1 or low > high:
            raise ValueError(f"speculative_config: the hybrid match lengths need 1 <= prompt_lookup_min <= "
                             f"prompt_lookup_max, got {low} and {high}")
        if draft_max_batch_size is not None and (isinstance(draft_max_batch_size, bool)
                                                 or not isinstance(draft_max_batch_size, int)
                                                 or draft_max_batch_size < 1):
            raise ValueError(f"speculative_config.hybrid_draft_max_batch_size: expected a whole number >= 1 (the "
                             f"largest batch in which the learned draft drafts), got {draft_max_batch_size!r}")
        return cls(hybrid, low, high, draft_max_batch_size)

    def drafts_learned(self, batch_size: int) -> bool:
        """Whether the learned draft drafts in a step of batch_size requests."""
        return self.draft_max_batch_size is None or batch_size <= self.draft_max_batch_size


class ContextMatcher:
    """vLLM's NgramProposer over each request's tokens (prompt and output so far), one per suffix length, longest
    first: the first length that matches gives vLLM's own match for [min_match, max_match] (the longest suffix
    that occurred before, its earliest occurrence), and the length itself, which predicts acceptance (on the
    embedded default's greedy text a 4-token match was accepted through position 3 at 0.65-0.73, a 2-token one at
    0.21)."""

    def __init__(self, settings: HybridSettings, k: int, max_model_len: int, max_num_seqs: int):
        from vllm.v1.spec_decode.ngram_proposer import NgramProposer

        # NgramProposer reads these five settings from a VllmConfig; ours is set up as an EAGLE-3 / custom method,
        # whose speculative config has no prompt-lookup lengths, so it gets them directly.
        self.settings = settings
        self.k = k
        self.by_length = {n: NgramProposer(SimpleNamespace(
            speculative_config=SimpleNamespace(prompt_lookup_min=n, prompt_lookup_max=n, num_speculative_tokens=k),
            model_config=SimpleNamespace(max_model_len=max_model_len),
            scheduler_config=SimpleNamespace(max_num_seqs=max_num_seqs),
            parallel_config=SimpleNamespace(tensor_parallel_size=1)))
            for n in range(settings.max_match, settings.min_match - 1, -1)}
        # NgramProposer's own warm-up drafts for no row, which leaves numba's compilation (about a second) to the
        # first request; one real match here moves it to start-up.
        self.match(np.zeros((1, settings.max_match + 2), dtype=np.int32),
                   np.array([settings.max_match + 2], dtype=np.int32), [True])

    def match(self, token_ids: np.ndarray, num_tokens: np.ndarray, active: list[bool],
              new_tokens: list[list[int]] | None = None) -> tuple[list[list[int]], list[int]]:
        """token_ids [B, L] (the runner's CPU token table), num_tokens [B] (valid length of each row), active [B]
        (rows that draft this step), new_tokens: tokens of this step not yet in the table (None: none). -> up to
        k matched tokens per row ([] where there is no match or the row is inactive), and each row's matched
        suffix length (0: none)."""
        batch = len(active)
        if new_tokens is None:
            tokens, lengths = token_ids, num_tokens[:batch]
        else:
            lengths = np.array([num_tokens[i] + len(new_tokens[i]) for i in range(batch)], dtype=np.int32)
            tokens = np.zeros((batch, max(int(lengths.max(initial=0)), 1)), dtype=np.int32)
            for i in range(batch):
                n = int(num_tokens[i])
                tokens[i, :n] = token_ids[i, :n]
                tokens[i, n:lengths[i]] = new_tokens[i]
        matches: list[list[int]] = [[] for _ in range(batch)]
        suffix = [0] * batch
        searching = list(active)
        for n, ngram in self.by_length.items():
            if not any(searching):
                break
            rows = [[0] if on else [] for on in searching]  # NgramProposer skips rows without new tokens
            for i, match in enumerate(ngram.propose(self.k, rows, lengths, tokens)):
                if searching[i] and len(match):
                    matches[i], suffix[i], searching[i] = list(match), n, False
        return matches, suffix


def overlay_matches(draft_ids: torch.Tensor, draft_probs: torch.Tensor | None, matches: list[list[int]]
                    ) -> tuple[torch.Tensor, torch.Tensor | None]:
    """draft_ids [B, K], draft_probs [B, K, V] or None (all-greedy batch) -> the same with each matched row's
    leading positions replaced by its matched tokens, one-hot in draft_probs."""
    rows = [(i, j, token) for i, match in enumerate(matches) for j, token in enumerate(match[:draft_ids.shape[1]])]
    if not rows:
        return draft_ids, draft_probs
    i, j, token = (torch.tensor(column, device=draft_ids.device) for column in zip(*rows))
    draft_ids = draft_ids.clone()
    draft_ids[i, j] = token.to(draft_ids.dtype)
    if draft_probs is not None:
        draft_probs[i, j] = 0.0
        draft_probs[i, j, token] = 1.0
    return draft_ids, draft_probs
