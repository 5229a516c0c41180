"""The entry points of `vllm_ptp.kernels` (re-exported by its __init__): input checks, then the Triton kernels or
the torch references, by device."""
from __future__ import annotations

import importlib.util

import torch

from vllm_ptp import envs
from vllm_ptp.kernels import reference

_LOGIT_DTYPES = (torch.float32, torch.bfloat16, torch.float16)
_triton_found: bool | None = None


def _have_triton() -> bool:
    global _triton_found
    if _triton_found is None:
        _triton_found = importlib.util.find_spec("triton") is not None
    return _triton_found


def backend(device: torch.device | str) -> str:
    """'triton' or 'torch': what a call with tensors on `device` runs now."""
    device = torch.device(device)
    forced = envs.kernels_backend()
    if forced == "torch":
        return "torch"
    if forced == "auto":
        return "triton" if device.type == "cuda" and _have_triton() else "torch"
    if forced != "triton":
        raise ValueError(f"VLLM_PTP_KERNELS={forced!r}: use 'triton', 'torch' or 'auto'")
    if not _have_triton():
        raise RuntimeError("VLLM_PTP_KERNELS=triton but triton is not installed")
    if device.type != "cuda" and not envs.triton_interpreting():
        raise RuntimeError(f"VLLM_PTP_KERNELS=triton with {device.type} tensors needs TRITON_INTERPRET=1 "
                           "(Triton's CPU interpreter); the compiled kernels need CUDA tensors")
    return "triton"


def _kernels():
    from vllm_ptp.kernels import triton_sampling
    return triton_sampling


def _check_rows(logits, temperature, top_k, top_p, *, u=None, tokens=None, values=True) -> None:
    if not isinstance(logits, torch.Tensor) or logits.dim() != 2:
        raise ValueError(f"logits must be a [N, V] tensor, got {getattr(logits, 'shape', type(logits))}")
    if logits.dtype not in _LOGIT_DTYPES:
        raise ValueError(f"logits must be float32, bfloat16 or float16, got {logits.dtype}")
    N, V = logits.shape
    if V == 0:
        raise ValueError("logits have an empty vocabulary (V = 0)")
    for name, t in (("temperature", temperature), ("top_k", top_k), ("top_p", top_p), ("u", u), ("tokens", tokens)):
        if t is None:
            if name == "temperature":
                raise ValueError("temperature is required ([N]; <= 0 means greedy)")
            continue
        if not isinstance(t, torch.Tensor) or tuple(t.shape) != (N,):
            raise ValueError(f"{name} must be a [{N}] tensor (one per logits row), got "
                             f"{tuple(t.shape) if isinstance(t, torch.Tensor) else type(t)}")
        if t.device != logits.device:
            raise ValueError(f"{name} is on {t.device}, logits on {logits.device}")
    for name, t in (("top_k", top_k), ("tokens", tokens)):
        if t is not None and (t.dtype.is_floating_point or t.dtype.is_complex or t.dtype == torch.bool):
            raise ValueError(f"{name} must be an integer tensor, got {t.dtype}")
    if not values or N == 0:
        return
    bad = torch.isnan(logits).any(-1) | torch.isposinf(logits).any(-1) | torch.isneginf(logits).all(-1)
    if bool(bad.any()):
        rows = bad.nonzero().flatten()[:8].tolist()
        raise ValueError(f"logits rows {rows} contain NaN or +inf, or no finite value")
    if bool(torch.isnan(temperature).any()):
        raise ValueError("temperature contains NaN")
    if top_p is not None and bool(((top_p <= 0) | torch.isnan(top_p)).any()):
        raise ValueError("top_p must be in (0, 1] (values >= 1 turn it off)")
    if u is not None and bool(((u < 0) | (u >= 1) | torch.isnan(u)).any()):
        raise ValueError("u must lie in [0, 1)")
    if tokens is not None and bool(((tokens < 0) | (tokens >= V)).any()):
        raise ValueError(f"token ids must lie in [0, {V})")


def processed_probs(logits: torch.Tensor, temperature: torch.Tensor, top_k: torch.Tensor | None = None,
                    top_p: torch.Tensor | None = None) -> torch.Tensor:
    """logits [N, V], temperature [N], top_k [N] int, top_p [N] -> probabilities [N, V] (float32)."""
    if backend(logits.device) == "torch":
        return reference.processed_probs(logits, temperature, top_k, top_p)
    _check_rows(logits, temperature, top_k, top_p, values=False)
    u = torch.zeros(logits.shape[0], device=logits.device)
    return _kernels().pick_from_logits(logits, temperature, top_k, top_p, u, return_probs=True)[2]


def pick_from_logits(logits: torch.Tensor, temperature: torch.Tensor, top_k: torch.Tensor | None,
                     top_p: torch.Tensor | None, u: torch.Tensor, return_probs: bool = False, check: bool = True):
    """PTP's Pick(u, P) on the processed distribution of each row, in token-id order (the smallest id whose cumulative
    probability exceeds u). Returns (token ids [N] int64, p(token) [N] float32) and, with return_probs, the processed
    probabilities [N, V] float32."""
    _check_rows(logits, temperature, top_k, top_p, u=u, values=check)
    if backend(logits.device) == "torch":
        return reference.pick_from_logits(logits, temperature, top_k, top_p, u, return_probs)
    return _kernels().pick_from_logits(logits, temperature, top_k, top_p, u, return_probs)


def cdf_interval(logits: torch.Tensor, temperature: torch.Tensor, top_k: torch.Tensor | None,
                 top_p: torch.Tensor | None, tokens: torch.Tensor, check: bool = True):
    """(left, right) float32 [N]: left = P(id < token), right = left + p(token) up to rounding, as the exact float32
    boundaries of pick_from_logits on the same backend: it returns the token for every u in [left, right). The last
    token with nonzero probability ends at 1; a zero-probability token gets an empty interval."""
    _check_rows(logits, temperature, top_k, top_p, tokens=tokens, values=check)
    if backend(logits.device) == "torch":
        return reference.cdf_interval(logits, temperature, top_k, top_p, tokens)
    return _kernels().cdf_interval(logits, temperature, top_k, top_p, tokens)


def _check_mixture(log_weights, component_log_probs, tokens, next_component_log_probs, values):
    if not isinstance(log_weights, torch.Tensor) or log_weights.dim() != 2:
        raise ValueError(f"log_weights must be [N, r], got {getattr(log_weights, 'shape', type(log_weights))}")
    N, r = log_weights.shape
    for name, t in (("component_log_probs", component_log_probs),
                    ("next_component_log_probs", next_component_log_probs)):
        if t is None:
            continue
        if t.dim() != 3 or tuple(t.shape[:2]) != (N, r):
            raise ValueError(f"{name} must be [{N}, {r}, V], got {tuple(t.shape)}")
        if t.dtype not in _LOGIT_DTYPES:
            raise ValueError(f"{name} must be float32, bfloat16 or float16, got {t.dtype}")
        if t.device != log_weights.device:
            raise ValueError(f"{name} is on {t.device}, log_weights on {log_weights.device}")
    if tokens is not None:
        if tuple(tokens.shape) != (N,) or tokens.dtype.is_floating_point or tokens.dtype == torch.bool:
            raise ValueError(f"tokens must be an integer [{N}] tensor, got {tokens.dtype} {tuple(tokens.shape)}")
        if tokens.device != log_weights.device:
            raise ValueError(f"tokens are on {tokens.device}, log_weights on {log_weights.device}")
        if values and N and bool(((tokens < 0) | (tokens >= component_log_probs.shape[-1])).any()):
            raise ValueError(f"token ids must lie in [0, {component_log_probs.shape[-1]})")
    if values and N and bool(torch.isnan(log_weights).any()):
        raise ValueError("log_weights contain NaN")


def mixture_probs(log_weights: torch.Tensor, component_log_probs: torch.Tensor) -> torch.Tensor:
    """sum_a softmax(log_weights)_a * exp(component_log_probs_a). log_weights [N, r], component_log_probs [N, r, V]."""
    if backend(log_weights.device) == "torch":
        return reference.mixture_probs(log_weights, component_log_probs)
    _check_mixture(log_weights, None, None, component_log_probs, values=False)
    return _kernels().mixture_probs(log_weights, component_log_probs)


def cp_posterior(log_weights: torch.Tensor, component_log_probs: torch.Tensor, tokens: torch.Tensor,
                 next_component_log_probs: torch.Tensor | None = None, check: bool = True):
    """The CP mixture's posterior after drafting `tokens` at the position of component_log_probs [N, r, V]:
    updated = log_weights + log P_a(token) [N, r] (float32), and, given the next position's component log-probs
    [N, r, V], its draft distribution q = sum_a softmax(updated)_a * exp(next_a) [N, V] (float32; else None)."""
    if component_log_probs is None or tokens is None:
        raise ValueError("cp_posterior needs component_log_probs and tokens (use mixture_probs for no update)")
    _check_mixture(log_weights, component_log_probs, tokens, next_component_log_probs, values=check)
    if backend(log_weights.device) == "torch":
        return reference.cp_posterior(log_weights, component_log_probs, tokens, next_component_log_probs)
    return _kernels().cp_posterior(log_weights, component_log_probs, tokens, next_component_log_probs)


def u_features(u: torch.Tensor, kind: str = "binary", n: int = 32) -> torch.Tensor:
    """u [...] -> [..., n] float32: the 32 IEEE-754 bits of float32 u (least significant first), or cos(k pi u),
    k = 1..n ("quarter_cos")."""
    if backend(u.device) == "torch":
        return reference.u_features(u, kind, n)
    return _kernels().u_features(u, kind, n)
