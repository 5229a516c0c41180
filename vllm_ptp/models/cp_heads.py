"""CP-decomposition multi-token heads (Basharin et al., arXiv 2410.17765).

p(x_{t+2..t+1+n} | context) ~= sum_a w_a * prod_s P^(s,a)(x_{t+1+s})

The heads read the target's final (post-norm) hidden state h_t and the embedding of the token x_{t+1} that h_t just
produced, so the mixture predicts the n tokens *after* the one vLLM has already sampled. The target's embedding and LM
head are borrowed (frozen, never saved): only the small trunk, the per-head blocks, the component adapters and the
mixture gate are parameters of this module. Components are scored over a draft vocabulary (a subset of the target's
token ids, stored in the checkpoint) to keep the LM-head matmul cheap on CPU.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from vllm_ptp.models.checkpoint import WEIGHTS_FILE, CheckpointError, load_matching_weights
from vllm_ptp.models.cp_config import CPConfig
from vllm_ptp.models.layers import RMSNorm


class ResBlock(nn.Module):
    def __init__(self, dim: int):
        super().__init__()
        self.linear = nn.Linear(dim, dim)
        nn.init.zeros_(self.linear.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + F.silu(self.linear(x))


class CPHeads(nn.Module):
    def __init__(self, config: CPConfig):
        super().__init__()
        self.config = config
        H, n, r, d = config.hidden_size, config.num_heads, config.rank, config.adapter_dim
        self.fuse = nn.Linear(2 * H, H)
        self.trunk = ResBlock(H)
        self.head_blocks = nn.ModuleList(ResBlock(H) for _ in range(n))
        # Component a of head s = head state + a low-rank, component-specific shift.
        self.adapter_down = nn.ModuleList(nn.Linear(H, d) for _ in range(n))
        self.adapter_up = nn.ModuleList(nn.Linear(d, r * H) for _ in range(n))
        self.gate = nn.Linear(H, r)
        self.out_norm = RMSNorm(H, config.rms_norm_eps)
        self.register_buffer("draft_vocab", torch.arange(config.draft_vocab_size), persistent=True)
        # Borrowed from the target; set by attach_target, never saved.
        self.embed_weight: torch.Tensor | None = None
        self.lm_head_t: torch.Tensor | None = None  # [H, V_draft]
        with torch.no_grad():
            for up in self.adapter_up:
                up.weight.mul_(0.1)

    def attach_target(self, embed_weight: torch.Tensor, lm_head_weight: torch.Tensor) -> None:
        """Borrow the target's embedding [V, H] and LM head [V, H] (frozen; rows beyond V are padding)."""
        V = self.config.vocab_size
        self.embed_weight = embed_weight[:V].detach()
        # Stored transposed and contiguous: the LM-head matmul then runs as a plain [*, H] x [H, V_draft] product
        # (1.6 ms instead of 3.6 ms through a transposed view; fp32, one AVX2 core, 8192 draft tokens).
        self.lm_head_t = lm_head_weight[:V].detach()[self.draft_vocab].T.contiguous()

    def forward(self, hidden: torch.Tensor, last_token: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """hidden [B, H], last_token [B] -> (mixture log-weights [B, r], component logits [B, n, r, V_draft])."""
        assert self.embed_weight is not None, "call attach_target() first"
        B = hidden.shape[0]
        cfg = self.config
        dtype = self.fuse.weight.dtype
        x = torch.cat([hidden.to(dtype), self.embed_weight[last_token].to(dtype)], dim=-1)
        z = self.trunk(self.fuse(x))
        log_w = F.log_softmax(self.gate(z).float(), dim=-1)
        states = []
        for s in range(cfg.num_heads):
            zs = self.head_blocks[s](z)
            shift = self.adapter_up[s](F.silu(self.adapter_down[s](zs))).view(B, cfg.rank, cfg.hidden_size)
            states.append(zs.unsqueeze(1) + shift)
        g = self.out_norm(torch.stack(states, dim=1))  # [B, n, r, H]
        logits = g @ self.lm_head_t.to(dtype)
        return log_w, logits.float()


def joint_log_likelihood(log_w: torch.Tensor, logits: torch.Tensor, labels: torch.Tensor,
                         label_mask: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """log p(labels) under the mixture and the posterior responsibilities.

    log_w [B, r], logits [B, n, r, V], labels [B, n] (indices into the draft vocabulary, -1 = not in it).
    label_mask [B, n] drops positions beyond the sequence end. Returns (log-likelihood [B], responsibilities [B, r]).
    An out-of-draft-vocabulary label makes the whole window unreachable for the draft; it is masked out here and its
    cost is carried by the caller's count of such labels.
    """
    valid = labels >= 0
    if label_mask is not None:
        valid = valid & label_mask
    idx = labels.clamp(min=0)[:, :, None, None].expand(-1, -1, logits.shape[2], 1)
    comp_lp = logits.log_softmax(-1).gather(-1, idx).squeeze(-1)  # [B, n, r]
    comp_lp = comp_lp * valid.unsqueeze(-1)
    joint = log_w + comp_lp.sum(1)  # [B, r]
    ll = torch.logsumexp(joint, dim=-1)
    resp = (joint - ll.unsqueeze(-1)).exp()
    return ll, resp


def load_balancing_loss(log_w: torch.Tensor, responsibilities: torch.Tensor) -> torch.Tensor:
    """Switch-style balance term r * sum_a f_a * P_a: f_a = mean posterior mass, P_a = mean gate weight. 1.0 = balanced."""
    r = log_w.shape[-1]
    f = responsibilities.detach().mean(0)
    p = log_w.exp().mean(0)
    return r * (f * p).sum()


def load_cp_heads(folder) -> CPHeads:
    """Build CPHeads from a checkpoint folder; every mismatch is a CheckpointError naming the file."""
    config = CPConfig.from_checkpoint(folder)
    heads = CPHeads(config)
    weights = load_matching_weights(folder, heads.state_dict())
    path = f"{folder}/{WEIGHTS_FILE}"
    vocab = weights["draft_vocab"]
    if vocab.min() < 0 or vocab.max() >= config.vocab_size:
        raise CheckpointError(f"{path}: tensor 'draft_vocab' holds ids outside [0, {config.vocab_size})")
    heads.load_state_dict(weights)
    return heads
