"""CP heads as vLLM's custom-class drafter: vLLM's runner state in, CPProposer's drafts and distributions out."""
from __future__ import annotations

import torch

from vllm_ptp.proposers.cp_proposer import CPProposer
from vllm_ptp.proposers.ptp_proposer import draw_uniforms
from vllm_ptp.vllm_integration.tensor_parallel import whole_vocab_rows


class VllmCPDrafter:
    """Adapts vLLM's runner state (sampled token lists, hidden states, SamplingMetadata) to CPProposer."""

    def __init__(self, vllm_config, device: torch.device):
        spec = vllm_config.speculative_config
        self.vocab_size = vllm_config.model_config.get_vocab_size()
        self.device = device
        self.proposer = CPProposer(spec.model, device=device, dtype=vllm_config.model_config.dtype)
        self._confidence: torch.Tensor | None = None

    def load_model(self, target_model: torch.nn.Module) -> None:
        # the heads borrow the target's embedding and LM head
        embed = whole_vocab_rows(target_model.model.embed_tokens.weight, self.vocab_size)
        lm_head = whole_vocab_rows(target_model.lm_head.weight, self.vocab_size)
        self.proposer.attach_target(embed, lm_head, self.vocab_size)

    def propose(self, sampled_token_ids: list[list[int]], sample_hidden_states: torch.Tensor,
                num_draft_tokens: list[int] | None, sampling_metadata, k: int, wanted: list[bool] | None = None):
        """wanted: the requests to draft for (None: all) -> (draft ids per request, [] where the request has no new
        token or is not wanted; draft probs [R, k, V] or None). A k above the number of heads (hybrid mode: matches
        draft the rest) drafts one token per head."""
        rows, last_tokens, active = [], [], []
        offset = 0
        for i, tokens in enumerate(sampled_token_ids):
            if tokens and (wanted is None or wanted[i]):
                rows.append(offset + len(tokens) - 1)  # the hidden state that produced the last sampled token
                last_tokens.append(tokens[-1])
                active.append(i)
            offset += 1 if num_draft_tokens is None else num_draft_tokens[i] + 1
        drafts: list[list[int]] = [[] for _ in sampled_token_ids]
        if not any(sampled_token_ids) or k == 0:
            return drafts, None
        width, k = k, min(k, self.proposer.config.num_heads)
        # Drawn for every request with a new token, drafted or not: a seeded request's generator (which the
        # rejection sampler also reads) then advances alike whether it matched, and whatever else is in the batch.
        # A request in a partial prefill has none: vLLM has just rewound its generator, and it stays so.
        uniforms = draw_uniforms(len(sampled_token_ids), k, sampling_metadata.generators,
                                 sampling_metadata.temperature, self.device,
                                 seeded_rows={i for i, tokens in enumerate(sampled_token_ids) if tokens})
        if not active:
            return drafts, None
        idx = torch.tensor(active, device=self.device)
        uniforms = uniforms[idx]
        temperature = (torch.zeros(len(active), device=self.device) if sampling_metadata.temperature is None
                       else sampling_metadata.temperature[idx])
        top_k = None if sampling_metadata.top_k is None else sampling_metadata.top_k[idx]
        top_p = None if sampling_metadata.top_p is None else sampling_metadata.top_p[idx]
        ids, probs = self.proposer.propose(
            sample_hidden_states[torch.tensor(rows, device=sample_hidden_states.device)],
            torch.tensor(last_tokens, device=self.device), k, temperature, top_k, top_p, uniforms,
            return_probs=not sampling_metadata.all_greedy)  # greedy verification never reads draft probabilities
        for j, draft in zip(active, ids.tolist()):
            drafts[j] = draft
        self._confidence = torch.zeros(len(sampled_token_ids), k, device=self.device)
        self._confidence[idx] = self.proposer.last_confidence
        if probs is None:
            return drafts, None
        all_probs = torch.zeros(len(sampled_token_ids), width, self.vocab_size, dtype=torch.float32,
                                device=self.device)
        all_probs[idx, :k] = probs
        return drafts, all_probs

    def take_last_confidence(self) -> torch.Tensor | None:
        """[R, k] the heads' top probability at each drafted position of the last step (draft_confidence), once."""
        confidence, self._confidence = self._confidence, None
        return confidence
