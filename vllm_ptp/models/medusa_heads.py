"""Medusa heads (Cai et al., arXiv 2401.10774) in plain torch, with vLLM's checkpoint layout as the state_dict.

Head i reads the target's final (post-norm) hidden state h_t, the state that produced token x_{t+1}, and predicts
x_{t+2+i}: vLLM samples x_{t+1} from the target itself and asks head i for draft position i. Each head is a stack of
residual blocks x + SiLU(W x + b); all heads share one LM head, the target's, frozen. Blocks start at zero, so an
untrained head is the target's own head on h_t.

state_dict names are exactly vLLM's: blocks.{i}.layers.{j}.weight/bias and lm_heads.0.weight (the shared head, vLLM's
`original_lm_head`).
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from vllm_ptp.models.checkpoint import load_matching_weights
from vllm_ptp.models.medusa_config import MedusaConfig


class ResidualBlocks(nn.Module):
    def __init__(self, dim: int, num_layers: int):
        super().__init__()
        self.layers = nn.ModuleList(nn.Linear(dim, dim) for _ in range(num_layers))
        for layer in self.layers:
            nn.init.zeros_(layer.weight)
            nn.init.zeros_(layer.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.layers:
            x = x + F.silu(layer(x))
        return x


class MedusaHeads(nn.Module):
    def __init__(self, config: MedusaConfig):
        super().__init__()
        self.config = config
        H = config.hidden_size
        self.blocks = nn.ModuleList(ResidualBlocks(H, config.num_hidden_layers) for _ in range(config.num_heads))
        self.lm_heads = nn.ModuleList([nn.Linear(H, config.vocab_size, bias=False)])
        self.lm_heads[0].weight.requires_grad_(False)

    @property
    def lm_head_weight(self) -> torch.Tensor:
        return self.lm_heads[0].weight

    def init_from_target(self, lm_head_weight: torch.Tensor) -> None:
        """The shared LM head := the target's [V, H] (rows beyond V are padding)."""
        with torch.no_grad():
            self.lm_head_weight.copy_(lm_head_weight[:self.config.vocab_size])

    def states(self, hidden: torch.Tensor) -> torch.Tensor:
        """hidden [B, H] -> each head's state before the LM head [B, num_heads, H]."""
        hidden = hidden.to(self.lm_head_weight.dtype)
        return torch.stack([block(hidden) for block in self.blocks], dim=1)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        """hidden [B, H] -> logits [B, num_heads, V]."""
        return self.lm_heads[0](self.states(hidden))

    @torch.no_grad()
    def draft(self, hidden: torch.Tensor) -> torch.Tensor:
        """What vLLM's Medusa proposer drafts: each head's argmax [B, num_heads]."""
        return self(hidden).argmax(-1)


def load_medusa_heads(folder) -> MedusaHeads:
    """Build MedusaHeads from a checkpoint folder; every mismatch is a CheckpointError naming the file."""
    heads = MedusaHeads(MedusaConfig.from_checkpoint(folder))
    heads.load_state_dict(load_matching_weights(folder, heads.state_dict()))
    return heads
