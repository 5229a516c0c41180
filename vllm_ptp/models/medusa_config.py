"""Configuration of Medusa heads, stored as the config.json vLLM's own `method: medusa` loader reads.

vLLM 0.32 (transformers_utils/configs/medusa.py, model_executor/models/medusa.py) reads: model_type "medusa",
hidden_size, vocab_size, num_heads, num_hidden_layers (residual blocks per head), medusa_fc_bias (without it the
blocks' biases are silently dropped), original_lm_head (one LM head shared by all heads, stored as lm_heads.0.weight)
and truncated_vocab_size. `n_predict` lets `num_speculative_tokens` default to the number of heads. Its loader renames
every key holding "num" and "heads" (or "layers") to num_heads (num_hidden_layers), so no other such key may appear.

A truncated vocabulary (truncated_vocab_size < vocab_size plus a `token_map` tensor) is refused: vLLM 0.32 turns
token_map into a parameter during loading but never reports it loaded, so the engine fails at start-up with
"Following weights were not initialized from checkpoint: {'token_map'}".
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from vllm_ptp.models.checkpoint import CONFIG_FILE, CheckpointError, read_config, require, require_positive

MEDUSA_TYPE = "medusa"


@dataclass
class MedusaConfig:
    hidden_size: int
    vocab_size: int
    num_heads: int
    num_hidden_layers: int = 1
    # What the heads were trained on: {"name_or_path", "architectures", "embedding_fingerprint"}.
    verifier: dict = field(default_factory=dict)

    def to_json(self) -> dict:
        return {
            "model_type": MEDUSA_TYPE,
            "architectures": ["MedusaModel"],
            "hidden_size": self.hidden_size,
            "vocab_size": self.vocab_size,
            "num_heads": self.num_heads,
            "num_hidden_layers": self.num_hidden_layers,
            "truncated_vocab_size": self.vocab_size,
            "medusa_fc_bias": True,
            "original_lm_head": True,
            "n_predict": self.num_heads,
            "verifier": self.verifier,
        }

    @classmethod
    def from_checkpoint(cls, folder: str | Path) -> "MedusaConfig":
        path = Path(folder) / CONFIG_FILE
        config = read_config(folder)
        kind = config.get("model_type")
        if kind != MEDUSA_TYPE:
            raise CheckpointError(f"{path}: field 'model_type' is {kind!r}, expected {MEDUSA_TYPE!r} (Medusa heads "
                                  f"made by `vllm-ptp train medusa`)")
        for key in config:
            if "num" in key and ("heads" in key or "layers" in key) and key not in ("num_heads", "num_hidden_layers"):
                raise CheckpointError(f"{path}: field '{key}' is not allowed: vLLM's Medusa loader would rename it "
                                      f"to 'num_heads' or 'num_hidden_layers'")
        ints = {name: require(config, name, int, path)
                for name in ("hidden_size", "vocab_size", "num_heads", "num_hidden_layers")}
        require_positive(ints, path)
        expected = {"truncated_vocab_size": ints["vocab_size"], "medusa_fc_bias": True, "original_lm_head": True,
                    "n_predict": ints["num_heads"]}
        why = {"truncated_vocab_size": "vLLM 0.32 cannot load a truncated vocabulary's token_map",
               "medusa_fc_bias": "the blocks have biases; vLLM drops them without this flag",
               "original_lm_head": "one LM head shared by all heads, stored as lm_heads.0.weight",
               "n_predict": "the default num_speculative_tokens"}
        for name, value in expected.items():
            got = config.get(name, value)
            if got != value or type(got) is not type(value):
                raise CheckpointError(f"{path}: field '{name}' is {got!r}, expected {value!r} ({why[name]})")
        verifier = config.get("verifier", {})
        if not isinstance(verifier, dict):
            raise CheckpointError(f"{path}: field 'verifier' must be an object, got {verifier!r}")
        return cls(**ints, verifier=verifier)
