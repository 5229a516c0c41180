"""Training on several devices with torch's own DistributedDataParallel, started by `torchrun`.

Every process draws the same global batch (the step's seeded generator) and trains on its share; DDP averages the
gradients. Losses divide by the global count of their terms (`global_count`), so the averaged gradient is the one
process's gradient on the whole batch. Rank 0 alone evaluates, logs and writes checkpoints.
"""
from __future__ import annotations

import os

import torch
import torch.distributed as dist


def start_from_environment(device: str) -> None:
    """Join the process group torchrun describes (WORLD_SIZE > 1); a plain run stays one process."""
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and not dist.is_initialized():
        if device.startswith("cuda"):
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))  # "cuda" is then this process's GPU
        dist.init_process_group(backend="nccl" if device.startswith("cuda") else "gloo")


def rank_and_size() -> tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def is_main() -> bool:
    return rank_and_size()[0] == 0


def share(batch_indices: torch.Tensor) -> torch.Tensor:
    """This process's share of the global batch (every size-th row from its rank)."""
    rank, size = rank_and_size()
    return batch_indices[rank::size]


def global_count(count: torch.Tensor) -> torch.Tensor:
    """The count a loss divides its sum by so that DDP's average over processes is the whole batch's mean: the sum of
    every process's count over the number of processes (the count itself in one process)."""
    rank, size = rank_and_size()
    if size == 1:
        return count
    total = count.detach().clone().float()  # (on the device: nccl reduces CUDA tensors)
    dist.all_reduce(total)
    return total / size


def agree(flag: bool) -> bool:
    """True in every process when it is true in any (a decision such as "out of time" that all must take together)."""
    if rank_and_size()[1] == 1:
        return flag
    value = torch.tensor([int(flag)], device="cuda" if dist.get_backend() == "nccl" else "cpu")
    dist.all_reduce(value, op=dist.ReduceOp.MAX)
    return bool(value.item())


def barrier() -> None:
    if rank_and_size()[1] > 1:
        dist.barrier()


class StepModule(torch.nn.Module):
    """The model with one training step as its forward, so that DDP sees the step's parameters in use."""

    def __init__(self, model: torch.nn.Module, train_step):
        super().__init__()
        self.model, self.train_step = model, train_step

    def forward(self, done: int, g: torch.Generator):
        return self.train_step(done, g)
