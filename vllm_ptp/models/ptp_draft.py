"""PTP draft (Parallel Token Prediction, Draxler et al., arXiv 2512.21323), laid out as vLLM's EAGLE-3 parallel drafting.

Context slot t reads (fc(target states entering the auxiliary layers at t), embedding of x_{t+1}) at position t and
predicts x_{t+2}; its KV is the draft's memory of the context. At a draft step the last context slot ("bonus", the
token just sampled) gives q_1, and K-1 mask slots follow at the next positions: mask slot m reads
fc(mask_hidden) + u_embed(u_m) + temperature_embed(T) with the mask token's embedding and gives q_{m+1}. Attention is
causal, so slot m sees u_1..u_m: it knows the tokens x_j = pick(u_j, q_j) drafted before it, which makes the q's proper
conditionals of one joint draft (C-PTP) from a single forward pass. u_embedding "none" is the independent ablation:
the same slots without u. Without `ptp_conditioning` at all the same module is vLLM's P-EAGLE draft (speculators type
"peagle"), and without mask slots its EAGLE-3 draft ("eagle3"), which drafts sequentially (`propose_logits_sequential`).

Parameter names follow vLLM's EAGLE-3 checkpoints (`fc`, `layers.N.*`, `norm`, `lm_head`, `d2t`, `mask_hidden`) plus
`ptp_conditioning.*`, so vLLM's own draft class loads the same safetensors. The target's embedding is borrowed (not
saved); the LM head is the target's rows for the draft vocabulary, frozen.
"""
from __future__ import annotations

from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

from vllm_ptp.kernels import u_features
from vllm_ptp.models.checkpoint import WEIGHTS_FILE, CheckpointError, load_matching_weights
from vllm_ptp.models.layers import RMSNorm
from vllm_ptp.models.ptp_config import PTPConfig


def greedy_feature(temperature: torch.Tensor) -> torch.Tensor:
    """[..] -> [.., 2]: (is greedy, temperature), the request's sampling temperature as the draft sees it."""
    t = temperature.float().clamp(min=0.0)
    return torch.stack([(t <= 0).float(), t], dim=-1)


class PTPConditioning(nn.Module):
    """What a mask slot adds to fc(mask_hidden): the embedding of its u and of the request's temperature."""

    def __init__(self, kind: str, n: int, hidden: int):
        super().__init__()
        self.kind, self.n = kind, n
        if kind in ("binary", "quarter_cos"):
            self.u_proj = nn.Linear(n, hidden)
            nn.init.normal_(self.u_proj.weight, std=0.02)
            nn.init.zeros_(self.u_proj.bias)
        elif kind == "linear_interpolation":
            self.u_knots = nn.Parameter(torch.randn(n, hidden) * 0.02)
        self.temperature_proj = nn.Linear(2, hidden)
        nn.init.zeros_(self.temperature_proj.weight)
        nn.init.zeros_(self.temperature_proj.bias)

    def embed_u(self, u: torch.Tensor) -> torch.Tensor | None:
        if self.kind in ("binary", "quarter_cos"):
            return self.u_proj(u_features(u, self.kind, self.n).to(self.u_proj.weight.dtype))
        if self.kind == "linear_interpolation":  # piecewise-linear between n learned vectors spread over [0, 1]
            x = u.float().clamp(0, 1) * (self.n - 1)
            lo = x.floor().long().clamp(max=self.n - 2)
            w = (x - lo).unsqueeze(-1).to(self.u_knots.dtype)
            return self.u_knots[lo] * (1 - w) + self.u_knots[lo + 1] * w
        return None

    def forward(self, u: torch.Tensor, temperature: torch.Tensor) -> torch.Tensor:
        """u [B, M], temperature [B] -> [B, M, H]."""
        out = self.temperature_proj(greedy_feature(temperature).to(self.temperature_proj.weight.dtype))
        out = out.unsqueeze(1).expand(-1, u.shape[1], -1)
        embedded = self.embed_u(u)
        return out if embedded is None else out + embedded


def rotary(x: torch.Tensor, positions: torch.Tensor, theta: float) -> torch.Tensor:
    """Neox-style rotary embedding (rotate halves), as vLLM's and transformers' Llama. x [B, h, T, d]."""
    d = x.shape[-1]
    inv_freq = 1.0 / (theta ** (torch.arange(0, d, 2, device=x.device, dtype=torch.float32) / d))
    angles = positions.float().unsqueeze(-1) * inv_freq  # [B, T, d/2]
    cos, sin = angles.cos().unsqueeze(1), angles.sin().unsqueeze(1)
    x1, x2 = x.float()[..., : d // 2], x.float()[..., d // 2:]
    return torch.cat([x1 * cos - x2 * sin, x2 * cos + x1 * sin], dim=-1).to(x.dtype)


class Attention(nn.Module):
    def __init__(self, config: PTPConfig, in_dim: int):
        super().__init__()
        self.heads, self.kv_heads, self.head_dim = (config.num_attention_heads, config.num_key_value_heads,
                                                    config.head_dim)
        self.theta = config.rope_theta
        self.q_proj = nn.Linear(in_dim, self.heads * self.head_dim, bias=False)
        self.k_proj = nn.Linear(in_dim, self.kv_heads * self.head_dim, bias=False)
        self.v_proj = nn.Linear(in_dim, self.kv_heads * self.head_dim, bias=False)
        self.o_proj = nn.Linear(self.heads * self.head_dim, config.hidden_size, bias=False)

    def forward(self, x: torch.Tensor, positions: torch.Tensor, allowed: torch.Tensor,
                cache: dict | None = None) -> torch.Tensor:
        """allowed [B, T, keys]; with `cache` (a dict per layer), the keys/values of earlier calls come before this
        call's, which are appended: sequential drafting and training-time test reuse the context's."""
        B, T, _ = x.shape
        q = self.q_proj(x).view(B, T, self.heads, self.head_dim).transpose(1, 2)
        k = self.k_proj(x).view(B, T, self.kv_heads, self.head_dim).transpose(1, 2)
        v = self.v_proj(x).view(B, T, self.kv_heads, self.head_dim).transpose(1, 2)
        q, k = rotary(q, positions, self.theta), rotary(k, positions, self.theta)
        if cache is not None:
            if cache:
                k, v = torch.cat([cache["k"], k], dim=2), torch.cat([cache["v"], v], dim=2)
            cache["k"], cache["v"] = k, v
        repeat = self.heads // self.kv_heads
        k, v = k.repeat_interleave(repeat, dim=1), v.repeat_interleave(repeat, dim=1)
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=allowed.unsqueeze(1))
        return self.o_proj(y.transpose(1, 2).reshape(B, T, -1))


class MLP(nn.Module):
    def __init__(self, config: PTPConfig):
        super().__init__()
        self.gate_proj = nn.Linear(config.hidden_size, config.intermediate_size, bias=False)
        self.up_proj = nn.Linear(config.hidden_size, config.intermediate_size, bias=False)
        self.down_proj = nn.Linear(config.intermediate_size, config.hidden_size, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class DecoderLayer(nn.Module):
    """Layer 0 attends over [input_layernorm(token embedding), hidden_norm(hidden)] (2H wide), as EAGLE-3."""

    def __init__(self, config: PTPConfig, first: bool):
        super().__init__()
        H = config.hidden_size
        self.first = first
        self.self_attn = Attention(config, 2 * H if first else H)
        self.mlp = MLP(config)
        self.input_layernorm = RMSNorm(H, config.rms_norm_eps)
        self.post_attention_layernorm = RMSNorm(H, config.rms_norm_eps)
        if first:
            self.hidden_norm = RMSNorm(H, config.rms_norm_eps)

    def forward(self, embeds, hidden, residual, positions, allowed, cache=None):
        if self.first:
            residual = hidden
            x = torch.cat([self.input_layernorm(embeds), self.hidden_norm(hidden)], dim=-1)
        else:
            residual = hidden + residual
            x = self.input_layernorm(residual)
        residual = self.self_attn(x, positions, allowed, cache) + residual
        return self.mlp(self.post_attention_layernorm(residual)), residual


class PTPDraft(nn.Module):
    def __init__(self, config: PTPConfig):
        super().__init__()
        self.config = config
        H = config.hidden_size
        self.fc = nn.Linear(len(config.aux_layer_ids) * H, H, bias=False)
        self.layers = nn.ModuleList([DecoderLayer(config, i == 0) for i in range(config.num_hidden_layers)])
        self.norm = RMSNorm(H, config.rms_norm_eps)
        self.lm_head = nn.Linear(H, config.draft_vocab_size, bias=False)
        self.lm_head.weight.requires_grad_(False)
        if config.parallel:
            self.mask_hidden = nn.Parameter(torch.zeros(len(config.aux_layer_ids) * H))
        if config.conditioned:
            self.ptp_conditioning = PTPConditioning(config.u_embedding, config.u_features, H)
        self.register_buffer("d2t", torch.zeros(config.draft_vocab_size, dtype=torch.long))
        self.embed: torch.Tensor | None = None  # the target's, borrowed

    def attach_target(self, embed_weight: torch.Tensor, lm_head_weight: torch.Tensor | None = None,
                      draft_vocab: torch.Tensor | None = None) -> None:
        """Borrow the target's embedding; with lm_head_weight + draft_vocab (sorted target ids), set the frozen
        LM head rows and the draft-to-target map (only when building a new draft)."""
        self.embed = embed_weight
        if draft_vocab is not None:
            self.lm_head.weight.data.copy_(lm_head_weight[draft_vocab])
            self.d2t.copy_(draft_vocab - torch.arange(len(draft_vocab), device=draft_vocab.device))

    def draft_to_target(self) -> torch.Tensor:
        return self.d2t + torch.arange(len(self.d2t), device=self.d2t.device)

    def forward(self, hidden: torch.Tensor, token_ids: torch.Tensor, positions: torch.Tensor,
                allowed: torch.Tensor) -> torch.Tensor:
        """hidden [B, T, H] (fc output or mask rows), token_ids/positions [B, T], allowed [B, T, T] bool
        (query, key) -> final normed states [B, T, H]."""
        return self.norm(self.prenorm_states(hidden, token_ids, positions, allowed))

    def prenorm_states(self, hidden: torch.Tensor, token_ids: torch.Tensor, positions: torch.Tensor,
                       allowed: torch.Tensor, caches: list[dict] | None = None) -> torch.Tensor:
        """As forward, before the final norm: the state vLLM's EAGLE-3 feeds the next sequential step. `caches`:
        one dict per layer (see Attention.forward); allowed is then [B, T, cached + T]."""
        embeds = F.embedding(token_ids, self.embed).to(hidden.dtype)
        residual = None
        caches = caches or [None] * len(self.layers)
        for layer, cache in zip(self.layers, caches):
            hidden, residual = layer(embeds, hidden, residual, positions, allowed, cache)
        return hidden + residual

    def mask_rows(self, u: torch.Tensor, temperature: torch.Tensor) -> torch.Tensor:
        """u [B, M] (the u of the draft token before each mask slot), temperature [B] -> mask-slot inputs [B, M, H]."""
        base = self.fc(self.mask_hidden.to(self.fc.weight.dtype))
        if not self.config.conditioned:
            return base.expand(*u.shape, -1)
        return base + self.ptp_conditioning(u, temperature).to(base.dtype)

    def draft_logits(self, states: torch.Tensor) -> torch.Tensor:
        """-> logits over the draft vocabulary [.., draft_vocab] (draft ids; draft_to_target() maps them)."""
        return self.lm_head(states)

    def full_vocab_logits(self, states: torch.Tensor) -> torch.Tensor:
        """Logits over the target's vocabulary (-inf outside the draft vocabulary), as vLLM's EAGLE-3 class gives."""
        logits = self.draft_logits(states).float()
        full = logits.new_full((*logits.shape[:-1], self.config.vocab_size), float("-inf"))
        full[..., self.draft_to_target()] = logits
        return full

    def propose_logits(self, aux: torch.Tensor, next_tokens: torch.Tensor, u: torch.Tensor,
                       temperature: torch.Tensor, k: int) -> torch.Tensor:
        """One draft step for one sequence, the reference for vLLM's: aux [L, n_aux*H] target states at positions
        0..L-1, next_tokens [L] (x_1..x_L: the token after each position, the last one just sampled), u [k-1]
        -> full-vocabulary logits [k, V] of the bonus slot and k-1 mask slots."""
        L = aux.shape[0]
        hidden = torch.cat([self.fc(aux.to(self.fc.weight.dtype)),
                            self.mask_rows(u.view(1, -1), temperature.view(1))[0]])
        tokens = torch.cat([next_tokens, torch.full((k - 1,), self.config.mask_token_id,
                                                    device=next_tokens.device)])
        positions = torch.cat([torch.arange(L), L - 1 + torch.arange(1, k)]).to(aux.device)
        allowed = torch.ones(L + k - 1, L + k - 1, dtype=torch.bool, device=aux.device).tril()
        states = self.forward(hidden[None], tokens[None], positions[None], allowed[None])[0]
        return self.full_vocab_logits(states[L - 1:])

    def propose_logits_sequential(self, aux: torch.Tensor, next_tokens: torch.Tensor, k: int) -> torch.Tensor:
        """Greedy EAGLE-3 drafting for one sequence, the reference for vLLM's eagle3 method: aux and next_tokens as
        in propose_logits; step j > 1 reads (the pre-norm state that predicted d_{j-1}, the embedding of d_{j-1})
        at the next position -> full-vocabulary logits [k, V] of d_1..d_k."""
        L = aux.shape[0]
        caches = [{} for _ in self.layers]
        allowed = torch.ones(L, L, dtype=torch.bool, device=aux.device).tril()
        state = self.prenorm_states(self.fc(aux.to(self.fc.weight.dtype))[None], next_tokens[None],
                                    torch.arange(L, device=aux.device)[None], allowed[None], caches)[:, -1:]
        logits = [self.full_vocab_logits(self.norm(state))[0, 0]]
        for j in range(1, k):
            token = logits[-1].argmax().view(1, 1)
            position = torch.full((1, 1), L - 1 + j, device=aux.device)
            state = self.prenorm_states(state, token, position,
                                        torch.ones(1, 1, L + j, dtype=torch.bool, device=aux.device), caches)
            logits.append(self.full_vocab_logits(self.norm(state))[0, 0])
        return torch.stack(logits)


def load_ptp_draft(folder: str | Path, device: torch.device | str = "cpu",
                   dtype: torch.dtype = torch.float32) -> PTPDraft:
    """The draft from a checkpoint folder; every tensor name and shape checked against config.json."""
    config = PTPConfig.from_checkpoint(folder)
    model = PTPDraft(config)
    state = load_matching_weights(folder, model.state_dict())
    d2t = state["d2t"] + torch.arange(len(state["d2t"]))
    if d2t.min() < 0 or d2t.max() >= config.vocab_size or not (d2t[1:] > d2t[:-1]).all():
        raise CheckpointError(f"{Path(folder) / WEIGHTS_FILE}: tensor 'd2t' must map draft ids to increasing target "
                              f"ids below {config.vocab_size}")
    model.load_state_dict(state)
    return model.to(device=device, dtype=dtype).eval()
