"""Every vLLM internal vllm-ptp touches, declared in one list, and install(), which applies it once per process.

Every replacement first asks whether the engine's speculative method is ours ("cp", "ptp") and otherwise calls
vLLM's original unchanged, so requests and methods that are not ours behave exactly as in plain vLLM. On a vLLM
outside the supported range (version.py) nothing is patched.

Files, from the bottom: registry (what a touch point is; apply once, refuse twice, roll back), version, methods
(which engines are ours); then one file per concern: config, runner, hybrid, cp_drafter, ptp_classes,
cpu_sampler_fixes, draft_timer, tensor_parallel. Only this file imports the concerns.
"""
from __future__ import annotations

import logging

from vllm_ptp.models.ptp_config import ARCHITECTURE, PTP_TYPE
from vllm_ptp.vllm_integration import config, cpu_sampler_fixes, registry, runner
from vllm_ptp.vllm_integration.methods import OUR_METHODS, is_ours, serves_ptp
from vllm_ptp.vllm_integration.registry import TouchPoint
from vllm_ptp.vllm_integration.version import (SUPPORTED_VLLM, UnsupportedVLLMVersion, check_vllm_version,
                                               unsupported_message, vllm_supported)

__all__ = ["TOUCH_POINTS", "TouchPoint", "install", "is_ours", "serves_ptp", "SUPPORTED_VLLM",
           "UnsupportedVLLMVersion", "check_vllm_version", "vllm_supported"]

logger = logging.getLogger("vllm.ptp")

SPEC, RUNNER, REJECTION = "vllm.config.speculative", "vllm.v1.worker.gpu_model_runner", "vllm.v1.sample.rejection_sampler"

TOUCH_POINTS = (
    # --- configuration (config.py)
    TouchPoint(SPEC, "SpeculativeConfig", "__post_init__", "patched",
               "accept methods 'cp' / 'ptp', validate the draft at start-up, set it up as custom_class / eagle3",
               config.speculative_config_post_init),
    TouchPoint(SPEC, None, "SpeculativeMethod", "registered",
               "the pydantic Literal of method names, extended by 'cp' and 'ptp' (schema rebuilt)"),
    TouchPoint(SPEC, "SpeculativeConfig", "prompt_lookup_max", "registered",
               "fields 'hybrid', 'hybrid_draft_max_batch_size' and 'min_draft_confidence' added beside it (schema "
               "rebuilt; None by default, only 'cp' / 'ptp' take them); prompt_lookup_min / prompt_lookup_max are "
               "the hybrid's match lengths"),
    TouchPoint("vllm.config.vllm", "VllmConfig", "_get_v2_model_runner_unsupported_features", "patched",
               "keep our methods on the V1 model runner, whose proposer hooks the plugin uses",
               config.v2_runner_unsupported_features),
    TouchPoint("vllm.transformers_utils.configs.speculators.algos", None, "register_speculator", "registered",
               "speculators type 'ptp' (a draft folder alone sets up the method)"),
    # --- runner wiring (runner.py)
    TouchPoint(RUNNER, "GPUModelRunner", "__init__", "patched",
               "build our drafter where vLLM builds its own (PTP: EagleProposer swapped; CP: custom-class factory)",
               runner.runner_init),
    TouchPoint(RUNNER, "GPUModelRunner", "propose_draft_token_ids", "patched",
               "hand the CP heads the target's hidden states, as vLLM's Medusa branch does; hybrid: overlay the "
               "context matches on our drafts; min_draft_confidence: cut each row's draft where the draft is "
               "unsure; time the drafting for `vllm-ptp bench`",
               runner.propose_draft_token_ids),
    TouchPoint(RUNNER, "GPUModelRunner", "_input_fits_in_drafter", "patched",
               "PTP drafts in steps where vLLM 0.32 skips the whole batch near max_model_len",
               runner.input_fits_in_drafter),
    TouchPoint(RUNNER, None, "EagleProposer", "swapped",
               "while the runner is built for a PTP draft: ptp_classes.PTPProposer (the runner names the class "
               "it builds; vLLM has no proposer registry)"),
    TouchPoint(RUNNER, None, "create_custom_proposer", "swapped",
               "while the runner is built for CP heads: our drafter as the custom-class proposer (vLLM reads the "
               "class from the config only by import path, not a constructor with the runner's device)"),
    # --- PTP classes (ptp_classes.py)
    TouchPoint("vllm.v1.spec_decode.eagle", "EagleProposer", "propose", "overridden", "draw the u's of the step"),
    TouchPoint("vllm.v1.spec_decode.eagle", "EagleProposer", "set_inputs_first_pass", "overridden",
               "add the u and temperature embeddings to the mask slots"),
    TouchPoint("vllm.v1.spec_decode.eagle", "EagleProposer", "_sample_draft_tokens", "overridden",
               "the k tokens are inverse-CDF picks at the u's; their distributions go to the rejection sampler"),
    TouchPoint("vllm.v1.spec_decode.eagle", "EagleProposer", "load_model", "overridden",
               "check the draft was trained for this target (embedding fingerprint)"),
    TouchPoint("vllm.model_executor.models.llama_eagle3", "Eagle3LlamaForCausalLM", "load_weights", "overridden",
               "the PTP draft class loads its conditioning weights beside vLLM's EAGLE-3 ones"),
    # --- vLLM 0.32 CPU sampling bugs (cpu_sampler_fixes.py)
    TouchPoint(RUNNER, "GPUModelRunner", "_sample", "patched",
               "the engine's choice of the CPU sampler fixes for its sampling step; seeded requests in chunked "
               "prefill save their CPU generator state (no set_offset on CPU)",
               cpu_sampler_fixes.runner_sample),
    TouchPoint(RUNNER, "GPUModelRunner", "_bookkeeping_sync", "patched",
               "CPU: restore those generator states instead of vLLM's CUDA-only set_offset rewind",
               cpu_sampler_fixes.runner_bookkeeping_sync),
    TouchPoint(REJECTION, None, "apply_sampling_constraints", "patched",
               "CPU: torch top-k crashes on a step without draft tokens",
               cpu_sampler_fixes.apply_sampling_constraints),
    TouchPoint(REJECTION, None, "expand_batch_to_tokens", "patched",
               "CPU: the expand stand-in writes into a temporary copy (verification temperatures uninitialised)",
               cpu_sampler_fixes.expand_batch_to_tokens, upstream="https://github.com/vllm-project/vllm/pull/42638"),
    # --- hybrid drafting (hybrid.py)
    TouchPoint("vllm.v1.spec_decode.ngram_proposer", "NgramProposer", "propose", "used",
               "the hybrid mode's context matcher, built from a stand-in config of its five settings (imported only "
               "when a hybrid engine is built: numba)"),
)

_inactive: list[str] = []


def install() -> None:
    """Apply TOUCH_POINTS once per process (vLLM loads plugins in each process, sometimes more than once).

    On a vLLM outside SUPPORTED_VLLM nothing is patched: engines that do not ask for our methods run as if the
    plugin were absent, and a draft folder of ours fails at start-up with the version message. The same holds if a
    patch target is missing or a patch fails half-way: what was applied is rolled back first."""
    if registry.applied() or _inactive:
        return
    import vllm
    if not vllm_supported(vllm.__version__):
        _stay_inactive(unsupported_message(vllm.__version__))
        return
    try:
        _apply()
    except Exception as e:  # noqa: BLE001 (any failure: roll back, never leave vLLM half-patched)
        registry.roll_back()
        config.restore_schema()
        _stay_inactive(f"vllm-ptp could not patch vLLM {vllm.__version__} ({type(e).__name__}: {e}); nothing is "
                       f"patched.")


def _apply() -> None:
    from vllm import ModelRegistry
    from vllm.config import speculative as speculative_module
    from vllm.transformers_utils.configs.speculators import algos as speculators_algos

    registry.check_present(TOUCH_POINTS)
    config.extend_schema(speculative_module.SpeculativeConfig, speculative_module.SpeculativeMethod)
    registry.apply(TOUCH_POINTS)
    ModelRegistry.register_model(ARCHITECTURE, f"{__name__}.ptp_classes:{ARCHITECTURE}")
    speculators_algos.register_speculator(PTP_TYPE)(config.speculators_updater_for_ptp)


def _stay_inactive(reason: str) -> None:
    """Warn once, and make a draft folder of ours fail at start-up with `reason` through vLLM's own registry of
    speculators types (not a patch: a type nobody else registers)."""
    _inactive.append(reason)
    logger.warning("%s vllm-ptp is inactive: engines without its methods are unaffected.", reason)
    try:
        from vllm.transformers_utils.configs.speculators import algos
    except ImportError:
        return

    def refuse(config_dict: dict, pre_trained_config: dict) -> None:
        raise UnsupportedVLLMVersion(reason)

    for kind in OUR_METHODS:
        algos.SUPPORTED_SPECULATORS_TYPES.setdefault(kind, refuse)
