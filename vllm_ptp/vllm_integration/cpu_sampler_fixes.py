"""Three vLLM 0.32 CPU bugs in sampling, fixed while our methods are served.

1. Its torch top-k calls max() on an empty tensor when a step has no draft tokens at all (every first step of a
   top-k request: vLLM's ngram hits it too).
2. Its C++ stand-in for the Triton `expand_kernel` writes into an int64 copy of the output, so the per-token
   temperature / top-k / top-p it expands (float32 / int32) are uninitialised memory: sampled requests would be
   verified against a wrong target distribution.
3. A seeded request whose prompt is prefilled in several chunks samples a token at every chunk but the last and
   discards it; vLLM then rewinds the request's generator with set_offset(offset - 4), which only CUDA (Philox)
   generators have: on the CPU it raises and the engine dies. The CPU generator's state is saved before sampling
   and restored instead (exactly "nothing was drawn", where the CUDA rewind approximates it).

On for our methods; for every method only when the engine asks (EngineSettings.fix_cpu_sampler_for_all, which
`vllm-ptp bench` sets so that vLLM's own methods are verified against the right temperatures too). The rejection
sampler runs inside the runner's _sample: that engine's choice holds for the call (a context variable), so engines
in one process do not decide for each other.
"""
from __future__ import annotations

import contextvars

import torch

from vllm_ptp.vllm_integration.registry import original

_fixing = contextvars.ContextVar("vllm_ptp_cpu_sampler_fixes", default=False)


def active() -> bool:
    """Whether the sampling step running now has the fixes."""
    return _fixing.get()


def apply_sampling_constraints(logits, cu_num_draft_tokens, sampling_metadata):
    """Replaces rejection_sampler.apply_sampling_constraints (bug 1)."""
    if _fixing.get() and logits.shape[0] == 0:
        return logits  # nothing to constrain; vLLM's torch top-k calls max() on the empty tensor
    return original("rejection_sampler.apply_sampling_constraints")(logits, cu_num_draft_tokens, sampling_metadata)


def expand_batch_to_tokens(x, cu_num_tokens, num_tokens, replace_from=0, replace_to=0):
    """Replaces rejection_sampler.expand_batch_to_tokens (bug 2)."""
    if not (_fixing.get() and x.device.type == "cpu"):
        return original("rejection_sampler.expand_batch_to_tokens")(x, cu_num_tokens, num_tokens, replace_from,
                                                                     replace_to)
    counts = torch.diff(cu_num_tokens.long(), prepend=cu_num_tokens.new_zeros(1).long())
    x = torch.where(x == replace_from, torch.tensor(replace_to, dtype=x.dtype), x)
    return torch.repeat_interleave(x, counts, output_size=num_tokens)


def runner_sample(self, logits, spec_decode_metadata):
    """Replaces GPUModelRunner._sample: the engine's choice for the call; bug 3's generator states saved."""
    fixes = getattr(self, "_vllm_ptp_fix_sampler", False)
    self._vllm_ptp_rng_before_discarded = _cpu_generators_of_discarded_rows(self) if fixes else {}
    token = _fixing.set(fixes)
    try:
        return original("GPUModelRunner._sample")(self, logits, spec_decode_metadata)
    finally:
        _fixing.reset(token)


def runner_bookkeeping_sync(self, *args, **kwargs):
    """Replaces GPUModelRunner._bookkeeping_sync (bug 3): the saved states restored, the generators hidden from
    vLLM's CUDA-only rewind for the call."""
    saved = getattr(self, "_vllm_ptp_rng_before_discarded", None) or {}
    self._vllm_ptp_rng_before_discarded = {}
    generators = self.input_batch.generators
    for i, (generator, state) in saved.items():
        generator.set_state(state)
        del generators[i]
    try:
        return original("GPUModelRunner._bookkeeping_sync")(self, *args, **kwargs)
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
