"""The temporal blend's per-frame step on torch tensors, for video frames that stay on the GPU.

The twin of `fastnst.temporal.follow` (numpy and OpenCV, which the light install runs), held to it
by a test: the same Gaussian kernels and reflected borders as OpenCV's GaussianBlur, bilinear
warping with replicated borders as cv2.remap, the same colour map. Links (flow and weights) are
computed ahead on the CPU (`fastnst.temporal.link`) and uploaded here. Needs torch.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from fastnst.temporal import DETAIL_MAX_GAIN, DETAIL_SIGMA, DETAIL_WINDOW, Link, TemporalBlend


def _gaussian(sigma: float, device: torch.device) -> torch.Tensor:
    """OpenCV's Gaussian kernel for float images: size round(8 sigma + 1), made odd."""
    size = int(round(sigma * 8 + 1)) | 1
    x = torch.arange(size, dtype=torch.float64) - size // 2
    k = torch.exp(-x ** 2 / (2 * sigma ** 2))
    return (k / k.sum()).to(device, torch.float32)


def blur(a: torch.Tensor, sigma: float) -> torch.Tensor:
    """Gaussian blur of each channel of a C x H x W tensor (borders reflected, as OpenCV's default)."""
    k = _gaussian(sigma, a.device)
    r = k.numel() // 2
    x = a[:, None]
    mode = "reflect" if r < min(a.shape[1:]) else "replicate"
    x = F.conv2d(F.pad(x, (r, r, 0, 0), mode=mode), k.view(1, 1, 1, -1))
    x = F.conv2d(F.pad(x, (0, 0, r, r), mode=mode), k.view(1, 1, -1, 1))
    return x[:, 0]


def warp(frame: torch.Tensor, backward: torch.Tensor) -> torch.Tensor:
    """A frame (C x H x W) moved along the flow (H x W x 2, pixels), bilinearly, borders replicated."""
    _, h, w = frame.shape
    ys, xs = torch.meshgrid(torch.arange(h, device=frame.device, dtype=torch.float32),
                            torch.arange(w, device=frame.device, dtype=torch.float32), indexing="ij")
    gx = (xs + backward[..., 0]) * (2.0 / max(w - 1, 1)) - 1.0
    gy = (ys + backward[..., 1]) * (2.0 / max(h - 1, 1)) - 1.0
    grid = torch.stack([gx, gy], -1)[None]
    return F.grid_sample(frame[None], grid, mode="bilinear", padding_mode="border", align_corners=True)[0]


def _sqrtm(c: torch.Tensor, power: float = 0.5) -> torch.Tensor:
    w, v = torch.linalg.eigh(c)
    return (v * w.clamp_min(1e-8) ** power) @ v.T


def match_colours(image: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    """`image` mapped linearly to the colour mean and covariance of `reference` (float64 3 x 3 maths)."""
    a, b = image.reshape(3, -1), reference.reshape(3, -1)
    ma, mb = a.mean(1, keepdim=True, dtype=torch.float64), b.mean(1, keepdim=True, dtype=torch.float64)
    ca, cb = torch.cov(a.double()), torch.cov(b.double())
    root, inverse_root = _sqrtm(ca), _sqrtm(ca, -0.5)
    transform = inverse_root @ _sqrtm(root @ cb @ root) @ inverse_root
    shift = mb - transform @ ma
    out = transform.float() @ a + shift.float()
    return out.reshape(image.shape).clamp_(0.0, 1.0)


def restore_texture(blended: torch.Tensor, stylized: torch.Tensor) -> torch.Tensor:
    base, reference = blur(blended, DETAIL_SIGMA), blur(stylized, DETAIL_SIGMA)
    detail = blended - base
    energy = blur(detail ** 2, DETAIL_WINDOW).sum(0)
    wanted = blur((stylized - reference) ** 2, DETAIL_WINDOW).sum(0)
    gain = ((wanted + 1e-6) / (energy + 1e-6)).sqrt().clamp(1.0, DETAIL_MAX_GAIN)
    return match_colours((base + detail * gain[None]).clamp(0.0, 1.0), stylized)


def follow(previous: torch.Tensor, stylized: torch.Tensor, link: Link) -> torch.Tensor:
    backward = torch.from_numpy(link.backward).to(stylized.device, non_blocking=True)
    weight = torch.from_numpy(link.weight).to(stylized.device, non_blocking=True)
    return restore_texture(stylized + weight[None] * (warp(previous, backward) - stylized), stylized)


class TorchTemporalBlend(TemporalBlend):
    """TemporalBlend whose frames and outputs are torch tensors on the model's device."""

    follow = staticmethod(follow)
