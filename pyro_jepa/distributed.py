"""Data-parallel training on several processes, GPUs or machines (``torchrun`` + DDP).

`train.fit` uses these helpers whenever a ``torch.distributed`` process group is initialized:
each rank takes its own slice of every global batch, gradients are averaged by
`torch.nn.parallel.DistributedDataParallel`, and rank 0 alone validates and writes files.
Outside ``torchrun`` (no ``WORLD_SIZE`` in the environment) everything is a single process and
these helpers do nothing.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import timedelta

import torch
import torch.distributed as dist
from torch import nn

# Rank 0 validates, probes and writes checkpoints while the other ranks wait in the next
# collective; gloo's default 30-minute timeout would be too short for a large validation split.
TIMEOUT = timedelta(hours=2)


@dataclass(frozen=True)
class DistInfo:
    """This process's place in the job."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def info() -> DistInfo:
    """The current process group's rank and size (a single process when none is initialized)."""
    if not (dist.is_available() and dist.is_initialized()):
        return DistInfo()
    return DistInfo(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", 0)))


def init_from_env(device: str = "auto") -> DistInfo:
    """Join the process group ``torchrun`` describes in the environment; a no-op without one.

    Uses NCCL when the ranks train on CUDA and gloo on CPU, and pins each rank to GPU
    ``LOCAL_RANK``.
    """
    if int(os.environ.get("WORLD_SIZE", 1)) <= 1 or dist.is_initialized():
        return info()
    on_cuda = torch.cuda.is_available() and not str(device).startswith("cpu")
    if on_cuda:
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", 0)))
    dist.init_process_group("nccl" if on_cuda else "gloo", timeout=TIMEOUT)
    return info()


def shutdown() -> None:
    """Leave the process group, if any."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def local_device(device: torch.device, rank_info: DistInfo) -> torch.device:
    """``cuda`` without an index means this rank's GPU (``LOCAL_RANK``) under DDP."""
    if rank_info.enabled and device.type == "cuda" and device.index is None:
        return torch.device("cuda", rank_info.local_rank)
    return device


def shard(batch: torch.Tensor, rank_info: DistInfo) -> torch.Tensor:
    """This rank's rows of a global batch of indices (strided, like ``DistributedSampler``)."""
    return batch[rank_info.rank :: rank_info.world_size]


def rank_seed(seed: int, rank: int, epoch: int = 0) -> int:
    """Distinct seeds per rank (and per resumed epoch) for masks, dropout and guide noise.

    Rank 0 of a fresh run keeps ``seed`` itself, so a one-process run is unchanged.
    """
    return seed + 7_919 * rank + 104_729 * epoch


def broadcast_state(module: nn.Module, src: int = 0) -> None:
    """Copy every parameter and buffer of ``module`` from rank ``src`` to all ranks, in place."""
    for tensor in module.state_dict().values():
        if isinstance(tensor, torch.Tensor):
            dist.broadcast(tensor, src)


def all_reduce_mean(value: torch.Tensor) -> torch.Tensor:
    """The mean of ``value`` over ranks (for logging only; gradients are averaged by DDP)."""
    out = value.detach().clone()
    dist.all_reduce(out)
    return out / dist.get_world_size()


def broadcast_object(obj, src: int = 0):
    """A picklable Python object from rank ``src`` (e.g. the run folder's name)."""
    box = [obj]
    dist.broadcast_object_list(box, src)
    return box[0]
