"""`vllm-ptp bench`: methods side by side on held-out prompts, one fresh vLLM engine per method and setting.

Every method runs in vLLM's default multiprocess engine with the same settings (dtype, eager mode, thread binding by
vLLM's CPU worker, NUMBA_NUM_THREADS=1), requests sent one at a time (batch 1). Reported per method: tokens/s, speed-up
over no speculation, mean acceptance length (1 + accepted drafts per verifying step), per-position acceptance, and
for vllm-ptp drafts the share of the run's wall time spent in the drafter (draft forward + picks).
"""
from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path


@dataclass
class Method:
    name: str
    speculative_config: dict | None


@dataclass
class Row:
    method: str
    dataset: str
    temperature: float
    tokens_per_second: float
    speedup: float
    acceptance_length: float
    acceptance_per_position: list[float]
    draft_time_share: float | None
    output_tokens: int
    seconds: float


def parse_methods(specs: list[str]) -> list[Method]:
    """'none', 'ngram[:k]', or 'NAME=DRAFT_DIR[:k]' (a vllm-ptp draft folder)."""
    methods = []
    for spec in specs:
        if spec == "none":
            methods.append(Method("none", None))
        elif spec.startswith("ngram"):
            k = int(spec.split(":")[1]) if ":" in spec else 3
            methods.append(Method(f"ngram k={k}", {"method": "ngram", "num_speculative_tokens": k,
                                                   "prompt_lookup_max": 4, "prompt_lookup_min": 2}))
        else:
            name, _, rest = spec.partition("=")
            folder, _, k = rest.partition(":")
            config = {"model": folder, **({"num_speculative_tokens": int(k)} if k else {})}
            methods.append(Method(name, config))
    return methods


def prompt_set(target: str, dataset: str, n: int) -> list[str]:
    from transformers import AutoTokenizer

    from vllm_ptp.training.data import load_conversations
    tokenizer = AutoTokenizer.from_pretrained(target)
    return [tokenizer.apply_chat_template(c, add_generation_prompt=True, tokenize=False)
            for c in load_conversations(dataset, "heldout", n, seed=0)]


def run_bench(target: str, methods: list[Method], datasets: list[str], temperatures: list[float], prompts: int,
              max_tokens: int, out: str | None, dtype: str = "bfloat16") -> list[Row]:
    os.environ.setdefault("NUMBA_NUM_THREADS", "1")
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "2")
    from tqdm import tqdm
    from vllm import SamplingParams

    from vllm_ptp.bench.measure import generate
    rows: list[Row] = []
    jobs = [(d, t, m) for d in datasets for t in temperatures for m in methods]
    texts = {d: prompt_set(target, d, prompts) for d in datasets}
    baseline: dict[tuple, float] = {}
    for dataset, temperature, method in tqdm(jobs, desc="bench"):
        params = SamplingParams(temperature=temperature, max_tokens=max_tokens, seed=None)
        run = generate(target, texts[dataset], params, method.speculative_config, one_at_a_time=True,
                       dtype=dtype, enforce_eager=True, max_model_len=None)
        if method.speculative_config is None:
            baseline[(dataset, temperature)] = run.tokens_per_second
        base = baseline.get((dataset, temperature))
        rows.append(Row(method.name, dataset, temperature, round(run.tokens_per_second, 2),
                        round(run.tokens_per_second / base, 3) if base else float("nan"),
                        round(run.acceptance_length, 3), [round(x, 3) for x in run.acceptance_per_position],
                        None if run.draft_time_share is None else round(run.draft_time_share, 3), run.output_tokens, round(run.seconds, 1)))
    if out:
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        Path(out).write_text(json.dumps([asdict(r) for r in rows], indent=1))
    print(markdown_table(rows))
    return rows


def markdown_table(rows: list[Row]) -> str:
    lines = ["| dataset | T | method | tokens/s | speed-up | acceptance length | per-position acceptance | draft time |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        share = "" if r.draft_time_share is None else f"{r.draft_time_share:.0%}"
        lines.append(f"| {r.dataset} | {r.temperature:g} | {r.method} | {r.tokens_per_second:.1f} | {r.speedup:.2f}x "
                     f"| {r.acceptance_length:.2f} | {', '.join(f'{x:.2f}' for x in r.acceptance_per_position)} "
                     f"| {share} |")
    return "\n".join(lines)
