"""Configuration of CP-decomposition heads, stored as a speculators-style config.json."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from vllm_ptp.models.checkpoint import (CONFIG_FILE, CheckpointError, check_fingerprint, read_config, require,
                                          require_positive)

CP_TYPE = "cp"


@dataclass
class CPConfig:
    hidden_size: int
    vocab_size: int
    num_heads: int
    rank: int
    draft_vocab_size: int
    adapter_dim: int = 64
    rms_norm_eps: float = 1e-5
    # What the heads were trained on: {"name_or_path", "architectures", "embedding_fingerprint"}.
    verifier: dict = field(default_factory=dict)

    def to_json(self) -> dict:
        body = asdict(self)
        verifier = body.pop("verifier")
        return {
            "architectures": ["CPHeads"],
            "speculators_model_type": CP_TYPE,
            "speculators_version": "vllm-ptp-0.1",
            **body,
            "speculators_config": {
                "algorithm": CP_TYPE,
                "proposal_methods": [{"proposal_type": "greedy", "speculative_tokens": self.num_heads}],
                "default_proposal_method": "greedy",
                "verifier": verifier,
            },
        }

    @classmethod
    def from_checkpoint(cls, folder: str | Path) -> "CPConfig":
        path = Path(folder) / CONFIG_FILE
        config = read_config(folder)
        kind = config.get("speculators_model_type")
        if kind != CP_TYPE:
            raise CheckpointError(f"{path}: field 'speculators_model_type' is {kind!r}, expected {CP_TYPE!r} "
                                  f"(a CP-heads draft made by `vllm-ptp train cp`)")
        ints = {name: require(config, name, int, path)
                for name in ("hidden_size", "vocab_size", "num_heads", "rank", "draft_vocab_size", "adapter_dim")}
        require_positive(ints, path)
        if ints["draft_vocab_size"] > ints["vocab_size"]:
            raise CheckpointError(f"{path}: field 'draft_vocab_size' ({ints['draft_vocab_size']}) exceeds "
                                  f"'vocab_size' ({ints['vocab_size']})")
        verifier = config.get("speculators_config", {}).get("verifier", {})
        return cls(**ints, rms_norm_eps=float(config.get("rms_norm_eps", 1e-5)), verifier=verifier)

    def check_target(self, folder: str | Path, vocab_size: int, hidden_size: int,
                     embed_weight: torch.Tensor | None = None) -> None:
        """Refuse a target the heads were not trained for."""
        path = Path(folder) / CONFIG_FILE
        if hidden_size != self.hidden_size:
            raise CheckpointError(f"{path}: field 'hidden_size' is {self.hidden_size} but the target model's hidden "
                                  f"size is {hidden_size}: these heads were trained for another target")
        if vocab_size != self.vocab_size:
            raise CheckpointError(f"{path}: field 'vocab_size' is {self.vocab_size} but the target model's vocab "
                                  f"size is {vocab_size}: these heads were trained for another target")
        if embed_weight is not None:
            check_fingerprint(path, self.verifier, embed_weight)
