"""The temporal blend on torch tensors, for video frames that stay on the GPU.

Twins of `fastnst.temporal.link_along` and `follow` (numpy and OpenCV, which the light install runs),
held to them by tests: the same visibility check, cut test and weights, the same Gaussian kernels and
reflected borders as OpenCV's GaussianBlur, bilinear warping with replicated borders as cv2.remap, the
same colour map. Only the optical flows are computed on the CPU (`fastnst.temporal.flows`, on threads
ahead of the network). Needs torch.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from fastnst.temporal import (BLEND_MAX_INPUT_CHANGE, CONSISTENCY_OFFSET, CONSISTENCY_SCALE, CUT_RESIDUAL,
                              CUT_VISIBLE_FRACTION, DETAIL_MAX_GAIN, DETAIL_SIGMA, DETAIL_WINDOW, Link, TemporalBlend)


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


def _coordinates(flow: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Where each pixel's flow (H x W x 2, pixels) points: x and y maps."""
    h, w = flow.shape[:2]
    xs = torch.arange(w, device=flow.device, dtype=torch.float32)
    ys = torch.arange(h, device=flow.device, dtype=torch.float32)[:, None]
    return flow[..., 0] + xs, flow[..., 1] + ys


def _sample(image: torch.Tensor, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """A C x H x W tensor sampled bilinearly at the maps x, y (pixels; borders replicated)."""
    _, h, w = image.shape
    grid = torch.stack([x * (2.0 / max(w - 1, 1)) - 1.0, y * (2.0 / max(h - 1, 1)) - 1.0], -1)[None]
    return F.grid_sample(image[None], grid, mode="bilinear", padding_mode="border", align_corners=True)[0]


def warp(frame: torch.Tensor, backward: torch.Tensor) -> torch.Tensor:
    """A frame (C x H x W) moved along the flow (H x W x 2, pixels), bilinearly, borders replicated."""
    return _sample(frame, *_coordinates(backward))


def visible(backward: torch.Tensor, forward: torch.Tensor) -> torch.Tensor:
    """H x W bool: the pixels the backward flow traces to a visible pixel, checked against the forward flow."""
    h, w = backward.shape[:2]
    x, y = _coordinates(backward)
    inside = (x >= 0) & (x <= w - 1) & (y >= 0) & (y <= h - 1)
    fx, fy = _sample(forward.permute(2, 0, 1), x, y)
    bx, by = backward[..., 0], backward[..., 1]
    loop = (bx + fx) ** 2 + (by + fy) ** 2
    bound = CONSISTENCY_SCALE * (bx * bx + by * by + fx * fx + fy * fy) + CONSISTENCY_OFFSET
    return inside & (loop <= bound)


def link_along(earlier: torch.Tensor, later: torch.Tensor, backward, forward, strength: float) -> Link | None:
    """Two consecutive input frames on the device, their flows from the CPU -> the later one's link
    (tensors), or None at a scene cut. Reads two numbers back from the device."""
    backward = torch.as_tensor(backward, device=later.device)
    forward = torch.as_tensor(forward, device=later.device)
    mask = visible(backward, forward)
    change = (warp(earlier, backward) - later).abs().mean(0)
    traced = mask.float().mean()
    residual = (change * mask).sum() / mask.sum().clamp_min(1)
    traced, residual = torch.stack([traced, residual]).tolist()
    if traced < CUT_VISIBLE_FRACTION or (traced and residual > CUT_RESIDUAL):
        return None
    return Link(backward, strength * (mask & (change < BLEND_MAX_INPUT_CHANGE)).float())


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
    energy = blur((detail ** 2).sum(0, keepdim=True), DETAIL_WINDOW)[0]
    wanted = blur(((stylized - reference) ** 2).sum(0, keepdim=True), DETAIL_WINDOW)[0]
    gain = ((wanted + 1e-6) / (energy + 1e-6)).sqrt().clamp(1.0, DETAIL_MAX_GAIN)
    return match_colours((base + detail * gain[None]).clamp(0.0, 1.0), stylized)


def follow(previous: torch.Tensor, stylized: torch.Tensor, link: Link) -> torch.Tensor:
    backward = torch.as_tensor(link.backward, device=stylized.device)
    weight = torch.as_tensor(link.weight, device=stylized.device)
    return restore_texture(stylized + weight[None] * (warp(previous, backward) - stylized), stylized)


class TorchTemporalBlend(TemporalBlend):
    """TemporalBlend whose frames and outputs are torch tensors on the model's device. `step(frame,
    stylized, flows)` is its `blend` with the flows to the last frame computed ahead (None for the
    first frame)."""

    follow = staticmethod(follow)

    def step(self, frame: torch.Tensor, stylized: torch.Tensor, flows) -> torch.Tensor:
        previous, self.previous_input = self.previous_input, frame
        found = None
        if flows is not None and previous is not None and previous.shape == frame.shape:
            found = link_along(previous, frame, *flows, self.strength)
        return self.apply(stylized, found)
