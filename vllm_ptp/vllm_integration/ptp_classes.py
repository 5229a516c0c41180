"""PTP in vLLM: its EAGLE-3 draft class and proposer, each with PTP's change and nothing else.

Imports vLLM's model and proposer modules, so it is imported only where they are needed: by vLLM's model registry
("vllm_ptp.vllm_integration.ptp_classes:PtpLlamaForCausalLM", in the process that loads the draft) and by the
runner when it is built for a PTP draft.
"""
from __future__ import annotations

import contextlib
from pathlib import Path

import torch
from vllm.model_executor.models.llama_eagle3 import Eagle3LlamaForCausalLM
from vllm.v1.spec_decode.eagle import EagleProposer

from vllm_ptp.models.checkpoint import CONFIG_FILE, check_fingerprint
from vllm_ptp.models.ptp_config import PTPConfig
from vllm_ptp.models.ptp_draft import PTPConditioning
from vllm_ptp.proposers.draft_confidence import top_probability
from vllm_ptp.proposers.ptp_proposer import draw_uniforms, pick_drafts
from vllm_ptp.vllm_integration.tensor_parallel import whole_vocab_rows


class PtpLlamaForCausalLM(Eagle3LlamaForCausalLM):
    """vLLM's EAGLE-3 Llama draft plus the PTP conditioning of the mask slots (u and temperature embeddings);
    loads the same safetensors as vllm_ptp.models.ptp_draft.PTPDraft."""

    def __init__(self, *, vllm_config, prefix: str = ""):
        super().__init__(vllm_config=vllm_config, prefix=prefix)
        config = self.config
        self.ptp_conditioning = PTPConditioning(config.ptp_u_embedding, config.ptp_u_features, config.hidden_size)

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


class PTPProposer(EagleProposer):
    """vLLM's EAGLE-3 parallel drafting, changed at two points: the mask slots' inputs get the embeddings of
    u_1..u_{K-1} and the temperature (set_inputs_first_pass), and the K tokens are picks at u_1..u_K from the
    processed slot distributions, which go to the rejection sampler (_sample_draft_tokens). It also drafts in steps
    where vLLM's would skip the batch near max_model_len (_clamp_to_max_model_len). In a step whose drafts are all
    context matches (hybrid) it runs without them (matches_only). With the hybrid's num_speculative_tokens above the
    slots the draft was trained for, it drafts its slots and the matches draft up to k."""

    _ptp_u: torch.Tensor | None = None
    _ptp_sampling = None
    _ptp_confidence: torch.Tensor | None = None
    _ptp_matches_only = False

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.ptp_config = PTPConfig.from_checkpoint(self.speculative_config.model)
        self.ptp_slots = min(self.num_speculative_tokens, self.ptp_config.num_slots)
        self._set_slots(self.ptp_slots)

    def _set_slots(self, slots: int) -> None:
        """vLLM's parallel-drafting layout for `slots` drafted tokens per request (it sets it up for the config's
        k): the next token's input plus slots - 1 mask slots; slots = 0 is its sequential first pass alone."""
        self.extra_slots_per_request = max(slots, 1)
        self.net_num_new_slots_per_request = self.extra_slots_per_request - 1
        self.needs_extra_input_slots = self.net_num_new_slots_per_request > 0

    def load_model(self, target_model) -> None:
        super().load_model(target_model)
        folder = Path(self.speculative_config.model)
        embed = whole_vocab_rows(self.model.model.embed_tokens.weight, self.vllm_config.model_config.get_vocab_size())
        check_fingerprint(folder / CONFIG_FILE, self.ptp_config.verifier, embed)

    @contextlib.contextmanager
    def matches_only(self):
        """A step of the hybrid whose drafts are all context matches: the draft does not draft, but it still runs over
        the step's tokens, since its KV cache must hold every position for the steps that do. It runs as vLLM's
        sequential EAGLE first pass with no draft token asked for (vLLM's own K = 0 path): the same inputs at the
        same positions, without the K-1 mask slots, the logits and the picks. The KV it writes at the step's
        verified positions is what a drafting step writes there (causal attention: the mask slots come after
        them); what it writes past them is rewritten by the next step, as after any step."""
        self._set_slots(0)
        self._ptp_matches_only = True
        try:
            yield
        finally:
            self._set_slots(self.ptp_slots)
            self._ptp_matches_only = False

    def propose(self, *args, **kwargs):
        # vLLM's runner passes everything by keyword
        if self._ptp_matches_only:
            return super().propose(*args, **{**kwargs, "num_speculative_tokens": 0})
        k = min(kwargs["num_speculative_tokens"], self.ptp_slots)  # the hybrid's matches draft the rest
        self._set_slots(k)  # vLLM's layout follows the k of the step (k by batch size), not the config's
        metadata = kwargs["sampling_metadata"]
        batch = kwargs["common_attn_metadata"].batch_size()
        self._ptp_u = draw_uniforms(batch, k, metadata.generators, metadata.temperature, self.device)
        self._ptp_sampling = metadata
        try:
            return super().propose(*args, **{**kwargs, "num_speculative_tokens": k})
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
        """Mask slots of a request near the limit sit past it (runner.input_fits_in_drafter lets such steps draft):
        vLLM already leaves them unwritten; their positions are clamped for the rotary table and the lengths for
        the block table (that request's last drafts are then approximate; the scheduler trims those past the limit
        anyway)."""
        limit = self.speculative_config.draft_model_config.max_model_len
        if cad.max_seq_len <= limit:
            return cad
        self.positions[:num_tokens].clamp_(max=limit - 1)
        return cad.replace(seq_lens=cad.seq_lens.clamp(max=limit), max_seq_len=limit)

    def _sample_draft_tokens(self, hidden_states, sampling_metadata):
        logits = self.model.compute_logits(hidden_states)
        m = sampling_metadata
        if getattr(self.speculative_config, "min_draft_confidence", None) is not None:
            B, K = self._ptp_u.shape
            temperature = None if m.temperature is None else m.temperature[:B].repeat_interleave(K)
            self._ptp_confidence = top_probability(logits, temperature).view(B, K)
        return pick_drafts(logits, self._ptp_u, m.temperature, m.top_k, m.top_p, return_probs=not m.all_greedy)

    def take_last_confidence(self) -> torch.Tensor | None:
        """[B, K] the draft's top probability in each slot of the last step (draft_confidence), once."""
        confidence, self._ptp_confidence = self._ptp_confidence, None
        return confidence
