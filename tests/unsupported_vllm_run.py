"""Run in a fresh interpreter: greedy outputs of a plain and an ngram engine, and what a PTP and a CP draft folder
get, under the vLLM version given (faked before any engine loads the plugin), printed as one RESULT line.

usage: unsupported_vllm_run.py TARGET VERSION|- PTP_DRAFT CP_DRAFT   (- keeps the installed version)
"""
import json
import sys

from vllm_runs import generate

PROMPTS = ["def read(self, path):", "import os", "class Parser:", "for key in sorted(values):"]

if __name__ == "__main__":
    import vllm
    from vllm import SamplingParams
    target, version, drafts = sys.argv[1], sys.argv[2], sys.argv[3:]
    if version != "-":
        vllm.__version__ = version
    params = SamplingParams(temperature=0, max_tokens=24, ignore_eos=True)
    result = {"plain": generate(target, PROMPTS, params).outputs, "errors": {}}
    for draft in drafts:
        try:
            generate(target, PROMPTS, params, {"model": draft, "num_speculative_tokens": 2})
            result["errors"][draft] = None
        except Exception as e:  # noqa: BLE001 (the error is the result)
            result["errors"][draft] = f"{type(e).__name__}: {e}"
    # last: a second engine after an ngram run in one process hits a vLLM CPU bug (numba)
    ngram = generate(target, PROMPTS, params, {"method": "ngram", "num_speculative_tokens": 3,
                                               "prompt_lookup_max": 3, "prompt_lookup_min": 1})
    result["ngram"] = ngram.outputs
    print("RESULT " + json.dumps(result))
