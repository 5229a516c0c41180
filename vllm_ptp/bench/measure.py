"""Drive vLLM through its public API and read what speculation did: outputs, acceptance, tokens/s."""
from __future__ import annotations

import contextlib
import gc
import json
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from vllm_ptp.engine_settings import EngineSettings, cpu_kv_cache_budget


@dataclass
class EngineRun:
    outputs: list[list[int]]
    texts: list[str] = field(default_factory=list)
    seconds: float = 0.0
    drafts: int = 0
    draft_tokens: int = 0
    accepted: int = 0
    accepted_per_position: list[int] = field(default_factory=list)
    draft_seconds: float | None = None  # time inside our drafters (vllm-ptp methods only)

    @property
    def output_tokens(self) -> int:
        return sum(len(o) for o in self.outputs)

    @property
    def tokens_per_second(self) -> float:
        return self.output_tokens / self.seconds if self.seconds else 0.0

    @property
    def acceptance_length(self) -> float:
        """Tokens per target step over the steps that verified a draft: 1 + accepted drafts per step."""
        return 1 + self.accepted / self.drafts if self.drafts else 1.0

    @property
    def draft_time_share(self) -> float | None:
        return self.draft_seconds / self.seconds if self.draft_seconds is not None and self.seconds else None

    @property
    def acceptance_per_position(self) -> list[float]:
        return [a / self.drafts for a in self.accepted_per_position] if self.drafts else []


def spec_counters(llm) -> dict:
    counters = {"drafts": 0, "draft_tokens": 0, "accepted": 0, "accepted_per_position": []}
    names = {"vllm:spec_decode_num_drafts": "drafts", "vllm:spec_decode_num_draft_tokens": "draft_tokens",
             "vllm:spec_decode_num_accepted_tokens": "accepted"}
    for metric in llm.get_metrics():
        if metric.name in names:
            counters[names[metric.name]] = int(metric.value)
        elif metric.name == "vllm:spec_decode_num_accepted_tokens_per_pos":
            counters["accepted_per_position"] = [int(v) for v in metric.values]
    return counters


CPU_KV_CACHE_GIB = 2


def make_engine(target: str, speculative_config: dict | None = None, dtype: str = "auto", max_model_len: int | None = None,
                seed: int = 0, **kwargs):
    from vllm import LLM
    kwargs = {**cpu_kv_cache_budget(CPU_KV_CACHE_GIB), **kwargs}
    if speculative_config and ({"hybrid", "min_draft_confidence"} & set(speculative_config)):
        kwargs.setdefault("async_scheduling", False)  # both need it off (vLLM turns it on for EAGLE on GPU)
    return LLM(model=str(target), dtype=dtype, max_model_len=max_model_len, seed=seed, disable_log_stats=False,
               speculative_config=speculative_config, **kwargs)


def draft_seconds(timer_file: Path | None) -> float | None:
    """Seconds the engine's runner has spent drafting so far (vllm_integration.draft_timer), None if it never drafted."""
    if timer_file is None or not timer_file.exists():
        return None
    return json.loads(timer_file.read_text())["seconds"]


def run_prompts(llm, prompts, params, one_at_a_time: bool = False, batch_size: int | None = None,
                timer_file: Path | None = None) -> EngineRun:
    """Generate and measure. Requests go in groups of `batch_size` (all at once if None; `one_at_a_time` = 1)."""
    if one_at_a_time:
        batch_size = 1
    batch_size = batch_size or max(len(prompts), 1)
    params_list = params if isinstance(params, list) else [params] * len(prompts)
    before, drafted_before = spec_counters(llm), draft_seconds(timer_file)
    start = time.perf_counter()
    results = []
    for i in range(0, len(prompts), batch_size):
        results += llm.generate(prompts[i:i + batch_size], params_list[i:i + batch_size], use_tqdm=False)
    seconds = time.perf_counter() - start
    after, drafted_after = spec_counters(llm), draft_seconds(timer_file)
    per_position = [a - b for a, b in zip(after["accepted_per_position"],
                                          before["accepted_per_position"] or [0] * len(after["accepted_per_position"]))]
    return EngineRun(outputs=[list(r.outputs[0].token_ids) for r in results],
                     texts=[r.outputs[0].text for r in results], seconds=seconds,
                     drafts=after["drafts"] - before["drafts"],
                     draft_tokens=after["draft_tokens"] - before["draft_tokens"],
                     accepted=after["accepted"] - before["accepted"], accepted_per_position=per_position,
                     draft_seconds=None if drafted_after is None else drafted_after - (drafted_before or 0.0))


@dataclass
class Engine:
    """A live engine and the file through which its processes report drafting time (vllm_integration.draft_timer)."""
    llm: object
    timer_file: Path


@contextlib.contextmanager
def engine(target, speculative_config=None, fix_cpu_sampler_for_all: bool = False, **engine_kwargs):
    """A fresh engine, released on exit (before the next one starts: an in-process engine's teardown resets vLLM's
    global parallel state). Hold it only through the yielded Engine. `fix_cpu_sampler_for_all`: vllm-ptp's CPU
    sampler fixes for vLLM's own methods too (vllm_ptp.engine_settings)."""
    with tempfile.TemporaryDirectory() as scratch:
        timer_file = Path(scratch) / "draft_time.json"
        settings = EngineSettings(draft_time_file=str(timer_file), fix_cpu_sampler_for_all=fix_cpu_sampler_for_all)
        handle = Engine(make_engine(target, speculative_config, additional_config=settings.additional_config(),
                                    **engine_kwargs), timer_file)
        try:
            yield handle
        finally:
            handle.llm = None
            gc.collect()


def generate(target, prompts, params, speculative_config=None, one_at_a_time=False, **engine_kwargs) -> EngineRun:
    """One fresh engine, one run, engine released; draft_seconds stays None for a run without drafting."""
    with engine(target, speculative_config, **engine_kwargs) as live:
        return run_prompts(live.llm, prompts, params, one_at_a_time, timer_file=live.timer_file)
