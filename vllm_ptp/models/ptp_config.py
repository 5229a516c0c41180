"""Configuration of a PTP draft, stored as a speculators-style config.json that vLLM's loader reads.

The layout is vLLM's EAGLE-3 draft (`transformer_layer_config` for the decoder layer, `eagle_aux_hidden_state_layer_ids`
for the target states it reads, `mask_token_id` for the parallel slots, `draft_vocab_size` + `d2t`) plus a `ptp`
section: how the auxiliary variables u are embedded and how many slots (draft tokens) the draft was trained for.

The same layout without the PTP conditioning is written as one of vLLM's own speculators types, which an unmodified
vLLM loads: "peagle" (EAGLE-3 + parallel drafting, the mask slots without u) and "eagle3" (sequential drafting, no
mask slots).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from vllm_ptp.models.checkpoint import CONFIG_FILE, CheckpointError, read_config, require, require_positive

PTP_TYPE = "ptp"
PEAGLE_TYPE = "peagle"
EAGLE3_TYPE = "eagle3"
SPECULATORS_TYPES = (PTP_TYPE, PEAGLE_TYPE, EAGLE3_TYPE)
ARCHITECTURE = "PtpLlamaForCausalLM"
# vLLM's registry names for its own types (its speculators updaters set them again from transformer_layer_config)
VLLM_ARCHITECTURES = {PEAGLE_TYPE: "PeagleLlamaForCausalLM", EAGLE3_TYPE: "Eagle3LlamaForCausalLM"}
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
    # "ptp" (ours: mask slots + u/temperature conditioning), "peagle" (mask slots only), "eagle3" (no mask slots)
    speculators_type: str = PTP_TYPE

    @property
    def conditioned(self) -> bool:
        """Has the `ptp_conditioning` module (u and temperature embeddings of the mask slots)."""
        return self.speculators_type == PTP_TYPE

    @property
    def parallel(self) -> bool:
        """Drafts with mask slots (`mask_hidden`, `mask_token_id`) in one forward."""
        return self.speculators_type != EAGLE3_TYPE

    @property
    def uses_u(self) -> bool:
        return self.conditioned and self.u_embedding != "none"

    @property
    def architecture(self) -> str:
        return ARCHITECTURE if self.conditioned else VLLM_ARCHITECTURES[self.speculators_type]

    def transformer_layer_config(self) -> dict:
        return {"model_type": "llama", "architectures": [self.architecture], "hidden_size": self.hidden_size,
                "num_hidden_layers": self.num_hidden_layers, "num_attention_heads": self.num_attention_heads,
                "num_key_value_heads": self.num_key_value_heads, "head_dim": self.head_dim,
                "intermediate_size": self.intermediate_size, "rms_norm_eps": self.rms_norm_eps,
                "rope_parameters": {"rope_type": "default", "rope_theta": self.rope_theta},
                "max_position_embeddings": self.max_position_embeddings, "vocab_size": self.vocab_size,
                "hidden_act": "silu", "attention_bias": False, "mlp_bias": False, "tie_word_embeddings": False,
                # vLLM's EAGLE-3 class sizes fc from this; no speculators updater sets it (its default is 3)
                "num_aux_hidden_states": len(self.aux_layer_ids)}

    def to_json(self) -> dict:
        kind = self.speculators_type
        proposal = "ptp" if kind == PTP_TYPE else "greedy"
        config = {
            "architectures": [self.architecture],
            "speculators_model_type": kind,
            "speculators_version": "vllm-ptp-0.1",
            "transformer_layer_config": self.transformer_layer_config(),
            "draft_vocab_size": self.draft_vocab_size,
            "target_hidden_size": self.hidden_size,
            "eagle_aux_hidden_state_layer_ids": self.aux_layer_ids,
            # vLLM's eagle3 updater defaults this to True; every draft here adds the residual before hidden_norm
            "norm_before_residual": False,
            "speculators_config": {
                "algorithm": kind,
                "proposal_methods": [{"proposal_type": proposal, "speculative_tokens": self.num_slots}],
                "default_proposal_method": proposal,
                "verifier": self.verifier,
            },
        }
        if self.parallel:
            config["mask_token_id"] = self.mask_token_id
        if self.conditioned:
            config["ptp"] = {"u_embedding": self.u_embedding, "u_features": self.u_features,
                             "num_slots": self.num_slots}
        return config

    @classmethod
    def from_checkpoint(cls, folder: str | Path) -> "PTPConfig":
        path = Path(folder) / CONFIG_FILE
        config = read_config(folder)
        kind = config.get("speculators_model_type")
        if kind not in SPECULATORS_TYPES:
            raise CheckpointError(f"{path}: field 'speculators_model_type' is {kind!r}, expected one of "
                                  f"{list(SPECULATORS_TYPES)} (a draft made by `vllm-ptp train ptp|peagle|eagle3`)")
        layer = config.get("transformer_layer_config")
        if not isinstance(layer, dict):
            raise CheckpointError(f"{path}: field 'transformer_layer_config' must be an object")
        lpath = Path(f"{path}:transformer_layer_config")
        if kind == PTP_TYPE:
            ptp = config.get("ptp")
            if not isinstance(ptp, dict):
                raise CheckpointError(f"{path}: field 'ptp' must be an object with u_embedding, u_features, "
                                      f"num_slots")
            ppath = Path(f"{path}:ptp")
            slots = require(ptp, "num_slots", int, ppath)
            u_features = require(ptp, "u_features", int, ppath)
            u_embedding = ptp.get("u_embedding")
        else:  # vLLM's own types: the slots are the speculative tokens the draft was trained for
            methods = (config.get("speculators_config") or {}).get("proposal_methods")
            if not (isinstance(methods, list) and methods and isinstance(methods[0], dict)):
                raise CheckpointError(f"{path}: field 'speculators_config.proposal_methods' must be a non-empty "
                                      f"list of objects")
            slots = require(methods[0], "speculative_tokens", int,
                            Path(f"{path}:speculators_config.proposal_methods[0]"))
            u_features, u_embedding = 32, "none"
        ints = {name: require(layer, name, int, lpath)
                for name in ("num_hidden_layers", "num_attention_heads", "num_key_value_heads", "head_dim",
                             "intermediate_size", "max_position_embeddings")}
        ints["draft_vocab_size"] = require(config, "draft_vocab_size", int, path)
        ints["mask_token_id"] = require(config, "mask_token_id", int, path) if kind != EAGLE3_TYPE else 0
        ints["hidden_size"] = require(config, "target_hidden_size", int, path)
        ints["vocab_size"] = require(layer, "vocab_size", int, lpath)
        ints["num_slots"], ints["u_features"] = slots, u_features
        require_positive({n: v for n, v in ints.items() if n != "mask_token_id"}, path)
        if ints["draft_vocab_size"] > ints["vocab_size"]:
            raise CheckpointError(f"{path}: field 'draft_vocab_size' ({ints['draft_vocab_size']}) exceeds "
                                  f"'vocab_size' ({ints['vocab_size']})")
        if not 0 <= ints["mask_token_id"] < ints["vocab_size"]:
            raise CheckpointError(f"{path}: field 'mask_token_id' must be a token id below {ints['vocab_size']}")
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
                   rope_theta=float(theta), u_embedding=u_embedding, verifier=verifier, speculators_type=kind)

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
