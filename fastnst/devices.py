"""Where code runs: resolving --device once, autocast, the GPU switches, and a description of the
machine for reports and model metadata. Needs torch (the training install)."""

from __future__ import annotations

import os
import platform

import torch

from fastnst.errors import UserError


def resolve_device(device: str) -> torch.device:
    """--device auto|cpu|cuda[:N] -> a torch device; auto picks CUDA when PyTorch sees a GPU."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise UserError("--device cuda: no CUDA GPU is available to PyTorch here")
    if device not in ("cpu", "cuda") and not device.startswith("cuda:"):
        raise UserError(f"--device {device!r}: choose auto, cpu or cuda")
    return torch.device(device)


def describe(device: torch.device) -> str:
    """The GPU's name, or the CPU's architecture, cores and torch threads."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"CPU {platform.machine()}, {os.cpu_count()} cores, {torch.get_num_threads()} threads"


def autocast_for(device: torch.device):
    """bf16 autocast on CUDA (Gram matrices stay fp32 inside the objective); off elsewhere."""
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return torch.autocast(device.type, enabled=False)


def use_gpu_speedups(device: torch.device, net: torch.nn.Module, objective, autotune: bool = True,
                     channels_last: bool = True, batched_vgg: bool = True) -> None:
    """What the trainer does on CUDA besides bf16 autocast and torch.compile: cuDNN autotuning and
    TF32 for what stays fp32, channels-last tensors (what the tensor-core convolutions want), one
    loss-network forward for output and content. The trainer takes all; the benchmark one by one."""
    if device.type != "cuda":
        return
    if autotune:
        torch.backends.cudnn.benchmark = True
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    if channels_last:
        net.to(memory_format=torch.channels_last)
        objective.to(memory_format=torch.channels_last)
    objective.batched_content = batched_vgg
