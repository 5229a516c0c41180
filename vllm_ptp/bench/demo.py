"""Offline demo: the embedded default target with and without a CP-heads draft, batch 1, greedy."""
from __future__ import annotations

import os
from pathlib import Path

SHIPPED = Path(__file__).resolve().parents[2] / "examples" / "drafts"


def default_draft() -> Path:
    return SHIPPED / "cp_smollm2_r8"


def chat_prompts(target: str, n: int) -> list[str]:
    from transformers import AutoTokenizer

    from vllm_ptp.training.data import load_conversations
    tokenizer = AutoTokenizer.from_pretrained(target)
    return [tokenizer.apply_chat_template(c, add_generation_prompt=True, tokenize=False)
            for c in load_conversations("sharegpt", "heldout", n, seed=0)]


def run_demo(target: str, draft: str | None, prompts: int, max_tokens: int) -> None:
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "2")
    from vllm import SamplingParams

    from vllm_ptp.bench.measure import generate
    draft = str(draft or default_draft())
    texts = chat_prompts(target, prompts)
    params = SamplingParams(temperature=0, max_tokens=max_tokens)
    engine = {"enforce_eager": True, "max_model_len": 2048}
    print(f"target {target}\ndraft  {draft}\n{len(texts)} held-out ShareGPT prompts, batch 1, greedy, "
          f"max {max_tokens} new tokens")
    plain = generate(target, texts, params, one_at_a_time=True, **engine)
    spec = generate(target, texts, params, {"model": draft}, one_at_a_time=True, **engine)
    same = sum(a == b for a, b in zip(plain.outputs, spec.outputs))
    print(f"\n{'':22}{'tokens/s':>10}{'accept. length':>16}")
    print(f"{'no speculation':22}{plain.tokens_per_second:10.1f}{1.0:16.2f}")
    print(f"{'CP heads':22}{spec.tokens_per_second:10.1f}{spec.acceptance_length:16.2f}")
    print(f"speed-up {spec.tokens_per_second / plain.tokens_per_second:.2f}x; per-position acceptance "
          f"{[round(x, 2) for x in spec.acceptance_per_position]}; identical outputs {same}/{len(texts)} "
          f"(bf16 verification may flip near-ties; the tests check equality in float32)")
    print(f"\nfirst answer: {spec.texts[0][:300]!r}")
