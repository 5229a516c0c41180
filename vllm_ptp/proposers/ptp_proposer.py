"""Drafting with a PTP draft: the auxiliary variables u go in before the forward, the picks come out after it.

A step draws u [B, K] per request (from the request's own generator when it is seeded), feeds u_1..u_{K-1} and the
request's temperature to the mask slots, runs the draft once, then picks x_i = Pick(u_i, q_i) in every slot at once,
where q_i is the slot's distribution after the request's temperature / top-k / top-p: the same u that slot i+1 was
told about, so the tokens are the ones the later slots conditioned on. The q_i are handed to vLLM's rejection
sampler unchanged (C-PTP: proper conditionals, so verification stays lossless).
"""
from __future__ import annotations

import torch

from vllm_ptp.kernels import pick_from_logits


def draw_uniforms(batch: int, k: int, generators: dict[int, torch.Generator], temperature: torch.Tensor | None,
                  device: torch.device, seeded_rows: set[int] | None = None) -> torch.Tensor:
    """u [batch, k] ~ U[0, 1); rows of seeded requests (index -> generator) come from their generator, if in
    seeded_rows (None: all); the others' generators are left as they are.

    Greedy rows (temperature None or <= 0) get u = 1/2: at temperature 0 every u picks the argmax and tells the draft
    nothing, and a fixed u keeps greedy drafts deterministic. Random u's there would change how many tokens greedy
    requests get accepted, hence which steps batch with which, hence the float rounding that seeded requests in the
    same batch see: their answers would no longer repeat run to run."""
    u = torch.rand(batch, k, device=device)
    for i, generator in generators.items():
        if i < batch and (seeded_rows is None or i in seeded_rows):
            u[i] = torch.rand(k, generator=generator, device=generator.device).to(device)
    if temperature is None:
        return u.fill_(0.5)
    return u.masked_fill_((temperature[:batch] <= 0).unsqueeze(1), 0.5)


def pick_drafts(logits: torch.Tensor, u: torch.Tensor, temperature: torch.Tensor | None,
                top_k: torch.Tensor | None, top_p: torch.Tensor | None, return_probs: bool
                ) -> tuple[torch.Tensor, torch.Tensor | None]:
    """logits [B*K, V] (request-major slots), u [B, K], per-request temperature (None: all greedy) / top-k / top-p
    [B] -> draft ids [B*K], processed draft probabilities [B*K, V] float32 (or None)."""
    B, K = u.shape
    if temperature is None:
        temperature = torch.zeros(B, device=logits.device)

    def per_slot(x):
        return None if x is None else x.repeat_interleave(K)

    ids, _, *probs = pick_from_logits(logits, per_slot(temperature), per_slot(top_k), per_slot(top_p),
                                      u.reshape(-1), return_probs=return_probs, check=False)
    return ids, (probs[0] if return_probs else None)
