"""In-process engines for tests: float32 target, eager, small context (greedy equality needs float32)."""
from vllm_ptp.bench.measure import EngineRun
from vllm_ptp.bench.measure import generate as _generate

__all__ = ["EngineRun", "generate"]


def generate(target, prompts, params, speculative_config=None, **kwargs) -> EngineRun:
    kwargs = {"dtype": "float32", "enforce_eager": True, "max_model_len": 512, **kwargs}
    return _generate(target, prompts, params, speculative_config, **kwargs)
