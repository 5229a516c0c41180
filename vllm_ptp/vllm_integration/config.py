"""Configuration: vLLM's SpeculativeConfig accepts our methods and the hybrid setting, checks the draft folder at
start-up, and sets our methods up the way vLLM sets up the method each one is served as."""
from __future__ import annotations

import contextlib
import dataclasses
import logging
import typing

from vllm_ptp.machine import bf16_warning
from vllm_ptp.models.ptp_config import ARCHITECTURE, PTP_TYPE
from vllm_ptp.models.checkpoint import speculators_type
from vllm_ptp.models.validation import validate_checkpoint_for_target
from vllm_ptp.onednn_cache import CAPACITY_VARIABLE, bound_primitive_cache
from vllm_ptp.proposers.context_match import SUFFIX, HybridSettings
from vllm_ptp.proposers.draft_confidence import check_threshold
from vllm_ptp.vllm_integration.methods import OUR_METHODS, is_ours, serves_ptp
from vllm_ptp.vllm_integration.registry import original

logger = logging.getLogger("vllm.ptp")

HYBRID_FIELD = "hybrid"
HYBRID_BATCH_FIELD = "hybrid_draft_max_batch_size"
CONFIDENCE_FIELD = "min_draft_confidence"
# Fields vllm-ptp adds to SpeculativeConfig (None by default; only 'cp' / 'ptp' take them). The batch size and the
# confidence are typed loosely so that a bad value reaches our one clear error rather than pydantic's coercion.
OUR_FIELDS = {HYBRID_FIELD: typing.Optional[str], HYBRID_BATCH_FIELD: typing.Any, CONFIDENCE_FIELD: typing.Any}

# SpeculativeConfig is a pydantic dataclass that forbids unknown fields and checks `method` against a Literal: a new
# method name and new fields need its schema rebuilt (undone by restore_schema).
_schema_before: list[tuple] = []


def extend_schema(config_cls, vllm_methods) -> None:
    """Method names 'cp' / 'ptp' in the `method` Literal, and the optional fields OUR_FIELDS."""
    import pydantic
    _schema_before.append((config_cls, config_cls.__annotations__["method"]))
    extended = typing.Optional[typing.Literal[vllm_methods, *OUR_METHODS]]
    config_cls.__dataclass_fields__["method"].type = extended
    config_cls.__annotations__["method"] = extended
    for name, annotation in OUR_FIELDS.items():
        field = dataclasses.field(default=None)
        field.name, field.type, field._field_type = name, annotation, dataclasses._FIELD
        config_cls.__dataclass_fields__[name] = field
        config_cls.__annotations__[name] = annotation
        setattr(config_cls, name, None)
    pydantic.dataclasses.rebuild_dataclass(config_cls, force=True)


def restore_schema() -> None:
    if not _schema_before:
        return
    import pydantic
    config_cls, annotation = _schema_before.pop()
    config_cls.__dataclass_fields__["method"].type = annotation
    config_cls.__annotations__["method"] = annotation
    for name in OUR_FIELDS:
        for table in (config_cls.__dataclass_fields__, config_cls.__annotations__):
            table.pop(name, None)
        if name in config_cls.__dict__:
            delattr(config_cls, name)
    pydantic.dataclasses.rebuild_dataclass(config_cls, force=True)


def speculative_config_post_init(self):
    """Replaces SpeculativeConfig.__post_init__."""
    vllm_post_init = original("SpeculativeConfig.__post_init__")
    method = self.method
    if method is None and self.model is not None:
        detected = speculators_type(self.model)
        method = detected if detected in OUR_METHODS else None
    if method not in OUR_METHODS:
        if getattr(self, HYBRID_FIELD, None) is not None:
            raise ValueError(f"speculative_config.hybrid is a vllm-ptp setting of 'ptp' and 'cp' drafts; method "
                             f"{self.method!r} does not take it (vLLM's own context matching is method 'ngram')")
        for field in (HYBRID_BATCH_FIELD, CONFIDENCE_FIELD):
            if getattr(self, field, None) is not None:
                raise ValueError(f"speculative_config.{field} is a vllm-ptp setting of 'ptp' and 'cp' drafts; "
                                 f"method {self.method!r} does not take it")
        return vllm_post_init(self)
    self.method = method
    self.min_draft_confidence = check_threshold(self.min_draft_confidence)
    hybrid = HybridSettings.from_fields(self.hybrid, self.prompt_lookup_min or None, self.prompt_lookup_max or None,
                                        getattr(self, HYBRID_BATCH_FIELD))
    _set_up_ours(self, method, vllm_post_init, longer_k_for_matches=hybrid is not None)
    if hybrid is not None and hybrid.kind == SUFFIX:
        self._validate_suffix_decoding()  # vLLM's own checks of the suffix_decoding_* settings
    elif hybrid is not None:  # vLLM zeroes the prompt-lookup lengths of methods other than ngram: they are the hybrid's
        self.prompt_lookup_min, self.prompt_lookup_max = hybrid.min_match, hybrid.max_match


def _set_up_ours(self, method: str, vllm_post_init, longer_k_for_matches: bool) -> None:
    capacity = bound_primitive_cache()
    logger.info("oneDNN primitive cache capacity %s (%s; bounds CPU memory under speculative load)", capacity,
                CAPACITY_VARIABLE)
    if self.model is None:
        raise ValueError(f"speculative_config: method '{method}' needs 'model': the draft checkpoint folder")
    self.num_speculative_tokens = validate_checkpoint_for_target(
        method, self.model, self.target_model_config, self.num_speculative_tokens, longer_k_for_matches)
    if warning := bf16_warning(self.target_model_config.dtype):
        logger.warning("vllm-ptp: %s", warning)
    if method == PTP_TYPE:
        # A PTP draft is an EAGLE-3 parallel-drafting draft plus u's: vLLM sets it up as exactly that (draft
        # ModelConfig from the speculators config.json, aux hidden states, mask slots, draft KV in the paged pool).
        # The method stays "eagle3" because vLLM branches on that name in many places; serves_ptp() recognises it.
        self.method, self.parallel_drafting = "eagle3", True
        return vllm_post_init(self)
    # Set up like vLLM's custom_class method (no draft ModelConfig, shares the target's); that branch also logs an
    # "experimental custom class" warning that would mislead our users, so it is filtered for this call.
    self.method = "custom_class"
    try:
        with _silence("vllm.config.speculative", "custom class-based proposer"):
            return vllm_post_init(self)
    finally:
        self.method = method


def speculators_updater_for_ptp(config_dict: dict, pre_trained_config: dict) -> None:
    """Registered as speculators type "ptp": vLLM's EAGLE-3 fields (as its "peagle" type sets them) + ours."""
    pre_trained_config["architectures"] = [ARCHITECTURE]
    pre_trained_config["draft_vocab_size"] = config_dict.get("draft_vocab_size")
    pre_trained_config["target_hidden_size"] = config_dict.get("target_hidden_size")
    pre_trained_config["norm_before_residual"] = False
    pre_trained_config["norm_before_fc"] = False
    pre_trained_config["pard_token"] = config_dict["mask_token_id"]
    layers = config_dict["eagle_aux_hidden_state_layer_ids"]
    pre_trained_config["eagle_aux_hidden_state_layer_ids"] = layers
    # llama_eagle3 sizes fc from this (it ignores a top-level eagle_aux_hidden_state_layer_ids)
    pre_trained_config["num_aux_hidden_states"] = len(layers)
    pre_trained_config["ptp_u_embedding"] = config_dict["ptp"]["u_embedding"]
    pre_trained_config["ptp_u_features"] = config_dict["ptp"]["u_features"]


def v2_runner_unsupported_features(self):
    """Replaces VllmConfig._get_v2_model_runner_unsupported_features: model runner V2 has no hook for a drafter
    that reads the target's hidden states, so our methods stay on V1 (as Medusa does)."""
    unsupported = original("VllmConfig._get_v2_model_runner_unsupported_features")(self)
    if is_ours(self.speculative_config):
        method = PTP_TYPE if serves_ptp(self.speculative_config) else self.speculative_config.method
        unsupported.append(f"speculative method '{method}' (vllm-ptp)")
    return unsupported


@contextlib.contextmanager
def _silence(logger_name: str, message_part: str):
    class _Filter(logging.Filter):
        def filter(self, record):
            return message_part not in record.getMessage()

    target_logger, log_filter = logging.getLogger(logger_name), _Filter()
    target_logger.addFilter(log_filter)
    try:
        yield
    finally:
        target_logger.removeFilter(log_filter)
