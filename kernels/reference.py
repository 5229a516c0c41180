"""Torch references for auxiliary-variable sampling: the CPU path and the oracle for the Triton kernels.

Conventions (PTP, Draxler et al.): a token is picked from a processed distribution by inverse CDF at u in [0, 1),
with the vocabulary in token-id order. Temperature 0 means greedy (argmax); top_k <= 0 or >= V and top_p >= 1 are off.

Ties: top-k keeps every token whose scaled logit equals the k-th largest, and top-p keeps every token whose
probability equals the smallest probability of the kept set (both are then functions of the values alone, not of a
sort order among equal values; the Triton kernels cut at a threshold value and do the same).
"""
from __future__ import annotations

import torch


def processed_probs(logits: torch.Tensor, temperature: torch.Tensor, top_k: torch.Tensor | None = None,
                    top_p: torch.Tensor | None = None) -> torch.Tensor:
    """logits [N, V], temperature [N], top_k [N] int, top_p [N] -> probabilities [N, V] (float32).

    Rows with temperature 0 become one-hot at the argmax. top-p keeps the smallest set of most likely tokens whose
    mass reaches p (as vLLM's sampler does), plus any token tied with the least likely member of that set; it needs
    an order, so it sorts the row.
    """
    logits = logits.float()
    greedy = temperature <= 0
    scaled = logits / torch.where(greedy, 1.0, temperature.float()).unsqueeze(-1)
    V = logits.shape[-1]
    if top_k is not None:
        k = torch.where((top_k <= 0) | (top_k >= V), V, top_k).long()
        kth = scaled.topk(int(k.max()), dim=-1).values.gather(-1, (k - 1).unsqueeze(-1))
        scaled = scaled.masked_fill(scaled < kth, float("-inf"))
    probs = scaled.softmax(-1)
    if top_p is not None and bool((top_p < 1).any()):
        sorted_probs, _ = probs.sort(-1, descending=True)
        mass_before = sorted_probs.cumsum(-1) - sorted_probs
        n_keep = (mass_before < top_p.float().unsqueeze(-1)).sum(-1, keepdim=True).clamp_(min=1)
        smallest_kept = sorted_probs.gather(-1, n_keep - 1)
        cut = (probs < smallest_kept) & (top_p < 1).unsqueeze(-1)  # rows at p >= 1 keep their rounding tail
        probs = probs.masked_fill(cut, 0.0)
        probs = probs / probs.sum(-1, keepdim=True)
    one_hot = torch.zeros_like(probs).scatter_(-1, logits.argmax(-1, keepdim=True), 1.0)
    return torch.where(greedy.unsqueeze(-1), one_hot, probs)


def _last_positive(probs: torch.Tensor) -> torch.Tensor:
    ids = torch.arange(probs.shape[-1], device=probs.device)
    return torch.where(probs > 0, ids, -1).amax(-1)


def pick_from_probs(u: torch.Tensor, probs: torch.Tensor) -> torch.Tensor:
    """Inverse CDF in token-id order: the smallest id whose cumulative probability exceeds u. u [N], probs [N, V].

    u is scaled by the row total so rounding never walks past the end; should u * total still round up to the total
    (u within an ulp of 1), the last token with nonzero probability is taken.
    """
    cdf = probs.float().cumsum(-1)
    target = (u.float() * cdf[:, -1]).unsqueeze(-1)
    picked = torch.searchsorted(cdf, target, right=True).squeeze(-1)
    return torch.minimum(picked, _last_positive(probs).clamp(min=0))


def pick_from_logits(logits: torch.Tensor, temperature: torch.Tensor, top_k: torch.Tensor | None,
                     top_p: torch.Tensor | None, u: torch.Tensor, return_probs: bool = False):
    """The fused entry point's reference: processed_probs, then pick at u.

    Returns (token ids [N] int64, probability of the picked token [N] float32) and, with return_probs, the processed
    probabilities [N, V] float32 as a third element.
    """
    probs = processed_probs(logits, temperature, top_k, top_p)
    tokens = pick_from_probs(u, probs)
    token_probs = probs.gather(-1, tokens.unsqueeze(-1)).squeeze(-1)
    return (tokens, token_probs, probs) if return_probs else (tokens, token_probs)


def _smallest_u_reaching(c: torch.Tensor, total: torch.Tensor) -> torch.Tensor:
    """Smallest float32 u in [0, 1] with fl32(u * total) >= c (c <= total, total > 0): pick's boundary, exactly."""
    u = (c.double() / total.double()).float().clamp(0.0, 1.0)
    zero, two = torch.zeros_like(u), torch.full_like(u, 2.0)
    for _ in range(64):  # the division is within an ulp or two of the boundary: a few steps suffice
        lower = torch.nextafter(u, zero)
        down = (u > 0) & (lower * total >= c)
        up = u * total < c
        if not bool((down | up).any()):
            break
        u = torch.where(down, lower, torch.where(up, torch.nextafter(u, two), u))
    return u.clamp(0.0, 1.0)


def interval_from_probs(probs: torch.Tensor, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """[left, right) of each token under `pick_from_probs`: pick_from_probs(u, probs) == token exactly for every float32 u in it.

    right - left equals the token's probability up to float rounding; the last token with nonzero probability gets
    right = 1, zero-probability tokens an empty interval (left == right).
    """
    probs = probs.float()
    cdf = probs.cumsum(-1)
    total = cdf[:, -1]
    tokens = tokens.long()
    c_tok = cdf.gather(-1, tokens.unsqueeze(-1)).squeeze(-1)
    c_prev = torch.where(tokens > 0, cdf.gather(-1, (tokens - 1).clamp(min=0).unsqueeze(-1)).squeeze(-1), 0.0)
    left = _smallest_u_reaching(c_prev, total)
    right = _smallest_u_reaching(c_tok, total)
    last = _last_positive(probs)
    right = torch.where(tokens == last, 1.0, right)
    positive = probs.gather(-1, tokens.unsqueeze(-1)).squeeze(-1) > 0
    beyond = ~positive & (tokens > last)
    left = torch.where(beyond, 1.0, left)
    right = torch.where(positive, torch.maximum(right, left), left)
    return left, right


def cdf_interval(logits: torch.Tensor, temperature: torch.Tensor, top_k: torch.Tensor | None,
                 top_p: torch.Tensor | None, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(left, right) float32 [N]: left = P(id < token), right = left + p(token) under the processed distribution,
    as the exact boundaries `pick_from_logits` uses (see interval_from_probs)."""
    return interval_from_probs(processed_probs(logits, temperature, top_k, top_p), tokens)


def mixture_probs(log_weights: torch.Tensor, component_log_probs: torch.Tensor) -> torch.Tensor:
    """sum_a softmax(log_weights)_a * exp(component_log_probs_a). log_weights [N, r], component_log_probs [N, r, V]."""
    w = log_weights.float().softmax(-1)
    return torch.einsum("nr,nrv->nv", w, component_log_probs.float().exp())


def cp_posterior(log_weights: torch.Tensor, component_log_probs: torch.Tensor, tokens: torch.Tensor,
                 next_component_log_probs: torch.Tensor | None = None):
    """One step of the CP mixture's posterior: log w_a + log P_a(token), then the next position's mixture.

    log_weights [N, r], component_log_probs [N, r, V] (the position the token was drafted at), tokens [N] (ids in
    that V), next_component_log_probs [N, r, V] or None. Returns (updated log-weights [N, r] float32, q [N, V]
    float32 = sum_a softmax(updated)_a * exp(next_a), or None without next_component_log_probs).
    """
    comp = component_log_probs.float()
    idx = tokens.long()[:, None, None].expand(comp.shape[0], comp.shape[1], 1)
    updated = log_weights.float() + comp.gather(-1, idx).squeeze(-1)
    q = None if next_component_log_probs is None else mixture_probs(updated, next_component_log_probs)
    return updated, q


def u_features(u: torch.Tensor, kind: str = "binary", n: int = 32) -> torch.Tensor:
    """Features of the auxiliary variables u [...] -> [..., n] float32.

    "binary": the 32 IEEE-754 bits of float32 u, least significant first (n must be 32); "quarter_cos": cos(k pi u),
    k = 1..n.
    """
    u = u.float()
    if kind == "binary":
        if n != 32:
            raise ValueError("binary u features have exactly 32 bits")
        bits = u.view(torch.int32).unsqueeze(-1) >> torch.arange(32, device=u.device, dtype=torch.int32)
        return (bits & 1).float()
    if kind == "quarter_cos":
        k = torch.arange(1, n + 1, device=u.device, dtype=torch.float32)
        return torch.cos(k * torch.pi * u.unsqueeze(-1))
    raise ValueError(f"unknown u feature kind {kind!r}: use 'binary' or 'quarter_cos'")
