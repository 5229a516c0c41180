"""The machine a measurement runs on, and the dtype `"auto"` picks for it.

Speculative decoding pays only where verifying k+1 tokens costs little more than one plain step. On an x86 CPU
without AVX512-BF16 or AMX, bf16 matmuls are emulated, and the time per token stays the same however many tokens
there are: on a 2-core AVX2 EPYC, a bf16 matmul ran at 1.2 GFLOPS whether it took 1, 4 or 8 rows, against 22-57
GFLOPS in float32. So in bf16, verifying costs about as much per token as it earns, and no draft can pay. There,
`"auto"` picks float32. Everywhere else it picks bf16, which vLLM uses for the embedded default.
"""
from __future__ import annotations

import os
import platform
from functools import lru_cache
from pathlib import Path

NATIVE_BF16_FLAGS = {"avx512_bf16", "amx_bf16",  # x86
                     "bf16"}  # aarch64 (FEAT_BF16)


@lru_cache(maxsize=1)
def _cpuinfo() -> dict[str, str]:
    """The first processor's fields of /proc/cpuinfo; empty where there is none (not Linux)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return {}
    fields = {}
    for line in text.split("\n\n")[0].splitlines():
        key, _, value = line.partition(":")
        fields[key.strip()] = value.strip()
    return fields


def cpu_model() -> str:
    info = _cpuinfo()
    return info.get("model name") or info.get("Model name") or platform.processor() or platform.machine()


def cpu_flags() -> set[str]:
    info = _cpuinfo()
    return set((info.get("flags") or info.get("Features") or "").split())


def native_bf16() -> bool | None:
    """Whether this machine multiplies bf16 natively: a CUDA device, or a CPU with one of NATIVE_BF16_FLAGS.
    None where the CPU's flags cannot be read."""
    import torch
    if torch.cuda.is_available():
        return True
    flags = cpu_flags()
    if not flags:
        return None
    return bool(flags & NATIVE_BF16_FLAGS)


def resolve_dtype(dtype: str) -> str:
    """`dtype` as given, except `"auto"`: bfloat16 where native_bf16() is True or unknown, float32 where it is False."""
    if dtype != "auto":
        return dtype
    return "float32" if native_bf16() is False else "bfloat16"


def bf16_warning(dtype) -> str | None:
    """A warning when bf16 (a name or a torch.dtype) was asked for on a CPU that emulates it; None otherwise."""
    dtype = str(dtype).removeprefix("torch.")
    if dtype in ("bfloat16", "bf16") and native_bf16() is False:
        return (f"dtype {dtype} on {cpu_model()}, which has no AVX512-BF16 or AMX: bf16 matmuls are emulated and "
                f"cost the same per token however many tokens are verified at once, so speculative decoding cannot "
                f"pay here. Run the target in float32 on this CPU (--dtype float32; vllm-ptp bench: dtype auto).")
    return None


def describe() -> dict:
    import torch
    return {"platform": platform.platform(), "processor": cpu_model(), "cpus": os.cpu_count(),
            "torch_threads": torch.get_num_threads(), "native_bf16": native_bf16(),
            "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None}
