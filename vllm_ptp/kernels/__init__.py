"""Sampling primitives for the drafters (installed as `vllm_ptp.kernels`).

The drafters call these entry points only; the Triton kernels will replace the torch references behind them.
"""
from vllm_ptp.kernels.reference import mixture_probs, pick, processed_probs

__all__ = ["mixture_probs", "pick", "processed_probs"]
