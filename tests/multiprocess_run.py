"""Run by test_multiprocess.py in a fresh interpreter: vLLM's default multiprocess engine (EngineCore + worker)."""
import json
import sys

from vllm_runs import generate

if __name__ == "__main__":
    from vllm import SamplingParams
    target, draft = sys.argv[1], sys.argv[2]
    prompts = ["def read(self, path):", "import os", "class Parser:", "for key in sorted(values):"]
    params = SamplingParams(temperature=0, max_tokens=32, ignore_eos=True)
    plain = generate(target, prompts, params)
    spec = generate(target, prompts, params, {"model": draft, "num_speculative_tokens": 3})
    print("RESULT " + json.dumps({"plain": plain.outputs, "spec": spec.outputs, "drafts": spec.drafts,
                                  "accepted": spec.accepted}))
