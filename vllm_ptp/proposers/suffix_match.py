"""The hybrid's "suffix" kind: vLLM's suffix decoding as the context match.

vLLM's SuffixDecodingProposer (Arctic Inference's suffix trees) matches the end of a request against a tree of its
own prompt and output and a tree of earlier requests' outputs, and drafts as many tokens as the counts in the trees
make likely (each at least suffix_decoding_min_token_prob, at most suffix_decoding_max_spec_factor times the
matched length). Unlike prompt lookup it learns across requests: an answer that repeats what earlier answers said
is matched even where its own history has no copy.

The proposer keeps a tree per request and reads a runner's input batch; this adapter hands it a step's history
(StepHistory) in that shape, including the tokens the runner has not yet written to its table (PTP drafts before
the runner's bookkeeping). Each request's tree is given every token it has not been given yet, read from the
history, rather than only this step's: a step without drafting (vLLM skips the drafter for a whole batch when one
request nears the draft's length limit) would otherwise leave a hole in the tree. Each draft's length is the key its
acceptance is measured by (match_acceptance): the proposer stops drafting where its counts grow unsure, so the
length carries its confidence.
"""
from __future__ import annotations

from types import SimpleNamespace

from vllm_ptp.proposers.context_match import HybridSettings, StepHistory


class SuffixMatcher:
    def __init__(self, settings: HybridSettings, vllm_config):
        from vllm.v1.spec_decode.suffix_decoding import SuffixDecodingProposer

        self.settings = settings
        self.k = vllm_config.speculative_config.num_speculative_tokens
        self.proposer = SuffixDecodingProposer(vllm_config)
        self._given: dict[str, int] = {}  # request -> tokens (prompt and output) its tree holds

    def match(self, history: StepHistory) -> tuple[list[list[int]], list[int]]:
        """-> up to k drafted tokens per row ([] where the trees have nothing likely enough, or the row does not
        draft), and each row's draft length (0: none)."""
        batch = len(history.new_tokens)
        requests = list(history.requests[:batch])
        # the proposer starts a tree from the prompt for a request it does not hold (new, or back after leaving)
        self._given = {r: n for r, n in self._given.items()
                       if r in requests and r in self.proposer.suffix_cache.active_requests}
        unseen = []
        for i, request in enumerate(requests):
            start = self._given.get(request, int(history.prompt_lengths[i]))
            unseen.append(history.tokens[i, start:history.lengths[i]].tolist() if history.new_tokens[i] else [])
        input_batch = SimpleNamespace(req_ids=requests, req_id_to_index={r: i for i, r in enumerate(requests)},
                                      num_tokens_no_spec=history.lengths, num_prompt_tokens=history.prompt_lengths,
                                      token_ids_cpu=history.tokens)
        drafts = self.proposer.propose(self.k, input_batch, unseen)
        for i, request in enumerate(requests):
            if unseen[i]:
                self._given[request] = int(history.lengths[i])
        matches = [list(map(int, draft)) for draft in drafts]
        return matches, [len(match) for match in matches]
