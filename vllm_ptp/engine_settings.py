"""Per-engine settings of vllm-ptp, carried by the engine's own config: `additional_config={"vllm_ptp": {...}}`
(`--additional-config '{"vllm_ptp": {...}}'` on the command line), so two engines in one process can differ.

- `draft_time_file`: a path; the runner writes the wall time it spent drafting there ({"seconds", "calls"}) after
  every step, for every method (vLLM's own too), so that a benchmark in another process can read it.
- `fix_cpu_sampler_for_all`: apply the CPU sampler fixes (vllm_integration.cpu_sampler_fixes) to vLLM's own methods too; they always apply to
  ours. `vllm-ptp bench` turns it on so that vLLM's methods are verified against the right temperatures at T > 0.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, fields

KEY = "vllm_ptp"


@dataclass(frozen=True)
class EngineSettings:
    draft_time_file: str | None = None
    fix_cpu_sampler_for_all: bool = False

    @classmethod
    def from_additional_config(cls, additional_config) -> "EngineSettings":
        """The settings in vLLM's additional_config (defaults when absent); one ValueError naming the key if bad."""
        ours = (additional_config or {}).get(KEY) if isinstance(additional_config, dict) else None
        if ours is None:
            return cls()
        where = f"additional_config['{KEY}']"
        if not isinstance(ours, dict):
            raise ValueError(f"{where}: expected a JSON object, got {type(ours).__name__}")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(ours) - known)
        if unknown:
            raise ValueError(f"{where}: unknown key(s) {unknown}; expected some of {sorted(known)}")
        if not isinstance(ours.get("draft_time_file", ""), str | None):
            raise ValueError(f"{where}['draft_time_file']: expected a path string")
        if not isinstance(ours.get("fix_cpu_sampler_for_all", False), bool):
            raise ValueError(f"{where}['fix_cpu_sampler_for_all']: expected true or false")
        return cls(**ours)

    def additional_config(self) -> dict:
        """What to pass as vLLM's additional_config for these settings."""
        return {KEY: {k: v for k, v in asdict(self).items() if v != getattr(EngineSettings, k)}}


def cpu_kv_cache_budget(gib: int) -> dict:
    """vLLM engine arguments for a fixed KV-cache budget of `gib` GiB on a machine without CUDA (VLLM_CPU_KVCACHE_SPACE
    still wins): vLLM's CPU default reserves most of the RAM and refuses to start when anything else runs. {} on a GPU,
    where vLLM's own memory share applies."""
    import torch
    return {} if torch.cuda.is_available() else {"kv_cache_memory_bytes": gib << 30}
