"""Every environment variable vllm-ptp reads, in one place (per-engine settings are not here: they travel with the
engine, see engine_settings.py).

- VLLM_PTP_KERNELS: "auto" (default: Triton kernels for CUDA tensors when triton is installed, torch otherwise),
  "triton" or "torch".
- TRITON_INTERPRET: Triton's own switch; "1" runs the Triton kernels in its CPU interpreter (tests).
- VLLM_PTP_CACHE: where the embedded default target is converted to (default ~/.cache/vllm_ptp).
- ONEDNN_PRIMITIVE_CACHE_CAPACITY: oneDNN's own, read by oneDNN; onednn_cache.py sets a default for processes
  serving our drafts, a value the user set wins.
"""
from __future__ import annotations

import os
import pathlib


def kernels_backend() -> str:
    return os.environ.get("VLLM_PTP_KERNELS", "auto").strip().lower() or "auto"


def triton_interpreting() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0").strip().lower() in ("1", "true", "on", "yes")


def cache_root() -> pathlib.Path:
    path = os.environ.get("VLLM_PTP_CACHE")
    return pathlib.Path(path).expanduser() if path else pathlib.Path.home() / ".cache" / "vllm_ptp"
