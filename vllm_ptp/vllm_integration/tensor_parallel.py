"""The target's vocabulary rows, whole on every tensor-parallel worker."""
from __future__ import annotations

import torch


def whole_vocab_rows(weight: torch.Tensor, vocab_size: int) -> torch.Tensor:
    """The target's embedding / LM head with every vocab row. Under tensor parallelism each worker holds one
    contiguous shard of the (padded) vocab rows (VocabParallelEmbedding without added vocab): all-gathered once
    at load, so every worker drafts from the same full distributions as at TP=1."""
    from vllm.distributed import get_tensor_model_parallel_world_size, tensor_model_parallel_all_gather
    if get_tensor_model_parallel_world_size() > 1:
        weight = tensor_model_parallel_all_gather(weight.contiguous(), dim=0)
    if weight.shape[0] < vocab_size:
        raise RuntimeError(f"vllm-ptp: the target's vocab rows ({weight.shape[0]}) are fewer than its vocab size "
                           f"({vocab_size}); this target layout is not supported")
    return weight[:vocab_size]
