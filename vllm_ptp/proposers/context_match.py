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
matches only, as vLLM's ngram would. "auto" measures instead, per range of batch sizes (learned_draft_gate).

Two kinds of match: "ngram" (here: the request's own tokens, vLLM's prompt lookup) and "suffix" (suffix_match:
vLLM's suffix decoding, Arctic Inference's suffix trees over the request and earlier requests' outputs).

Lossless: a matched position's draft distribution is one-hot on the matched token, which is how vLLM verifies its
own ngram drafts, and a learned position's draft is still a pick from exactly the distribution handed to the
rejection sampler (its u is independent of everything before it), so vLLM's unchanged rejection sampler verifies
mixed rows and mixed batches exactly.
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass
from types import SimpleNamespace

import numpy as np
import torch

from vllm_ptp.proposers.draft_confidence import AUTO

NGRAM, SUFFIX = "ngram", "suffix"
HYBRID_KINDS = (NGRAM, SUFFIX)
# The bench's ngram setting, which measured best on the embedded default (background.md): a suffix of 2-4 tokens.
DEFAULT_MIN_MATCH, DEFAULT_MAX_MATCH = 2, 4
SUFFIX_PACKAGE = "arctic_inference"


@dataclass(frozen=True)
class HybridSettings:
    kind: str
    min_match: int | None = DEFAULT_MIN_MATCH  # ngram's match lengths; None for suffix, which matches any length
    max_match: int | None = DEFAULT_MAX_MATCH
    draft_max_batch_size: int | str | None = None  # None: the learned draft drafts in every step; or "auto"

    @classmethod
    def from_fields(cls, hybrid, prompt_lookup_min: int | None, prompt_lookup_max: int | None,
                    draft_max_batch_size=None) -> "HybridSettings | None":
        """speculative_config's 'hybrid', vLLM's own prompt_lookup_min/max (the match lengths, as for ngram) and
        'hybrid_draft_max_batch_size'; None when 'hybrid' is unset. One ValueError naming the field otherwise."""
        lookup = prompt_lookup_min is not None or prompt_lookup_max is not None
        if hybrid is None:
            if lookup:
                raise ValueError("speculative_config: prompt_lookup_min/max set a context match, which a 'ptp' or "
                                 "'cp' draft uses only with \"hybrid\": \"ngram\"")
            if draft_max_batch_size is not None:
                raise ValueError("speculative_config.hybrid_draft_max_batch_size limits the learned draft of a "
                                 "hybrid; it needs \"hybrid\" (\"ngram\" or \"suffix\")")
            return None
        if hybrid not in HYBRID_KINDS:
            raise ValueError(f"speculative_config.hybrid: expected one of {list(HYBRID_KINDS)}, got {hybrid!r}")
        if draft_max_batch_size not in (None, AUTO) and (isinstance(draft_max_batch_size, bool)
                                                         or not isinstance(draft_max_batch_size, int)
                                                         or draft_max_batch_size < 1):
            raise ValueError(f"speculative_config.hybrid_draft_max_batch_size: expected a whole number >= 1 (the "
                             f"largest batch in which the learned draft drafts) or \"{AUTO}\" (whichever is faster, "
                             f"measured while serving), got {draft_max_batch_size!r}")
        if hybrid == SUFFIX:
            if lookup:
                raise ValueError("speculative_config: prompt_lookup_min/max are the match lengths of \"hybrid\": "
                                 "\"ngram\"; \"suffix\" matches any length and takes vLLM's suffix_decoding_* "
                                 "settings")
            try:  # its compiled trees, not only the package: a failed build leaves the package importable
                importlib.import_module(SUFFIX_PACKAGE + ".suffix_decoding")
            except ImportError:
                raise ValueError("speculative_config.hybrid \"suffix\" drafts with vLLM's suffix decoding, which "
                                 "needs the arctic-inference package (docs/serving.md, \"Hybrid drafting\", has the "
                                 "install command); install it, or use \"hybrid\": \"ngram\"") from None
            return cls(hybrid, None, None, draft_max_batch_size)
        low = prompt_lookup_min if prompt_lookup_min is not None else min(DEFAULT_MIN_MATCH,
                                                                           prompt_lookup_max or DEFAULT_MIN_MATCH)
        high = prompt_lookup_max if prompt_lookup_max is not None else max(DEFAULT_MAX_MATCH, low)
        if low < 1 or low > high:
            raise ValueError(f"speculative_config: the hybrid match lengths need 1 <= prompt_lookup_min <= "
                             f"prompt_lookup_max, got {low} and {high}")
        return cls(hybrid, low, high, draft_max_batch_size)

    def drafts_learned(self, batch_size: int) -> bool:
        """Whether a fixed limit lets the learned draft draft in a step of batch_size requests (under "auto" the
        runner's LearnedDraftGate decides)."""
        return not isinstance(self.draft_max_batch_size, int) or batch_size <= self.draft_max_batch_size


@dataclass
class StepHistory:
    """What the matchers search, for each row of a step: its tokens so far (prompt, output, and this step's new
    tokens), the tokens this step added ([] for a row that does not draft: a partial prefill), its request and its
    prompt's length."""
    tokens: np.ndarray  # [B or more, L]
    lengths: np.ndarray  # [B]: valid tokens of each row
    new_tokens: list[list[int]]  # [B]
    requests: list[str]
    prompt_lengths: np.ndarray  # [B or more]

    @property
    def active(self) -> list[bool]:
        return [bool(tokens) for tokens in self.new_tokens]

    @classmethod
    def from_table(cls, token_ids: np.ndarray, num_tokens: np.ndarray, new_tokens: list[list[int]],
                   requests: list[str], prompt_lengths: np.ndarray, in_table: bool) -> "StepHistory":
        """The runner's CPU token table [B, L] and valid lengths, and this step's tokens per row, which the table
        already holds (in_table) or not yet."""
        batch = len(new_tokens)
        if in_table:
            return cls(token_ids, np.asarray(num_tokens[:batch]), new_tokens, requests, prompt_lengths)
        lengths = np.array([num_tokens[i] + len(new_tokens[i]) for i in range(batch)], dtype=np.int32)
        tokens = np.zeros((batch, max(int(lengths.max(initial=0)), 1)), dtype=np.int32)
        for i in range(batch):
            n = int(num_tokens[i])
            tokens[i, :n] = token_ids[i, :n]
            tokens[i, n:lengths[i]] = new_tokens[i]
        return cls(tokens, lengths, new_tokens, requests, prompt_lengths)


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
        length = settings.max_match + 2
        self.match(StepHistory(np.zeros((1, length), dtype=np.int32), np.array([length], dtype=np.int32), [[0]],
                               ["warm-up"], np.array([length], dtype=np.int32)))

    def match(self, history: StepHistory) -> tuple[list[list[int]], list[int]]:
        """-> up to k matched tokens per row ([] where there is no match or the row does not draft), and each
        row's matched suffix length (0: none), the key its acceptance is measured by (match_acceptance)."""
        searching = history.active
        matches: list[list[int]] = [[] for _ in searching]
        suffix = [0] * len(searching)
        for n, ngram in self.by_length.items():
            if not any(searching):
                break
            rows = [[0] if on else [] for on in searching]  # NgramProposer skips rows without new tokens
            for i, match in enumerate(ngram.propose(self.k, rows, history.lengths, history.tokens)):
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
