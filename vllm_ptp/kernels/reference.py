"""Torch references for auxiliary-variable sampling: the CPU path and the oracle for the Triton kernels.

Conventions (PTP, Draxler et al.): a token is picked from a processed distribution by inverse CDF at u in [0, 1),
with the vocabulary in token-id order. Temperature 0 means greedy (argmax); top_k <= 0 or >= V and top_p >= 1 are off.
"""
from __future__ import annotations

import torch


def processed_probs(logits: torch.Tensor, temperature: torch.Tensor, top_k: torch.Tensor | None = None,
                    top_p: torch.Tensor | None = None) -> torch.Tensor:
    """logits [N, V], temperature [N], top_k [N] int, top_p [N] -> probabilities [N, V] (float32).

    Rows with temperature 0 become one-hot at the argmax. top-p keeps the smallest set of most likely tokens whose
    mass reaches p (as vLLM's sampler does); it needs an order, so it sorts the row.
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
        sorted_probs, order = probs.sort(-1, descending=True)
        mass_before = sorted_probs.cumsum(-1) - sorted_probs
        drop_sorted = mass_before >= top_p.float().unsqueeze(-1)
        drop = torch.zeros_like(drop_sorted).scatter(-1, order, drop_sorted)
        probs = probs.masked_fill(drop, 0.0)
        probs = probs / probs.sum(-1, keepdim=True)
    one_hot = torch.zeros_like(probs).scatter_(-1, logits.argmax(-1, keepdim=True), 1.0)
    return torch.where(greedy.unsqueeze(-1), one_hot, probs)


def pick(u: torch.Tensor, probs: torch.Tensor) -> torch.Tensor:
    """Inverse CDF in token-id order: the smallest id whose cumulative probability exceeds u. u [N], probs [N, V]."""
    cdf = probs.float().cumsum(-1)
    target = (u.float() * cdf[:, -1]).unsqueeze(-1)  # scale by the row total so rounding never walks past the end
    return torch.searchsorted(cdf, target, right=True).squeeze(-1).clamp_(max=probs.shape[-1] - 1)


def mixture_probs(log_weights: torch.Tensor, component_log_probs: torch.Tensor) -> torch.Tensor:
    """sum_a softmax(log_weights)_a * exp(component_log_probs_a). log_weights [N, r], component_log_probs [N, r, V]."""
    w = log_weights.float().softmax(-1)
    return torch.einsum("nr,nrv->nv", w, component_log_probs.float().exp())
