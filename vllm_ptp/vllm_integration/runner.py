"""Runner wiring: vLLM's V1 model runner builds our drafter where it builds its own, and hands it what it drafts
from; the CPU runner subclasses GPUModelRunner, so these replacements serve both.

- PTP: the runner builds vLLM's EagleProposer; while it is built for a PTP draft, the class is ours (ptp_classes).
- CP: set up like vLLM's custom_class method; the runner builds our drafter through the custom-class factory and,
  like vLLM's Medusa branch, hands it the target's final hidden state that produced each request's last sampled
  token, plus that token. The drafts' distributions go where vLLM's rejection sampler picks them up next step
  (`_draft_probs`, as for EAGLE's probabilistic drafting).
"""
from __future__ import annotations

import contextlib
import logging
import time

from vllm_ptp.engine_settings import EngineSettings
from vllm_ptp.proposers.draft_confidence import AUTO, keep_confident
from vllm_ptp.proposers.learned_draft_gate import LearnedDraftGate
from vllm_ptp.proposers.match_acceptance import MatchAcceptance
from vllm_ptp.proposers.verify_cost import VerifyCost
from vllm_ptp.vllm_integration.cp_drafter import VllmCPDrafter
from vllm_ptp.vllm_integration.draft_timer import DraftTimer
from vllm_ptp.vllm_integration.hybrid import (choose_drafts, context_matcher, cp_matches, learned_draft_on,
                                              learned_rows, matches_alone, observe_verified, overlay_on_cp_drafts,
                                              overlay_on_ptp_drafts, ptp_drafts_learned, ptp_matches,
                                              widened, worth_matching)
from vllm_ptp.vllm_integration.methods import is_ours, serves_ptp
from vllm_ptp.vllm_integration.registry import original

logger = logging.getLogger("vllm.ptp")
AUTO_REPORT_SECONDS = 60.0


def runner_init(self, vllm_config, device):
    """Replaces GPUModelRunner.__init__."""
    spec = vllm_config.speculative_config
    if is_ours(spec) and spec.min_draft_confidence is not None and vllm_config.scheduler_config.async_scheduling:
        # Async scheduling books k placeholder drafts per request before the drafts exist: rows cannot be shorter.
        raise ValueError("speculative_config.min_draft_confidence drafts rows of different lengths, which needs "
                         "async scheduling off: start the engine with --no-async-scheduling")
    settings = EngineSettings.from_additional_config(vllm_config.additional_config)
    self._vllm_ptp_draft_timer = DraftTimer(settings.draft_time_file)
    self._vllm_ptp_fix_sampler = is_ours(spec) or settings.fix_cpu_sampler_for_all
    self._vllm_ptp_matcher = None
    self._vllm_ptp_verify_cost = None
    self._vllm_ptp_match_acceptance = None
    self._vllm_ptp_learned_gate = None
    self._vllm_ptp_drafted_learned = True
    self._vllm_ptp_auto_reported = time.monotonic()
    if not is_ours(spec):
        return original("GPUModelRunner.__init__")(self, vllm_config, device)
    self._vllm_ptp_matcher = context_matcher(vllm_config)
    if self._vllm_ptp_matcher is not None and self._vllm_ptp_matcher.settings.draft_max_batch_size == AUTO:
        self._vllm_ptp_learned_gate = LearnedDraftGate()
    if self._vllm_ptp_matcher is not None and spec.min_draft_confidence is not None:
        self._vllm_ptp_match_acceptance = MatchAcceptance(spec.num_speculative_tokens)
    if spec.min_draft_confidence == AUTO:
        self._vllm_ptp_verify_cost = VerifyCost()
    vllm_init = original("GPUModelRunner.__init__")
    from vllm.v1.worker import gpu_model_runner as runner_module
    if serves_ptp(spec):
        from vllm_ptp.vllm_integration.ptp_classes import PTPProposer
        eagle_proposer = runner_module.EagleProposer
        runner_module.EagleProposer = PTPProposer
        try:
            return vllm_init(self, vllm_config, device)
        finally:
            runner_module.EagleProposer = eagle_proposer
    method = spec.method
    # The custom_class branch is the one place the runner builds a drafter from a factory and nothing else.
    spec.method = "custom_class"
    build_custom = runner_module.create_custom_proposer
    runner_module.create_custom_proposer = lambda config: VllmCPDrafter(config, device)
    try:
        vllm_init(self, vllm_config, device)
    finally:
        runner_module.create_custom_proposer = build_custom
        spec.method = method


def propose_draft_token_ids(self, scheduler_output, sampled_token_ids, sampling_metadata, hidden_states,
                            sample_hidden_states, aux_hidden_states, spec_decode_metadata, common_attn_metadata,
                            slot_mappings):
    """Replaces GPUModelRunner.propose_draft_token_ids: CP drafts from the target's hidden states; PTP (and every
    method not ours) through vLLM's own; the hybrid's matches on top of ours; all of it timed for the bench."""
    cost = getattr(self, "_vllm_ptp_verify_cost", None)
    gate = getattr(self, "_vllm_ptp_learned_gate", None)
    if cost is None and gate is None:
        return _propose(self, scheduler_output, sampled_token_ids, sampling_metadata, hidden_states,
                        sample_hidden_states, aux_hidden_states, spec_decode_metadata, common_attn_metadata,
                        slot_mappings)
    decode_only, requests, verified = step_summary(scheduler_output)
    drafts = _propose(self, scheduler_output, sampled_token_ids, sampling_metadata, hidden_states,
                      sample_hidden_states, aux_hidden_states, spec_decode_metadata, common_attn_metadata,
                      slot_mappings)
    new_tokens = count_new_tokens(sampled_token_ids)
    if cost is not None:
        cost.step(decode_only, requests, verified, new_tokens)
    if gate is not None:
        gate.step(decode_only, requests, new_tokens, self._vllm_ptp_drafted_learned)
    if time.monotonic() - self._vllm_ptp_auto_reported > AUTO_REPORT_SECONDS:
        self._vllm_ptp_auto_reported = time.monotonic()
        if cost is not None:
            logger.info("vllm-ptp min_draft_confidence auto: %s", cost.describe())
        if self._vllm_ptp_match_acceptance is not None:
            logger.info("vllm-ptp matched drafts accepted through each position: %s",
                        self._vllm_ptp_match_acceptance.describe())
        if gate is not None:
            logger.info("vllm-ptp hybrid_draft_max_batch_size auto: %s", gate.describe())
    return drafts


def _propose(self, scheduler_output, sampled_token_ids, sampling_metadata, hidden_states, sample_hidden_states,
             aux_hidden_states, spec_decode_metadata, common_attn_metadata, slot_mappings):
    with self._vllm_ptp_draft_timer.timing(self.device):
        matcher = getattr(self, "_vllm_ptp_matcher", None)
        acceptance = getattr(self, "_vllm_ptp_match_acceptance", None)
        if acceptance is not None:
            observe_verified(acceptance, self.input_batch.req_ids[:self.input_batch.num_reqs], scheduler_output,
                             sampled_token_ids)
        propose_as_vllm = original("GPUModelRunner.propose_draft_token_ids")
        if not is_ours(self.speculative_config):
            return propose_as_vllm(self, scheduler_output, sampled_token_ids, sampling_metadata, hidden_states,
                                   sample_hidden_states, aux_hidden_states, spec_decode_metadata,
                                   common_attn_metadata, slot_mappings)
        if serves_ptp(self.speculative_config):
            threshold, k = _confidence_threshold(self), scheduler_output.num_spec_tokens_to_schedule
            matches, suffixes = ptp_matches(self, matcher, sampled_token_ids) if matcher is not None else (None, None)
            self._vllm_ptp_drafted_learned = matcher is None or learned_draft_on(self, self.input_batch.num_reqs)
            learned = matcher is None or ptp_drafts_learned(self, self._vllm_ptp_drafted_learned, matches, suffixes,
                                                            acceptance, threshold)
            with contextlib.nullcontext() if learned else self.drafter.matches_only():
                drafts = propose_as_vllm(self, scheduler_output, sampled_token_ids, sampling_metadata, hidden_states,
                                         sample_hidden_states, aux_hidden_states, spec_decode_metadata,
                                         common_attn_metadata, slot_mappings)
            return _ptp_final_drafts(self, drafts, matches, suffixes, k, learned, threshold)
        num_draft = spec_decode_metadata.num_draft_tokens if spec_decode_metadata is not None else None
        k = scheduler_output.num_spec_tokens_to_schedule
        threshold = _confidence_threshold(self)
        matches, suffixes, wanted = None, None, None
        if matcher is not None:
            matches, suffixes = cp_matches(self, matcher, sampled_token_ids)
            matched = worth_matching(acceptance, matches, suffixes, threshold)
            self._vllm_ptp_drafted_learned = learned_draft_on(self, self.input_batch.num_reqs)
            wanted = learned_rows(self._vllm_ptp_drafted_learned, matched)
        draft_ids, draft_probs = self.drafter.propose(
            sampled_token_ids, sample_hidden_states, num_draft, sampling_metadata, k, wanted)
        if threshold is not None:
            draft_ids, draft_probs = _keep_confident_drafts(self, draft_ids, matches, suffixes, k, draft_probs,
                                                            threshold)
        elif matcher is not None:
            draft_ids, draft_probs, _ = overlay_on_cp_drafts(draft_ids, draft_probs, matches, k)
        self._draft_probs = draft_probs
        self._draft_prob_req_ids = self.input_batch.req_ids.copy() if draft_probs is not None else None
        return draft_ids


def _ptp_final_drafts(self, drafts, matches, suffixes, k: int, learned: bool, threshold: float | None):
    """PTP drafts [B, S] ([B, 0] in a step that drafted matches only; S < k where the hybrid's matches draft past
    the draft's slots) -> the hybrid's matches first, cut to the confident positions; in a step without the
    learned draft, each row's match alone."""
    if threshold is not None:
        final, self._draft_probs = _keep_confident_drafts(self, drafts.tolist(), matches, suffixes, k,
                                                          widened(self._draft_probs, matches or [], k), threshold)
        return final
    if matches is None:
        return drafts
    if not learned:
        return matches_alone(matches, k, drafts.shape[0])
    return overlay_on_ptp_drafts(self, drafts, matches, k)


def _confidence_threshold(self) -> float | None:
    setting = getattr(self.speculative_config, "min_draft_confidence", None)
    return self._vllm_ptp_verify_cost.threshold(self.input_batch.num_reqs) if setting == AUTO else setting


def step_summary(scheduler_output) -> tuple[bool, int, int]:
    """The step that just ran, for min_draft_confidence "auto" (verify_cost) -> (decode only: every request computed
    its one new token and its drafts, nothing of a prefill; requests; draft tokens verified)."""
    scheduled, drafts = scheduler_output.num_scheduled_tokens, scheduler_output.scheduled_spec_decode_tokens
    decode_only = all(n == 1 + len(drafts.get(req_id, ())) for req_id, n in scheduled.items())
    return decode_only, len(scheduled), sum(len(d) for d in drafts.values())


def count_new_tokens(sampled_token_ids) -> int:
    """Tokens the step added to the requests: lists of them, or a tensor with -1 in rejected slots (PTP's padded
    drafting)."""
    if hasattr(sampled_token_ids, "shape"):
        return int((sampled_token_ids >= 0).sum())
    return sum(len(tokens) for tokens in sampled_token_ids)


def _keep_confident_drafts(self, learned: list[list[int]], matches: list[list[int]] | None,
                           suffixes: list[int] | None, k: int, probs, threshold: float):
    """Each row's draft up to its first position the draft is unsure of (draft_confidence); with the hybrid, the
    match or the learned draft, whichever is worth more. Rows of a variable length go to the scheduler as lists, as
    vLLM's ngram drafts do; the rejection sampler reads each row's leading draft probabilities."""
    confidence = self.drafter.take_last_confidence()
    if matches is None:
        none = [[] for _ in learned]
        return keep_confident(learned, confidence, none, none, threshold)[0], probs
    requests = self.input_batch.req_ids[:self.input_batch.num_reqs]
    return choose_drafts(self._vllm_ptp_match_acceptance, requests, learned, confidence, matches, suffixes, k, probs,
                         threshold)


def input_fits_in_drafter(self, common_attn_metadata):
    """Replaces GPUModelRunner._input_fits_in_drafter.

    vLLM 0.32 skips the drafter for the WHOLE batch in any step where one request's length + k exceeds the draft's
    max_model_len. No draft KV is written for that step's positions of every other request either, and their later
    draft steps attend to whatever those slots held before: a request's drafts then depend on which requests ran
    earlier (greedy output is unaffected, but seeded PTP answers stopped repeating run to run, and acceptance
    drops). For PTP the drafter runs whenever the sequences themselves fit: PTPProposer clamps the mask slots that
    would pass the limit (they are never written, and their drafts are trimmed by the scheduler)."""
    if common_attn_metadata is None or not serves_ptp(self.speculative_config):
        return original("GPUModelRunner._input_fits_in_drafter")(self, common_attn_metadata)
    limit = self.effective_drafter_max_model_len
    # the clamped lengths must still hold every query: a prefill chunk of nearly max_model_len is left to vLLM
    return (common_attn_metadata.max_seq_len <= limit
            and common_attn_metadata.max_query_len + self.num_spec_tokens <= limit)
