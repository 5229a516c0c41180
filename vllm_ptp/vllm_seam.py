"""The one module that touches vLLM internals.

Each patch is a function named `replacement_for_<Owner>_<attribute>` and wraps exactly one vLLM attribute. Every
replacement first asks whether the speculative method is ours ("cp", "ptp") and otherwise calls vLLM's original
unchanged, so requests and methods that are not ours behave exactly as in plain vLLM.

How a "cp" draft is wired into vLLM's V1 model runner:
- SpeculativeConfig accepts the method (or detects it from the draft folder's config.json), validates the checkpoint
  against the target at start-up, and is then set up like vLLM's `custom_class` method: no draft ModelConfig, the
  draft shares the target's config, no draft KV cache.
- The model runner builds our drafter where it would build a custom_class proposer; vLLM's CPU/GPU runner hands it the
  target model in `load_model` (the heads borrow the target's embedding and LM head).
- After each step, like vLLM's Medusa branch, the drafter gets the target's final hidden state that produced each
  request's last sampled token, plus that token; it returns k draft ids per request and stores the draft
  distributions where vLLM's rejection sampler picks them up next step (`_draft_probs`, as for EAGLE's
  probabilistic drafting). The rejection sampling algorithm is vLLM's; three vLLM 0.32 CPU bugs in sampling are
  fixed while our method is served (see the section near the end).
"""
from __future__ import annotations

import contextlib
import contextvars
import dataclasses
import json
import logging
import os
import time
import typing
from pathlib import Path

import torch

from vllm_ptp.engine_settings import EngineSettings
from vllm_ptp.models.checkpoint import CONFIG_FILE, CheckpointError, check_fingerprint, speculators_type
from vllm_ptp.models.cp_config import CPConfig
from vllm_ptp.models.cp_heads import load_cp_heads
from vllm_ptp.models.ptp_config import ARCHITECTURE, PTP_TYPE, PTPConfig
from vllm_ptp.models.ptp_draft import PTPConditioning, load_ptp_draft
from vllm_ptp.onednn_cache import CAPACITY_VARIABLE, bound_primitive_cache
from vllm_ptp.proposers.context_match import ContextMatcher, HybridSettings, overlay_matches
from vllm_ptp.proposers.cp_proposer import CPProposer
from vllm_ptp.proposers.ptp_proposer import draw_uniforms, pick_drafts

SUPPORTED_VLLM = "==0.32.0"  # the one place the supported range lives (a PEP 440 specifier; local suffixes pass)
OUR_METHODS = ("cp", "ptp")

_originals: dict[str, typing.Any] = {}
logger = logging.getLogger("vllm.ptp")


class UnsupportedVLLMVersion(RuntimeError):
    pass


def vllm_supported(version: str) -> bool:
    from packaging.specifiers import SpecifierSet
    from packaging.version import InvalidVersion, Version
    try:
        return Version(version) in SpecifierSet(SUPPORTED_VLLM)
    except InvalidVersion:
        return False


def unsupported_message(version: str) -> str:
    return (f"vllm-ptp supports vLLM {SUPPORTED_VLLM.lstrip('=')} (its patches are written against those internals); "
            f"the installed vLLM is {version}. Install a supported vLLM (CPU: `pip install vllm-ptp[cpu]`), or "
            f"uninstall vllm-ptp / exclude it with VLLM_PLUGINS.")


def check_vllm_version(version: str) -> None:
    if not vllm_supported(version):
        raise UnsupportedVLLMVersion(unsupported_message(version))


def install() -> None:
    """Apply every patch once per process (vLLM loads plugins in each process, sometimes more than once).

    On a vLLM outside SUPPORTED_VLLM nothing is patched: engines that do not ask for our methods run as if the
    plugin were absent, and a draft folder of ours fails at start-up with the version message. The same holds if a
    patch target is missing or a patch fails half-way: what was applied is rolled back first."""
    if _originals or _inactive:
        return
    import vllm
    if not vllm_supported(vllm.__version__):
        _stay_inactive(unsupported_message(vllm.__version__))
        return
    try:
        _apply_patches()
    except Exception as e:  # noqa: BLE001 (any failure: roll back, never leave vLLM half-patched)
        _roll_back()
        _stay_inactive(f"vllm-ptp could not patch vLLM {vllm.__version__} ({type(e).__name__}: {e}); nothing is "
                       f"patched.")


_inactive: list[str] = []


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


@dataclasses.dataclass(frozen=True)
class TouchPoint:
    """One vLLM internal vllm-ptp depends on. kind "patched": replaced by `replacement_for_<owner>_<attribute>`
    below (the owner's short name), the original kept and called for everything that is not ours; "swapped": a
    module global replaced for the duration of one call; "overridden": a method our subclass overrides;
    "registered": a registry we add an entry to; "used": called as it is (checked by the compat probe only).
    `owner` is a class in `module`, or None for a module attribute."""
    module: str
    owner: str | None
    attribute: str
    kind: str
    why: str


TOUCH_POINTS = (
    TouchPoint("vllm.config.speculative", "SpeculativeConfig", "__post_init__", "patched",
               "accept methods 'cp' / 'ptp', validate the draft at start-up, set it up as custom_class / eagle3"),
    TouchPoint("vllm.config.speculative", None, "SpeculativeMethod", "registered",
               "the pydantic Literal of method names, extended by 'cp' and 'ptp' (schema rebuilt)"),
    TouchPoint("vllm.config.speculative", "SpeculativeConfig", "prompt_lookup_max", "registered",
               "field 'hybrid' added beside it (schema rebuilt; None by default, only 'cp' / 'ptp' take it); "
               "prompt_lookup_min / prompt_lookup_max are the hybrid's match lengths"),
    TouchPoint("vllm.config.vllm", "VllmConfig", "_get_v2_model_runner_unsupported_features", "patched",
               "keep PTP drafts on the V1 model runner, whose proposer hooks the plugin uses"),
    TouchPoint("vllm.v1.worker.gpu_model_runner", "GPUModelRunner", "__init__", "patched",
               "build our drafter where vLLM builds its own (PTP: EagleProposer swapped; CP: custom-class factory)"),
    TouchPoint("vllm.v1.worker.gpu_model_runner", "GPUModelRunner", "propose_draft_token_ids", "patched",
               "hand the CP heads the target's hidden states, as vLLM's Medusa branch does; hybrid: overlay the "
               "context matches on our drafts"),
    TouchPoint("vllm.v1.worker.gpu_model_runner", "GPUModelRunner", "_sample", "patched",
               "CPU: seeded requests in chunked prefill restore the generator state (no set_offset on CPU)"),
    TouchPoint("vllm.v1.worker.gpu_model_runner", "GPUModelRunner", "_bookkeeping_sync", "patched",
               "the draft timer of `vllm-ptp bench`"),
    TouchPoint("vllm.v1.worker.gpu_model_runner", "GPUModelRunner", "_input_fits_in_drafter", "patched",
               "PTP drafts in steps where vLLM 0.32 skips the whole batch near max_model_len"),
    TouchPoint("vllm.v1.sample.rejection_sampler", None, "apply_sampling_constraints", "patched",
               "CPU: torch top-k crashes on a step without draft tokens"),
    TouchPoint("vllm.v1.sample.rejection_sampler", None, "expand_batch_to_tokens", "patched",
               "CPU: the expand stand-in writes into a temporary copy (verification temperatures uninitialised)"),
    TouchPoint("vllm.v1.worker.gpu_model_runner", None, "EagleProposer", "swapped",
               "while the runner is built for a PTP draft: our EagleProposer subclass"),
    TouchPoint("vllm.v1.worker.gpu_model_runner", None, "create_custom_proposer", "swapped",
               "while the runner is built for CP heads: our drafter as the custom-class proposer"),
    TouchPoint("vllm.v1.spec_decode.eagle", "EagleProposer", "propose", "overridden",
               "draw the u's of the step"),
    TouchPoint("vllm.v1.spec_decode.eagle", "EagleProposer", "set_inputs_first_pass", "overridden",
               "add the u and temperature embeddings to the mask slots"),
    TouchPoint("vllm.v1.spec_decode.eagle", "EagleProposer", "_sample_draft_tokens", "overridden",
               "the k tokens are inverse-CDF picks at the u's; their distributions go to the rejection sampler"),
    TouchPoint("vllm.v1.spec_decode.eagle", "EagleProposer", "load_model", "overridden",
               "check the draft was trained for this target (embedding fingerprint)"),
    TouchPoint("vllm.model_executor.models.llama_eagle3", "Eagle3LlamaForCausalLM", "load_weights", "overridden",
               "the PTP draft class loads its conditioning weights beside vLLM's EAGLE-3 ones"),
    TouchPoint("vllm.transformers_utils.configs.speculators.algos", None, "register_speculator", "registered",
               "speculators type 'ptp' (a draft folder alone sets up the method)"),
    TouchPoint("vllm.v1.spec_decode.ngram_proposer", "NgramProposer", "propose", "used",
               "the hybrid mode's context matcher, built from a stand-in config of its five settings (imported only "
               "when a hybrid engine is built: numba)"),
)


def _apply_patches() -> None:
    import importlib

    from vllm import ModelRegistry
    from vllm.config import speculative as speculative_module
    from vllm.config.speculative import SpeculativeConfig
    from vllm.transformers_utils.configs.speculators import algos as speculators_algos

    replacements = []
    for point in TOUCH_POINTS:
        if point.kind == "used":
            continue
        module = importlib.import_module(point.module)
        owner = module if point.owner is None else getattr(module, point.owner, None)
        if owner is None or not hasattr(owner, point.attribute):
            raise AttributeError(f"{point.module}.{point.owner or ''}{'.' if point.owner else ''}{point.attribute} "
                                 f"not found (needed to {point.why})")
        if point.kind == "patched":
            short = point.owner or point.module.rsplit(".", 1)[-1]
            replacements.append((owner, point.attribute, globals()[f"replacement_for_{short}_{point.attribute}"]))
    _extend_speculative_config_schema(SpeculativeConfig, speculative_module.SpeculativeMethod)
    for owner, name, replacement in replacements:
        _replace(owner, name, replacement)
    ModelRegistry.register_model(ARCHITECTURE, f"{__name__}:{ARCHITECTURE}")
    speculators_algos.register_speculator(PTP_TYPE)(speculators_updater_for_ptp)


def _roll_back() -> None:
    for key, (owner, name, original) in list(_applied.items()):
        setattr(owner, name, original)
    _applied.clear()
    _originals.clear()
    if _literal_before:
        config_cls, annotation = _literal_before.pop()
        import pydantic
        config_cls.__dataclass_fields__["method"].type = annotation
        config_cls.__annotations__["method"] = annotation
        for table in (config_cls.__dataclass_fields__, config_cls.__annotations__):
            table.pop(HYBRID_FIELD, None)
        if HYBRID_FIELD in config_cls.__dict__:
            delattr(config_cls, HYBRID_FIELD)
        pydantic.dataclasses.rebuild_dataclass(config_cls, force=True)


_applied: dict[str, tuple] = {}
_literal_before: list[tuple] = []


def _replace(owner, name: str, replacement) -> None:
    """Swap `owner.name` (owner: a class, or a module for its functions) and keep the original."""
    key = f"{getattr(owner, '__qualname__', owner.__name__.rsplit('.', 1)[-1])}.{name}"
    if key in _originals:
        raise RuntimeError(f"vllm_ptp: {key} would be patched twice")
    _originals[key] = owner.__dict__[name]
    _applied[key] = (owner, name, owner.__dict__[name])
    setattr(owner, name, replacement)


def _original(owner_name: str, name: str):
    return _originals[f"{owner_name}.{name}"]


def is_ours(speculative_config) -> bool:
    """A method we serve: "cp" (its own name throughout), or a PTP draft (served as vLLM's "eagle3")."""
    return speculative_config is not None and (speculative_config.method in OUR_METHODS
                                               or serves_ptp(speculative_config))


def serves_ptp(speculative_config) -> bool:
    draft = getattr(speculative_config, "draft_model_config", None)
    return (speculative_config is not None and speculative_config.method == "eagle3" and draft is not None
            and ARCHITECTURE in (getattr(draft.hf_config, "architectures", None) or []))


# --- SpeculativeConfig: a pydantic dataclass (extra fields forbidden), so new names need the schema rebuilt --------

HYBRID_FIELD = "hybrid"


def _extend_speculative_config_schema(config_cls, vllm_methods) -> None:
    """Method names 'cp' / 'ptp' in the `method` Literal, and the optional field `hybrid`."""
    import pydantic
    _literal_before.append((config_cls, config_cls.__annotations__["method"]))
    extended = typing.Optional[typing.Literal[vllm_methods, *OUR_METHODS]]
    config_cls.__dataclass_fields__["method"].type = extended
    config_cls.__annotations__["method"] = extended
    hybrid = dataclasses.field(default=None)
    hybrid.name, hybrid.type, hybrid._field_type = HYBRID_FIELD, typing.Optional[str], dataclasses._FIELD
    config_cls.__dataclass_fields__[HYBRID_FIELD] = hybrid
    config_cls.__annotations__[HYBRID_FIELD] = typing.Optional[str]
    setattr(config_cls, HYBRID_FIELD, None)
    pydantic.dataclasses.rebuild_dataclass(config_cls, force=True)


def replacement_for_SpeculativeConfig___post_init__(self):
    original = _original("SpeculativeConfig", "__post_init__")
    method = self.method
    if method is None and self.model is not None:
        detected = speculators_type(self.model)
        method = detected if detected in OUR_METHODS else None
    if method not in OUR_METHODS:
        if getattr(self, HYBRID_FIELD, None) is not None:
            raise ValueError(f"speculative_config.hybrid is a vllm-ptp setting of 'ptp' and 'cp' drafts; method "
                             f"{self.method!r} does not take it (vLLM's own context matching is method 'ngram')")
        return original(self)
    self.method = method
    hybrid = HybridSettings.from_fields(self.hybrid, self.prompt_lookup_min or None, self.prompt_lookup_max or None)
    _post_init_of_ours(self, method, original)
    if hybrid is not None:  # vLLM zeroes the prompt-lookup lengths of methods other than ngram: they are the hybrid's
        self.prompt_lookup_min, self.prompt_lookup_max = hybrid.min_match, hybrid.max_match


def _post_init_of_ours(self, method: str, original) -> None:
    capacity = bound_primitive_cache()
    logging.getLogger("vllm.ptp").info("oneDNN primitive cache capacity %s (%s; bounds CPU memory under speculative "
                                       "load)", capacity, CAPACITY_VARIABLE)
    if self.model is None:
        raise ValueError(f"speculative_config: method '{method}' needs 'model': the draft checkpoint folder")
    self.num_speculative_tokens = validate_checkpoint_for_target(
        method, self.model, self.target_model_config, self.num_speculative_tokens)
    if method == PTP_TYPE:
        # A PTP draft is an EAGLE-3 parallel-drafting draft plus u's: vLLM sets it up as exactly that (draft
        # ModelConfig from the speculators config.json, aux hidden states, mask slots, draft KV in the paged pool).
        # The method stays "eagle3" because vLLM branches on that name in many places; serves_ptp() recognises it.
        self.method, self.parallel_drafting = "eagle3", True
        return original(self)
    # Set up like vLLM's custom_class method (no draft ModelConfig, shares the target's); that branch also logs an
    # "experimental custom class" warning that would mislead our users, so it is filtered for this call.
    self.method = "custom_class"
    try:
        with _silence("vllm.config.speculative", "custom class-based proposer"):
            return original(self)
    finally:
        self.method = method


def validate_checkpoint_for_target(method: str, folder: str, target_model_config, k: int | None) -> int:
    """Open the draft folder at start-up: kind, weights, target sizes, k. Returns the k to use."""
    if not Path(folder).is_dir():
        raise CheckpointError(f"speculative_config.model = {folder!r}: not a directory (expected a draft checkpoint "
                              f"folder with config.json and model.safetensors)")
    found = speculators_type(folder)
    if found is not None and found != method:
        raise CheckpointError(f"{Path(folder) / 'config.json'}: field 'speculators_model_type' is {found!r} but "
                              f"speculative_config.method is {method!r}")
    if method == PTP_TYPE:
        config = PTPConfig.from_checkpoint(folder)
        if target_model_config is not None:
            config.check_target(folder, target_model_config.get_vocab_size(), target_model_config.get_hidden_size(),
                                target_model_config.get_total_num_hidden_layers())
        load_ptp_draft(folder)  # every tensor checked now, not at the first request
        n, field = config.num_slots, "ptp.num_slots"
    else:
        config = CPConfig.from_checkpoint(folder)
        if target_model_config is not None:
            config.check_target(folder, target_model_config.get_vocab_size(), target_model_config.get_hidden_size())
        load_cp_heads(folder)
        n, field = config.num_heads, "num_heads"
    k = n if k is None else k
    if not 1 <= k <= n:
        raise CheckpointError(f"{Path(folder) / CONFIG_FILE}: num_speculative_tokens={k} but field '{field}' is {n}: "
                              f"this draft was trained to draft 1 to {n} tokens")
    return k


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


@contextlib.contextmanager
def _silence(logger_name: str, message_part: str):
    class _Filter(logging.Filter):
        def filter(self, record):
            return message_part not in record.getMessage()

    logger, log_filter = logging.getLogger(logger_name), _Filter()
    logger.addFilter(log_filter)
    try:
        yield
    finally:
        logger.removeFilter(log_filter)


# --- Model runner V2 has no hook for a hidden-state drafter: our methods stay on V1 (as Medusa does) -------------

def replacement_for_VllmConfig__get_v2_model_runner_unsupported_features(self):
    unsupported = _original("VllmConfig", "_get_v2_model_runner_unsupported_features")(self)
    if is_ours(self.speculative_config):
        method = PTP_TYPE if serves_ptp(self.speculative_config) else self.speculative_config.method
        unsupported.append(f"speculative method '{method}' (vllm-ptp)")
    return unsupported


# --- GPUModelRunner (the CPU runner subclasses it) ----------------------------------------------------------------

def replacement_for_GPUModelRunner___init__(self, vllm_config, device):
    original = _original("GPUModelRunner", "__init__")
    spec = vllm_config.speculative_config
    settings = EngineSettings.from_additional_config(vllm_config.additional_config)
    self._vllm_ptp_draft_timer = DraftTimer(settings.draft_time_file)
    self._vllm_ptp_fix_sampler = is_ours(spec) or settings.fix_cpu_sampler_for_all
    if not is_ours(spec):
        return original(self, vllm_config, device)
    self._vllm_ptp_matcher = _context_matcher(vllm_config)
    from vllm.v1.worker import gpu_model_runner as runner_module
    if serves_ptp(spec):
        # vLLM builds its EagleProposer here; ours is that class with PTP's two changes.
        eagle_proposer = runner_module.EagleProposer
        runner_module.EagleProposer = _ptp_proposer_class()
        try:
            return original(self, vllm_config, device)
        finally:
            runner_module.EagleProposer = eagle_proposer
    method = spec.method
    # The custom_class branch is the one place the runner builds a drafter from a factory and nothing else.
    spec.method = "custom_class"
    build_custom = runner_module.create_custom_proposer
    runner_module.create_custom_proposer = lambda config: VllmCPDrafter(config, device)
    try:
        original(self, vllm_config, device)
    finally:
        runner_module.create_custom_proposer = build_custom
        spec.method = method


def replacement_for_GPUModelRunner_propose_draft_token_ids(self, scheduler_output, sampled_token_ids,
                                                           sampling_metadata, hidden_states, sample_hidden_states,
                                                           aux_hidden_states, spec_decode_metadata,
                                                           common_attn_metadata, slot_mappings):
    with self._vllm_ptp_draft_timer.timing(self.device):
        if not is_ours(self.speculative_config) or serves_ptp(self.speculative_config):
            drafts = _original("GPUModelRunner", "propose_draft_token_ids")(
                self, scheduler_output, sampled_token_ids, sampling_metadata, hidden_states, sample_hidden_states,
                aux_hidden_states, spec_decode_metadata, common_attn_metadata, slot_mappings)
            if getattr(self, "_vllm_ptp_matcher", None) is not None:
                drafts = _overlay_on_ptp_drafts(self, drafts, sampled_token_ids)
            return drafts
        return _propose_with_cp_drafter(self, scheduler_output, sampled_token_ids, sampling_metadata,
                                        sample_hidden_states, spec_decode_metadata)


def _propose_with_cp_drafter(self, scheduler_output, sampled_token_ids, sampling_metadata, sample_hidden_states,
                             spec_decode_metadata):
    num_draft = spec_decode_metadata.num_draft_tokens if spec_decode_metadata is not None else None
    draft_ids, draft_probs = self.drafter.propose(
        sampled_token_ids, sample_hidden_states, num_draft, sampling_metadata,
        scheduler_output.num_spec_tokens_to_schedule)
    if self._vllm_ptp_matcher is not None:
        draft_ids, draft_probs = _overlay_on_cp_drafts(self, draft_ids, draft_probs)
    self._draft_probs = draft_probs
    self._draft_prob_req_ids = self.input_batch.req_ids.copy() if draft_probs is not None else None
    return draft_ids


# --- Hybrid drafting (speculative_config.hybrid): context matches ahead of our drafts ----------------------------

def _context_matcher(vllm_config) -> ContextMatcher | None:
    spec = vllm_config.speculative_config
    if getattr(spec, HYBRID_FIELD, None) is None:
        return None
    if vllm_config.scheduler_config.async_scheduling:
        # The runner's CPU token table then lags the GPU by a step: the matcher would search a stale history.
        raise ValueError("speculative_config.hybrid needs the runner's token history on the CPU each step: start "
                         "the engine with async scheduling off (--no-async-scheduling)")
    settings = HybridSettings(spec.hybrid, spec.prompt_lookup_min, spec.prompt_lookup_max)
    return ContextMatcher(settings, spec.num_speculative_tokens, vllm_config.model_config.max_model_len,
                          vllm_config.scheduler_config.max_num_seqs)


def _overlay_on_ptp_drafts(runner, drafts: torch.Tensor, sampled_token_ids) -> torch.Tensor:
    """PTP drafts. vLLM's padded drafting (its default) proposes before the runner's bookkeeping, from the sampled
    tokens as a tensor (-1: rejected slots): each row's history is then the token table plus those tokens. Without
    padding it proposes after the bookkeeping, from lists, and the table already holds them. Rows in a partial
    prefill draft nothing that is kept; they are skipped."""
    batch = min(drafts.shape[0], runner.input_batch.num_reqs)
    before_bookkeeping = torch.is_tensor(sampled_token_ids)
    new_rows = sampled_token_ids.tolist() if before_bookkeeping else sampled_token_ids
    new_tokens = [[t for t in row if t >= 0] for row in new_rows[:batch]]
    discarded = runner.discard_request_mask.np[:batch]
    active = [bool(tokens) and not discarded[i] for i, tokens in enumerate(new_tokens)]
    matches = runner._vllm_ptp_matcher.match(runner.input_batch.token_ids_cpu, runner.input_batch.num_tokens_no_spec,
                                             active, new_tokens if before_bookkeeping else None)
    ids, probs = overlay_matches(drafts[:batch], runner._draft_probs, matches)
    runner._draft_probs = probs
    return torch.cat([ids, drafts[batch:]]) if batch < drafts.shape[0] else ids


def _overlay_on_cp_drafts(runner, drafts: list[list[int]], probs: torch.Tensor | None):
    """CP drafts after the runner's bookkeeping: the token table already holds this step's tokens."""
    active = [bool(d) for d in drafts]
    if not any(active):
        return drafts, probs
    matches = runner._vllm_ptp_matcher.match(runner.input_batch.token_ids_cpu, runner.input_batch.num_tokens_no_spec,
                                             active)
    k = max(len(d) for d in drafts)
    ids = torch.tensor([d if d else [0] * k for d in drafts])
    ids, probs = overlay_matches(ids, probs, matches)
    return [row if drafts[i] else [] for i, row in enumerate(ids.tolist())], probs


# --- Holes in the draft's KV cache near max_model_len (vLLM 0.32, every device) ---------------------------------
# vLLM skips the drafter for the WHOLE batch in any step where one request's length + k exceeds the draft's
# max_model_len. No draft KV is written for that step's positions of every other request either, and their later
# draft steps attend to whatever those slots held before: a request's drafts then depend on which requests ran
# earlier (greedy output is unaffected, but seeded PTP answers stopped repeating run to run, and acceptance drops).
# For PTP the drafter runs whenever the sequences themselves fit: PTPProposer clamps the mask slots that would
# pass the limit (they are never written, and their drafts are trimmed by the scheduler).

def replacement_for_GPUModelRunner__input_fits_in_drafter(self, common_attn_metadata):
    if common_attn_metadata is None or not serves_ptp(self.speculative_config):
        return _original("GPUModelRunner", "_input_fits_in_drafter")(self, common_attn_metadata)
    limit = self.effective_drafter_max_model_len
    # the clamped lengths must still hold every query: a prefill chunk of nearly max_model_len is left to vLLM
    return (common_attn_metadata.max_seq_len <= limit
            and common_attn_metadata.max_query_len + self.num_spec_tokens <= limit)


# --- Three vLLM 0.32 CPU bugs in sampling, fixed for our methods -------------------------------------------------
# 1. Its torch top-k calls max() on an empty tensor when a step has no draft tokens at all (every first step of a
#    top-k request: vLLM's ngram hits it too).
# 2. Its C++ stand-in for the Triton `expand_kernel` writes into an int64 copy of the output, so the per-token
#    temperature / top-k / top-p it expands (float32 / int32) are uninitialised memory: sampled requests would be
#    verified against a wrong target distribution.

# On for our methods; for every method only when the engine asks (EngineSettings.fix_cpu_sampler_for_all, which
# `vllm-ptp bench` sets so that vLLM's own methods are verified against the right temperatures too). The rejection
# sampler runs inside the runner's _sample: that engine's choice holds for the call (a context variable), so engines
# in one process do not decide for each other.
_sampler_fixes = contextvars.ContextVar("vllm_ptp_sampler_fixes", default=False)


def replacement_for_rejection_sampler_apply_sampling_constraints(logits, cu_num_draft_tokens, sampling_metadata):
    if _sampler_fixes.get() and logits.shape[0] == 0:
        return logits  # nothing to constrain; vLLM's torch top-k calls max() on the empty tensor
    return _original("rejection_sampler", "apply_sampling_constraints")(logits, cu_num_draft_tokens,
                                                                       sampling_metadata)


def replacement_for_rejection_sampler_expand_batch_to_tokens(x, cu_num_tokens, num_tokens, replace_from=0,
                                                             replace_to=0):
    if not (_sampler_fixes.get() and x.device.type == "cpu"):
        return _original("rejection_sampler", "expand_batch_to_tokens")(x, cu_num_tokens, num_tokens, replace_from,
                                                                        replace_to)
    counts = torch.diff(cu_num_tokens.long(), prepend=cu_num_tokens.new_zeros(1).long())
    x = torch.where(x == replace_from, torch.tensor(replace_to, dtype=x.dtype), x)
    return torch.repeat_interleave(x, counts, output_size=num_tokens)


# 3. A seeded request whose prompt is prefilled in several chunks samples a token at every chunk but the last and
#    discards it; vLLM then rewinds the request's generator with set_offset(offset - 4), which only CUDA (Philox)
#    generators have: on the CPU it raises and the engine dies. The CPU generator's state is saved before sampling
#    and restored instead (exactly "nothing was drawn", where the CUDA rewind approximates it).

def replacement_for_GPUModelRunner__sample(self, logits, spec_decode_metadata):
    fixes = getattr(self, "_vllm_ptp_fix_sampler", False)
    self._vllm_ptp_rng_before_discarded = _cpu_generators_of_discarded_rows(self) if fixes else {}
    token = _sampler_fixes.set(fixes)
    try:
        return _original("GPUModelRunner", "_sample")(self, logits, spec_decode_metadata)
    finally:
        _sampler_fixes.reset(token)


def replacement_for_GPUModelRunner__bookkeeping_sync(self, *args, **kwargs):
    saved = getattr(self, "_vllm_ptp_rng_before_discarded", None) or {}
    self._vllm_ptp_rng_before_discarded = {}
    generators = self.input_batch.generators
    for i, (generator, state) in saved.items():
        generator.set_state(state)
        del generators[i]  # hidden from vLLM's CUDA-only rewind
    try:
        return _original("GPUModelRunner", "_bookkeeping_sync")(self, *args, **kwargs)
    finally:
        for i, (generator, _) in saved.items():
            generators[i] = generator


def _cpu_generators_of_discarded_rows(runner) -> dict[int, tuple[torch.Generator, torch.Tensor]]:
    num_reqs = runner.input_batch.num_reqs
    saved = {}
    for i in runner.discard_request_mask.np[:num_reqs].nonzero()[0]:
        generator = runner.input_batch.generators.get(int(i))
        if generator is not None and generator.device.type == "cpu":
            saved[int(i)] = (generator, generator.get_state())
    return saved


class DraftTimer:
    """Opt-in (EngineSettings.draft_time_file): wall time spent in the runner's propose_draft_token_ids (the
    drafting of every method, vLLM's own too), written to `path` as {"seconds", "calls"} after every call, so a
    benchmark in another process can read the draft share of a run. Without a path, it only yields."""

    def __init__(self, path: str | None):
        from vllm.distributed import get_tensor_model_parallel_rank
        # Every tensor-parallel worker drafts the same tokens at the same time: the first one reports.
        self.path = path if get_tensor_model_parallel_rank() == 0 else None
        self.seconds, self.calls = 0.0, 0

    @contextlib.contextmanager
    def timing(self, device: torch.device):
        if not self.path:
            yield
            return
        start = time.perf_counter()
        try:
            yield
        finally:
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            self.seconds += time.perf_counter() - start
            self.calls += 1
            tmp = f"{self.path}.{os.getpid()}.tmp"
            with open(tmp, "w") as f:
                json.dump({"seconds": self.seconds, "calls": self.calls}, f)
            os.replace(tmp, self.path)


def _whole_vocab_rows(weight: torch.Tensor, vocab_size: int) -> torch.Tensor:
    """The target's embedding / LM head with every vocab row. Under tensor parallelism each worker holds one
    contiguous shard of the (padded) vocab rows (VocabParallelEmbedding without added vocab): all-gathered once
    at load, so every worker drafts from the same full distributions as at TP=1."""
    from vllm.distributed import get_tensor_model_parallel_world_size, tensor_model_parallel_all_gather
    if get_tensor_model_parallel_world_size() > 1:
        weight = tensor_model_parallel_all_gather(weight.contiguous(), dim=0)
    if weight.shape[0] < vocab_size:
        raise RuntimeError(f"vllm-ptp CP heads: the target's vocab rows ({weight.shape[0]}) are fewer than its vocab "
                           f"size ({vocab_size}); this target layout is not supported")
    return weight[:vocab_size]


class VllmCPDrafter:
    """Adapts vLLM's runner state (sampled token lists, hidden states, SamplingMetadata) to CPProposer."""

    def __init__(self, vllm_config, device: torch.device):
        spec = vllm_config.speculative_config
        self.vocab_size = vllm_config.model_config.get_vocab_size()
        self.device = device
        self.proposer = CPProposer(spec.model, device=device, dtype=vllm_config.model_config.dtype)

    def load_model(self, target_model: torch.nn.Module) -> None:
        embed = _whole_vocab_rows(target_model.model.embed_tokens.weight, self.vocab_size)
        lm_head = _whole_vocab_rows(target_model.lm_head.weight, self.vocab_size)
        self.proposer.attach_target(embed, lm_head, self.vocab_size)

    def propose(self, sampled_token_ids: list[list[int]], sample_hidden_states: torch.Tensor,
                num_draft_tokens: list[int] | None, sampling_metadata, k: int):
        """-> (draft ids per request, [] where the request has no new token; draft probs [R, k, V] or None)."""
        rows, last_tokens, active = [], [], []
        offset = 0
        for i, tokens in enumerate(sampled_token_ids):
            if tokens:
                rows.append(offset + len(tokens) - 1)  # the hidden state that produced the last sampled token
                last_tokens.append(tokens[-1])
                active.append(i)
            offset += 1 if num_draft_tokens is None else num_draft_tokens[i] + 1
        drafts: list[list[int]] = [[] for _ in sampled_token_ids]
        if not active or k == 0:
            return drafts, None
        idx = torch.tensor(active, device=self.device)
        temperature = (torch.zeros(len(active), device=self.device) if sampling_metadata.temperature is None
                       else sampling_metadata.temperature[idx])
        top_k = None if sampling_metadata.top_k is None else sampling_metadata.top_k[idx]
        top_p = None if sampling_metadata.top_p is None else sampling_metadata.top_p[idx]
        uniforms = draw_uniforms(len(sampled_token_ids), k, sampling_metadata.generators,
                                 sampling_metadata.temperature, self.device)[idx]
        ids, probs = self.proposer.propose(
            sample_hidden_states[torch.tensor(rows, device=sample_hidden_states.device)],
            torch.tensor(last_tokens, device=self.device), k, temperature, top_k, top_p, uniforms,
            return_probs=not sampling_metadata.all_greedy)  # greedy verification never reads draft probabilities
        for j, draft in zip(active, ids.tolist()):
            drafts[j] = draft
        if probs is None:
            return drafts, None
        all_probs = torch.zeros(len(sampled_token_ids), k, self.vocab_size, dtype=torch.float32, device=self.device)
        all_probs[idx] = probs
        return drafts, all_probs


# --- PTP: vLLM's EAGLE-3 draft class and proposer, each with PTP's change and nothing else -------------------------

_classes: dict[str, type] = {}


def __getattr__(name: str):
    # vLLM's model registry imports "vllm_ptp.vllm_seam:PtpLlamaForCausalLM" lazily, in the process that needs it.
    if name == ARCHITECTURE:
        return _ptp_model_class()
    raise AttributeError(name)


def _ptp_model_class() -> type:
    if ARCHITECTURE not in _classes:
        from vllm.model_executor.models.llama_eagle3 import Eagle3LlamaForCausalLM

        class PtpLlamaForCausalLM(Eagle3LlamaForCausalLM):
            """vLLM's EAGLE-3 Llama draft plus the PTP conditioning of the mask slots (u and temperature
            embeddings); loads the same safetensors as vllm_ptp.models.ptp_draft.PTPDraft."""

            def __init__(self, *, vllm_config, prefix: str = ""):
                super().__init__(vllm_config=vllm_config, prefix=prefix)
                config = self.config
                self.ptp_conditioning = PTPConditioning(config.ptp_u_embedding, config.ptp_u_features,
                                                        config.hidden_size)

            def load_weights(self, weights):
                ours: dict[str, torch.Tensor] = {}

                def theirs():
                    for name, tensor in weights:
                        if name.startswith("ptp_conditioning."):
                            ours[name.removeprefix("ptp_conditioning.")] = tensor
                        else:
                            yield name, tensor

                loaded = super().load_weights(theirs())
                self.ptp_conditioning.load_state_dict(ours)
                return loaded

        PtpLlamaForCausalLM.__name__ = PtpLlamaForCausalLM.__qualname__ = ARCHITECTURE
        _classes[ARCHITECTURE] = PtpLlamaForCausalLM
    return _classes[ARCHITECTURE]


def _ptp_proposer_class() -> type:
    if "PTPProposer" not in _classes:
        from vllm.v1.spec_decode.eagle import EagleProposer

        class PTPProposer(EagleProposer):
            """vLLM's EAGLE-3 parallel drafting, changed at two points: the mask slots' inputs get the embeddings
            of u_1..u_{K-1} and the temperature (set_inputs_first_pass), and the K tokens are picks at u_1..u_K
            from the processed slot distributions, which go to the rejection sampler (_sample_draft_tokens). It
            also drafts in steps where vLLM's would skip the batch near max_model_len (_clamp_to_max_model_len)."""

            _ptp_u: torch.Tensor | None = None
            _ptp_sampling = None

            def load_model(self, target_model) -> None:
                super().load_model(target_model)
                folder = Path(self.speculative_config.model)
                embed = _whole_vocab_rows(self.model.model.embed_tokens.weight,
                                          self.vllm_config.model_config.get_vocab_size())
                check_fingerprint(folder / CONFIG_FILE, PTPConfig.from_checkpoint(folder).verifier, embed)

            def propose(self, *args, **kwargs):
                # vLLM's runner passes everything by keyword
                metadata = kwargs["sampling_metadata"]
                batch = kwargs["common_attn_metadata"].batch_size()
                self._ptp_u = draw_uniforms(batch, kwargs["num_speculative_tokens"], metadata.generators,
                                            metadata.temperature, self.device)
                self._ptp_sampling = metadata
                try:
                    return super().propose(*args, **kwargs)
                finally:
                    self._ptp_u = self._ptp_sampling = None

            def set_inputs_first_pass(self, *args, **kwargs):
                num_tokens, token_indices_to_sample, cad = super().set_inputs_first_pass(*args, **kwargs)
                cad = self._clamp_to_max_model_len(num_tokens, cad)
                u = self._ptp_u
                if u is not None and u.shape[1] > 1:
                    mask_rows = token_indices_to_sample.view(u.shape[0], -1)[:, 1:].long()
                    temperature = self._ptp_sampling.temperature
                    if temperature is None:
                        temperature = torch.zeros(u.shape[0], device=u.device)
                    added = self.model.ptp_conditioning(u[:, :-1], temperature[:u.shape[0]])
                    self.hidden_states[mask_rows] += added.to(self.hidden_states.dtype)
                return num_tokens, token_indices_to_sample, cad

            def _clamp_to_max_model_len(self, num_tokens, cad):
                """Mask slots of a request near the limit sit past it (replacement_for_GPUModelRunner__input_
                fits_in_drafter lets such steps draft): vLLM already leaves them unwritten; their positions are
                clamped for the rotary table and the lengths for the block table (that request's last drafts are
                then approximate; the scheduler trims those past the limit anyway)."""
                limit = self.speculative_config.draft_model_config.max_model_len
                if cad.max_seq_len <= limit:
                    return cad
                self.positions[:num_tokens].clamp_(max=limit - 1)
                return cad.replace(seq_lens=cad.seq_lens.clamp(max=limit), max_seq_len=limit)

            def _sample_draft_tokens(self, hidden_states, sampling_metadata):
                logits = self.model.compute_logits(hidden_states)
                m = sampling_metadata
                return pick_drafts(logits, self._ptp_u, m.temperature, m.top_k, m.top_p,
                                   return_probs=not m.all_greedy)

        _classes["PTPProposer"] = PTPProposer
    return _classes["PTPProposer"]
