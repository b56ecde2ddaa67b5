"""Distributed training under PyTorch's own launcher, torchrun.

`torchrun --nproc-per-node N -m fastnst train ...` (or with --nnodes and --rdzv-endpoint across
machines) starts N processes with RANK, WORLD_SIZE and LOCAL_RANK set; each becomes one rank of a
DistributedDataParallel run. The backend is chosen automatically: nccl when the ranks have CUDA
GPUs, gloo on CPUs. A plain `fastnst train` is a world of one and needs none of this.
"""

from __future__ import annotations

import datetime
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass
class World:
    rank: int = 0
    size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.size > 1


def init(device_kind: str) -> World:
    """Join the process group when launched by torchrun with more than one process."""
    size = int(os.environ.get("WORLD_SIZE", "1"))
    if size <= 1:
        return World()
    world = World(int(os.environ["RANK"]), size, int(os.environ.get("LOCAL_RANK", "0")))
    if not dist.is_initialized():
        backend = "nccl" if device_kind == "cuda" else "gloo"
        dist.init_process_group(backend, timeout=datetime.timedelta(minutes=30))
    return world


def device_for(world: World, device: torch.device) -> torch.device:
    """Each rank of a multi-GPU machine gets its own GPU."""
    if device.type == "cuda" and world.distributed:
        torch.cuda.set_device(world.local_rank)
        return torch.device("cuda", world.local_rank)
    return device


def all_mean(values: dict[str, torch.Tensor], world: World) -> dict[str, torch.Tensor]:
    """The mean over ranks of scalar tensors (one collective for all of them)."""
    if not world.distributed:
        return values
    keys = sorted(values)
    stacked = torch.stack([values[k].float() for k in keys])
    dist.all_reduce(stacked)
    return {k: v / world.size for k, v in zip(keys, stacked)}


def any_rank(flag: bool, world: World, device: torch.device) -> bool:
    """True on every rank if it is True on any (used to stop all ranks together)."""
    if not world.distributed:
        return flag
    t = torch.tensor([1.0 if flag else 0.0], device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item())


def gather(obj, world: World) -> list:
    if not world.distributed:
        return [obj]
    out = [None] * world.size
    dist.all_gather_object(out, obj)
    return out


def barrier(world: World) -> None:
    if world.distributed:
        dist.barrier()


def shutdown(world: World) -> None:
    if world.distributed and dist.is_initialized():
        dist.destroy_process_group()
