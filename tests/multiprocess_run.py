"""Run in a fresh interpreter by tests that need vLLM's multiprocess engine (EngineCore + worker processes, and the
tensor-parallel workers): greedy outputs without speculation and with each draft, printed as one RESULT line.

usage: multiprocess_run.py TARGET TENSOR_PARALLEL_SIZE DRAFT...
"""
import json
import sys

from vllm_runs import generate

PROMPTS = ["def read(self, path):", "import os", "class Parser:", "for key in sorted(values):"]

if __name__ == "__main__":
    from vllm import SamplingParams
    target, tensor_parallel_size, drafts = sys.argv[1], int(sys.argv[2]), sys.argv[3:]
    params = SamplingParams(temperature=0, max_tokens=32, ignore_eos=True)
    plain = generate(target, PROMPTS, params, tensor_parallel_size=tensor_parallel_size)
    result = {"plain": plain.outputs, "spec": {}}
    for draft in drafts:
        spec = generate(target, PROMPTS, params, {"model": draft, "num_speculative_tokens": 3},
                        tensor_parallel_size=tensor_parallel_size)
        result["spec"][draft] = {"outputs": spec.outputs, "drafts": spec.drafts, "accepted": spec.accepted}
    print("RESULT " + json.dumps(result))
