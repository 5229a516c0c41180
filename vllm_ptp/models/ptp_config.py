"""Configuration of a PTP draft, stored as a speculators-style config.json that vLLM's loader reads.

The layout is vLLM's EAGLE-3 draft (`transformer_layer_config` for the decoder layer, `eagle_aux_hidden_state_layer_ids`
for the target states it reads, `mask_token_id` for the parallel slots, `draft_vocab_size` + `d2t`) plus a `ptp`
section: how the auxiliary variables u are embedded and how many slots (draft tokens) the draft was trained for.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from vllm_ptp.models.checkpoint import CONFIG_FILE, CheckpointError, read_config, require, require_positive

PTP_TYPE = "ptp"
ARCHITECTURE = "PtpLlamaForCausalLM"
U_EMBEDDINGS = ("binary", "quarter_cos", "linear_interpolation", "none")  # "none": the independent ablation


@dataclass
class PTPConfig:
    hidden_size: int
    vocab_size: int
    draft_vocab_size: int
    num_slots: int
    aux_layer_ids: list[int]
    mask_token_id: int
    num_hidden_layers: int = 1
    num_attention_heads: int = 8
    num_key_value_heads: int = 8
    head_dim: int = 64
    intermediate_size: int = 1024
    rms_norm_eps: float = 1e-5
    rope_theta: float = 10000.0
    max_position_embeddings: int = 8192
    u_embedding: str = "quarter_cos"
    u_features: int = 32
    # What the draft was trained for: {"name_or_path", "architectures", "embedding_fingerprint"}.
    verifier: dict = field(default_factory=dict)

    @property
    def uses_u(self) -> bool:
        return self.u_embedding != "none"

    def transformer_layer_config(self) -> dict:
        return {"model_type": "llama", "architectures": [ARCHITECTURE], "hidden_size": self.hidden_size,
                "num_hidden_layers": self.num_hidden_layers, "num_attention_heads": self.num_attention_heads,
                "num_key_value_heads": self.num_key_value_heads, "head_dim": self.head_dim,
                "intermediate_size": self.intermediate_size, "rms_norm_eps": self.rms_norm_eps,
                "rope_parameters": {"rope_type": "default", "rope_theta": self.rope_theta},
                "max_position_embeddings": self.max_position_embeddings, "vocab_size": self.vocab_size,
                "hidden_act": "silu", "attention_bias": False, "mlp_bias": False, "tie_word_embeddings": False}

    def to_json(self) -> dict:
        return {
            "architectures": [ARCHITECTURE],
            "speculators_model_type": PTP_TYPE,
            "speculators_version": "vllm-ptp-0.1",
            "transformer_layer_config": self.transformer_layer_config(),
            "draft_vocab_size": self.draft_vocab_size,
            "target_hidden_size": self.hidden_size,
            "eagle_aux_hidden_state_layer_ids": self.aux_layer_ids,
            "mask_token_id": self.mask_token_id,
            "norm_before_residual": False,
            "ptp": {"u_embedding": self.u_embedding, "u_features": self.u_features, "num_slots": self.num_slots},
            "speculators_config": {
                "algorithm": PTP_TYPE,
                "proposal_methods": [{"proposal_type": "ptp", "speculative_tokens": self.num_slots}],
                "default_proposal_method": "ptp",
                "verifier": self.verifier,
            },
        }

    @classmethod
    def from_checkpoint(cls, folder: str | Path) -> "PTPConfig":
        path = Path(folder) / CONFIG_FILE
        config = read_config(folder)
        kind = config.get("speculators_model_type")
        if kind != PTP_TYPE:
            raise CheckpointError(f"{path}: field 'speculators_model_type' is {kind!r}, expected {PTP_TYPE!r} "
                                  f"(a PTP draft made by `vllm-ptp train ptp`)")
        layer = config.get("transformer_layer_config")
        if not isinstance(layer, dict):
            raise CheckpointError(f"{path}: field 'transformer_layer_config' must be an object")
        ptp = config.get("ptp")
        if not isinstance(ptp, dict):
            raise CheckpointError(f"{path}: field 'ptp' must be an object with u_embedding, u_features, num_slots")
        lpath = Path(f"{path}:transformer_layer_config")
        ppath = Path(f"{path}:ptp")
        ints = {name: require(layer, name, int, lpath)
                for name in ("num_hidden_layers", "num_attention_heads", "num_key_value_heads", "head_dim",
                             "intermediate_size", "max_position_embeddings")}
        ints |= {name: require(config, name, int, path) for name in ("draft_vocab_size", "mask_token_id")}
        ints["hidden_size"] = require(config, "target_hidden_size", int, path)
        ints["vocab_size"] = require(layer, "vocab_size", int, lpath)
        ints["num_slots"] = require(ptp, "num_slots", int, ppath)
        ints["u_features"] = require(ptp, "u_features", int, ppath)
        require_positive({n: v for n, v in ints.items() if n != "mask_token_id"}, path)
        if ints["draft_vocab_size"] > ints["vocab_size"]:
            raise CheckpointError(f"{path}: field 'draft_vocab_size' ({ints['draft_vocab_size']}) exceeds "
                                  f"'vocab_size' ({ints['vocab_size']})")
        if not 0 <= ints["mask_token_id"] < ints["vocab_size"]:
            raise CheckpointError(f"{path}: field 'mask_token_id' must be a token id below {ints['vocab_size']}")
        u_embedding = ptp.get("u_embedding")
        if u_embedding not in U_EMBEDDINGS:
            raise CheckpointError(f"{path}: field 'ptp.u_embedding' is {u_embedding!r}, expected one of "
                                  f"{list(U_EMBEDDINGS)}")
        layers = config.get("eagle_aux_hidden_state_layer_ids")
        if not (isinstance(layers, list) and layers and all(isinstance(i, int) and i >= 0 for i in layers)):
            raise CheckpointError(f"{path}: field 'eagle_aux_hidden_state_layer_ids' must be a non-empty list of "
                                  f"target layer indices, got {layers!r}")
        rope = layer.get("rope_parameters") or {}
        theta = rope.get("rope_theta", layer.get("rope_theta", 10000.0))
        verifier = config.get("speculators_config", {}).get("verifier", {})
        return cls(**ints, aux_layer_ids=layers, rms_norm_eps=float(layer.get("rms_norm_eps", 1e-5)),
                   rope_theta=float(theta), u_embedding=u_embedding, verifier=verifier)

    def check_target(self, folder: str | Path, vocab_size: int, hidden_size: int, num_layers: int) -> None:
        """Refuse a target the draft was not trained for (sizes here; the embedding fingerprint when weights load)."""
        path = Path(folder) / CONFIG_FILE
        if hidden_size != self.hidden_size:
            raise CheckpointError(f"{path}: field 'target_hidden_size' is {self.hidden_size} but the target model's "
                                  f"hidden size is {hidden_size}: this draft was trained for another target")
        if vocab_size != self.vocab_size:
            raise CheckpointError(f"{path}: field 'transformer_layer_config.vocab_size' is {self.vocab_size} but the "
                                  f"target model's vocab size is {vocab_size}: this draft was trained for another "
                                  f"target")
        if max(self.aux_layer_ids) >= num_layers:
            raise CheckpointError(f"{path}: field 'eagle_aux_hidden_state_layer_ids' is {self.aux_layer_ids} but the "
                                  f"target has {num_layers} layers: this draft was trained for another target")
