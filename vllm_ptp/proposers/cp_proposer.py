"""Drafting with CP heads: k tokens per request from one heads forward, plus the draft distributions.

Position s draws from the mixture's exact conditional given the tokens drafted before it,
q_s(x) = sum_a w_a^(s) P^(s,a)(x) with posterior weights w_a^(s) ~ w_a * prod_{j<s} P^(j,a)(x_j),
after the request's temperature (on each component) and top-k/top-p (on q_s). The token is the inverse-CDF pick at a
uniform u_s, so the draft randomness is explicit. Greedy requests (temperature 0) take argmax q_s at each position:
greedy decoding of the mixture's chain-rule factorisation, exact for s = 1 and the usual approximation of the joint
mode beyond. Every q_s handed out is exactly the distribution x_s was drawn from, so vLLM's rejection sampler stays
lossless. The top probability of each q_s (before top-k/top-p; greedy rows at temperature 1) is kept in
`last_confidence` [B, k] for draft_confidence. Rank 1 is one product of independent heads: q_s is head s's own
distribution, and all k positions are picked at once.
"""
from __future__ import annotations

from pathlib import Path

import torch

from vllm_ptp.kernels import cp_posterior, mixture_probs, pick_from_logits
from vllm_ptp.models.cp_heads import load_cp_heads


class CPProposer:
    def __init__(self, checkpoint: str | Path, device: torch.device | str = "cpu",
                 dtype: torch.dtype = torch.float32):
        self.checkpoint = Path(checkpoint)
        self.heads = load_cp_heads(self.checkpoint).to(device=device, dtype=dtype).eval()
        self.config = self.heads.config
        self.draft_vocab = self.heads.draft_vocab.to(device)
        self.last_confidence: torch.Tensor | None = None

    def attach_target(self, embed_weight: torch.Tensor, lm_head_weight: torch.Tensor, vocab_size: int) -> None:
        self.config.check_target(self.checkpoint, vocab_size, embed_weight.shape[-1], embed_weight)
        self.heads.attach_target(embed_weight, lm_head_weight)

    @torch.inference_mode()
    def propose(self, hidden: torch.Tensor, last_token: torch.Tensor, k: int, temperature: torch.Tensor,
                top_k: torch.Tensor | None, top_p: torch.Tensor | None,
                uniforms: torch.Tensor, return_probs: bool = True) -> tuple[torch.Tensor, torch.Tensor | None]:
        """hidden [B, H], last_token [B], temperature [B] (0 = greedy), top_k/top_p [B] or None, uniforms [B, k].

        Returns draft token ids [B, k] (target ids) and, with return_probs, draft probabilities [B, k, V_target]
        (float32; an all-greedy batch does not need them).
        """
        B = hidden.shape[0]
        log_w, logits = self.heads(hidden, last_token)
        greedy = temperature <= 0
        scale = torch.where(greedy, 1.0, temperature.float())  # greedy rows' confidences are read at temperature 1
        if self.config.rank == 1:
            return self._propose_independent(logits[:, :k, 0], greedy, scale, temperature, top_k, top_p, uniforms,
                                             return_probs)
        comp_log_probs = (logits[:, :k] / scale[:, None, None, None]).log_softmax(-1)  # [B, k, r, V_draft]
        draft_ids = torch.empty(B, k, dtype=torch.long, device=hidden.device)
        draft_probs = (torch.zeros(B, k, self.config.vocab_size, dtype=torch.float32, device=hidden.device)
                       if return_probs else None)
        # q_s already carries the temperature; the pick only needs to know greedy rows and top-k/top-p.
        row_temperature = torch.where(greedy, 0.0, 1.0)
        log_post, q = log_w, mixture_probs(log_w, comp_log_probs[:, 0])
        self.last_confidence = torch.empty(B, k, dtype=torch.float32, device=hidden.device)
        for s in range(k):
            self.last_confidence[:, s] = q.float().amax(-1)
            x, _, q = pick_from_logits(q.clamp_min(1e-30).log(), row_temperature, top_k, top_p, uniforms[:, s],
                                       return_probs=True, check=False)
            draft_ids[:, s] = self.draft_vocab[x]
            if return_probs:
                draft_probs[:, s, self.draft_vocab] = q
            following = comp_log_probs[:, s + 1] if s + 1 < k else None
            log_post, q = cp_posterior(log_post, comp_log_probs[:, s], x, following, check=False)
        return draft_ids, draft_probs

    def _propose_independent(self, logits: torch.Tensor, greedy: torch.Tensor, scale: torch.Tensor,
                             temperature: torch.Tensor, top_k: torch.Tensor | None, top_p: torch.Tensor | None,
                             uniforms: torch.Tensor, return_probs: bool):
        """Rank 1: the mixture is one product, so q_s is head s's own distribution whatever was drafted before it,
        and all k positions are picked in one call (the general path's posterior updates and per-position picks
        cost about 1 ms a step on a CPU core for nothing). logits [B, k, V_draft]; greedy, scale [B] as in propose."""
        B, k, V = logits.shape
        self.last_confidence = (logits / scale[:, None, None]).softmax(-1).amax(-1)
        if not return_probs and bool(greedy.all()):
            return self.draft_vocab[logits.argmax(-1)], None

        def per_position(row_values: torch.Tensor | None) -> torch.Tensor | None:
            return None if row_values is None else row_values.repeat_interleave(k)

        tokens, _, *probs = pick_from_logits(logits.reshape(B * k, V), per_position(temperature),
                                             per_position(top_k), per_position(top_p), uniforms[:, :k].reshape(-1),
                                             return_probs=return_probs, check=False)
        draft_ids = self.draft_vocab[tokens.view(B, k)]
        if not return_probs:
            return draft_ids, None
        draft_probs = torch.zeros(B, k, self.config.vocab_size, dtype=torch.float32, device=logits.device)
        draft_probs[:, :, self.draft_vocab] = probs[0].view(B, k, V)
        return draft_ids, draft_probs
