"""Sampling primitives for the drafters (installed as `vllm_ptp.kernels`).

The drafters call these entry points only. Each one dispatches to the Triton kernels
(`vllm_ptp.kernels.triton_sampling`) for CUDA tensors and to the torch references (`vllm_ptp.kernels.reference`)
elsewhere. `VLLM_PTP_KERNELS=triton|torch` (read at every call; `auto` or unset = by device) forces either;
forced Triton on CPU tensors needs `TRITON_INTERPRET=1` (Triton's interpreter, for tests). Importing this package
never imports triton: that happens on the first call that uses a kernel, and a missing triton means the torch path.

Entry points (N rows, V vocabulary; all outputs float32 unless said):
  processed_probs(logits, temperature, top_k=None, top_p=None) -> probs [N, V]
  pick_from_probs(u, probs) -> token ids [N]             (inverse CDF over given probabilities; torch on every device)
  pick_from_logits(logits, temperature, top_k, top_p, u, return_probs=False, check=True)
      -> (token ids [N] int64, p(token) [N]) [+ processed probs [N, V] with return_probs]
  cdf_interval(logits, temperature, top_k, top_p, tokens, check=True) -> (left [N], right [N])
  mixture_probs(log_weights [N, r], component_log_probs [N, r, V]) -> q [N, V]
  cp_posterior(log_weights, component_log_probs, tokens, next_component_log_probs=None, check=True)
      -> (updated log-weights [N, r], q_next [N, V] or None)
  u_features(u, kind="binary"|"quarter_cos", n=32) -> [..., n]

Processing conventions: temperature <= 0 is greedy (one-hot at the first argmax of the raw logits); top_k <= 0 or
>= V and top_p >= 1 are off; None means off for every row. check=True validates values (NaN/+inf logits, rows
without a finite logit, u outside [0, 1), top_p <= 0 or NaN, NaN temperature, token ids out of range) and raises
ValueError; that costs a pass over the logits and a host sync, so a GPU hot path that trusts its inputs passes
check=False (then a bad logits row gives token -1 / probability NaN / a NaN interval from the Triton kernel, and
whatever torch computes from the reference). Shapes, dtypes and devices are always checked (no sync).
"""

# Python run from the repository root can import this folder by its own name, `kernels`: transformers probes that
# name for Hugging Face's package of the same name. Imported so, it stays empty (no version: "not available") and
# imports nothing of vllm-ptp; only as vllm_ptp.kernels does it hold the entry points.
if __name__ == "vllm_ptp.kernels":
    from vllm_ptp.kernels.dispatch import (backend, cdf_interval, cp_posterior, mixture_probs, pick_from_logits,
                                           processed_probs, u_features)
    from vllm_ptp.kernels.reference import pick_from_probs

    __all__ = ["backend", "cdf_interval", "cp_posterior", "mixture_probs", "pick_from_probs", "pick_from_logits",
               "processed_probs", "u_features"]
