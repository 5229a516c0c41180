"""Offline demo: the embedded default target without speculation, with the shipped PTP draft and with the shipped
CP heads (rank 8), batch 1, greedy."""
from __future__ import annotations

import json
from pathlib import Path

SHIPPED = Path(__file__).resolve().parents[2] / "examples" / "drafts"
MEASURED = SHIPPED.parent / "results" / "bench_smollm2_hybrid_cpu.json"


def shipped(name: str) -> Path:
    """A draft shipped in the repository's examples/drafts; a clear error where the package was installed without
    the repository beside it (`pip install .` copies the code, not the drafts)."""
    folder = SHIPPED / name
    if not folder.is_dir():
        raise SystemExit(f"the shipped draft {name} is not at {folder}: vllm-ptp's default drafts live in the "
                         f"repository (examples/drafts), not in the installed package. Run from a clone of the "
                         f"repository (pip install -e .), or pass your own draft folders.")
    return folder


def default_drafts() -> list[Path]:
    return [shipped("ptp_smollm2"), shipped("cp_smollm2_r8")]


def run_demo(target: str, drafts: list[str] | None, prompts: int, max_tokens: int) -> None:
    from vllm import SamplingParams

    from vllm_ptp.bench.compare import prompt_set
    from vllm_ptp.machine import cpu_model, resolve_dtype
    from vllm_ptp.bench.measure import generate
    from vllm_ptp.models.checkpoint import speculators_type
    drafts = [str(d) for d in (drafts or default_drafts())]
    texts = prompt_set(target, "sharegpt", prompts)
    params = SamplingParams(temperature=0, max_tokens=max_tokens)
    dtype = resolve_dtype("auto")
    engine = {"enforce_eager": True, "max_model_len": 2048, "dtype": dtype}
    print(f"target {target} ({dtype} on {cpu_model()})\ndrafts {', '.join(drafts)}\n{len(texts)} held-out ShareGPT "
          f"prompts, batch 1, greedy, max {max_tokens} new tokens")
    plain = generate(target, texts, params, one_at_a_time=True, **engine)
    runs = [(f"{speculators_type(d)}: {Path(d).name}", generate(target, texts, params, {"model": d},
                                                                one_at_a_time=True, **engine)) for d in drafts]
    hybrid = next((d for d in drafts if speculators_type(d) in ("ptp", "cp")), None)
    if hybrid is not None:  # context matches ahead of our draft (docs/serving.md, "Hybrid drafting")
        runs.append((f"{speculators_type(hybrid)} + ngram (hybrid)",
                     generate(target, texts, params, {"model": hybrid, "hybrid": "ngram"}, one_at_a_time=True,
                              **engine)))
    print(f"\n{'':28}{'tokens/s':>9}{'speed-up':>10}{'accept. length':>16}{'draft time':>12}  identical  "
          f"per-position acceptance")
    print(f"{'no speculation':28}{plain.tokens_per_second:9.1f}{1.0:9.2f}x{1.0:16.2f}")
    for name, run in runs:
        same = sum(a == b for a, b in zip(plain.outputs, run.outputs))
        print(f"{name:28}{run.tokens_per_second:9.1f}{run.tokens_per_second / plain.tokens_per_second:9.2f}x"
              f"{run.acceptance_length:16.2f}{run.draft_time_share or 0:12.0%}  {same:>4}/{len(texts):<4}  "
              f"{[round(x, 2) for x in run.acceptance_per_position]}")
    if dtype == "bfloat16":
        print("(bf16 verification may flip near-ties between runs; the tests check equality in float32)")
    print(f"\nfirst answer: {runs[0][1].texts[0][:300]!r}")
    if MEASURED.exists():
        from vllm_ptp.bench.compare import short_table
        print(f"\nAll methods side by side, from {MEASURED.relative_to(MEASURED.parents[2])} (`vllm-ptp bench --config "
              f"examples/bench_smollm2_hybrid.json`; means over ShareGPT/HumanEval and T = 0/1):")
        print(short_table(json.loads(MEASURED.read_text())["rows"]))
