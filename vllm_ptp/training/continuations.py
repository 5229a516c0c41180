"""The target writes its own continuations: vLLM, public API, no speculation, a cycle of temperatures."""
from __future__ import annotations

from pathlib import Path

from vllm_ptp.engine_settings import cpu_kv_cache_budget

CPU_KV_CACHE_GIB = 8


def teacher_engine(target: str | Path, max_model_len: int, seed: int, max_num_seqs: int | None = None):
    from vllm import LLM
    kwargs = cpu_kv_cache_budget(CPU_KV_CACHE_GIB) | ({} if max_num_seqs is None else {"max_num_seqs": max_num_seqs})
    return LLM(model=str(target), dtype="bfloat16", max_model_len=max_model_len, seed=seed, enforce_eager=True,
               **kwargs)


def sample_continuations(llm, prompts: list[list[int]], temperatures: list[float], max_new_tokens: int,
                         samples_per_prompt: int = 1) -> list[tuple[list[int], list[int], float]]:
    """One continuation per prompt at T = 0, `samples_per_prompt` at T > 0 -> (prompt, completion, temperature) per
    sequence, in prompt order."""
    from vllm import SamplingParams
    # No per-request seeds: vLLM 0.32's CPU bookkeeping crashes on seeded requests in chunked prefill
    # ("CPU Generator does not use offset"); the engine seed keeps runs reproducible.
    params = [SamplingParams(temperature=t, max_tokens=max_new_tokens, n=1 if t <= 0 else samples_per_prompt)
              for t in temperatures]
    outputs = llm.generate([{"prompt_token_ids": p} for p in prompts], params, use_tqdm=False)
    return [(prompt, list(sample.token_ids), t)
            for prompt, t, output in zip(prompts, temperatures, outputs) for sample in output.outputs]
