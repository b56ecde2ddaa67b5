"""The perceptual objective J = content + style + total variation.

One module, `Objective`, is the only definition of J: training, the Gatys optimizer and
comparisons all call it. It is composed of small parts (Gram matrix, content term, style
term, TV term) in the spirit of pystiche.

Scale conventions (images RGB in [0, 1]):
  content = w_c * sum_l a_l * mean((phi_l(y) - phi_l(x))^2)
  style   = w_s * sum_l b_l * mean((G_l(y) - G_l(s))^2),  G = F F^T / (C*H*W), computed in float32
  tv      = w_tv * (mean((y[i+1,j]-y[i,j])^2) + mean((y[i,j+1]-y[i,j])^2))
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from fastnst.config import LossConfig
from fastnst.lossnet import VGGFeatures

def gram_matrix(features: torch.Tensor) -> torch.Tensor:
    """B x C x H x W -> B x C x C, normalised by C*H*W, always in float32.

    Under bf16/fp16 autocast the sum over H*W overflows or loses most of its bits, so autocast is
    switched off here and the features are upcast first.
    """
    b, c, h, w = features.shape
    with torch.autocast(device_type=features.device.type, enabled=False):
        f = features.float().reshape(b, c, h * w)
        return torch.bmm(f, f.transpose(1, 2)) / (c * h * w)


def content_loss(out_feats: dict[str, torch.Tensor], target_feats: dict[str, torch.Tensor],
                 layer_weights: dict[str, float]) -> torch.Tensor:
    return sum(w * F.mse_loss(out_feats[l].float(), target_feats[l].float()) for l, w in layer_weights.items())


def style_loss(out_feats: dict[str, torch.Tensor], target_grams: dict[str, torch.Tensor],
               layer_weights: dict[str, float]) -> torch.Tensor:
    total = 0.0
    for l, w in layer_weights.items():
        g = gram_matrix(out_feats[l])
        total = total + w * F.mse_loss(g, target_grams[l].expand_as(g))
    return total


def tv_loss(images: torch.Tensor) -> torch.Tensor:
    images = images.float()
    dy = images[:, :, 1:, :] - images[:, :, :-1, :]
    dx = images[:, :, :, 1:] - images[:, :, :, :-1]
    zero = images.new_zeros(())
    return (dy.pow(2).mean() if dy.numel() else zero) + (dx.pow(2).mean() if dx.numel() else zero)


class Objective(nn.Module):
    """J(y; x, s): how far an image y is from content x in content and from style s in style.

    The style enters only through its Gram matrices, set once with `set_style` (from an image) or
    `set_style_grams` (from a model file). forward returns a dict of the weighted terms and their
    sum "total", each a scalar averaged over the batch.
    """

    def __init__(self, lossnet: VGGFeatures, config: LossConfig, batched_content: bool = False):
        super().__init__()
        self.lossnet = lossnet
        self.config = config
        self.style_grams: dict[str, torch.Tensor] = {}
        # One loss-network forward for output and content together (faster on GPUs, where launches
        # and small batches cost more than the extra backward through the first layers).
        self.batched_content = batched_content

    @classmethod
    def from_config(cls, config: LossConfig, lossnet: VGGFeatures | None = None) -> Objective:
        """The objective of `config` (default layers filled in), on `lossnet` when given (several
        objectives can share one loss network) or a new one."""
        config = config.resolved()
        if lossnet is None:
            lossnet = VGGFeatures(config.loss_net, config.vgg_weights, [*config.content_layers, *config.style_layers],
                                  pooling=config.pooling)
        return cls(lossnet, config)

    @property
    def content_layers(self) -> dict[str, float]:
        return self.config.content_layers

    @property
    def style_layers(self) -> dict[str, float]:
        return self.config.style_layers

    @torch.no_grad()
    def set_style(self, style: torch.Tensor) -> None:
        """style: 1x3xHxW in [0, 1]."""
        feats = self.lossnet(style.to(self._device()))
        self.style_grams = {l: gram_matrix(feats[l]) for l in self.style_layers}

    def set_style_grams(self, grams: dict[str, torch.Tensor]) -> None:
        missing = [l for l in self.style_layers if l not in grams]
        if missing:
            raise ValueError(f"no style Gram matrix for layer {missing[0]}")
        self.style_grams = {l: grams[l].to(self._device(), torch.float32) for l in self.style_layers}

    def _apply(self, fn, recurse=True):
        """Module.to() and friends move the style Gram matrices too (a dict, not buffers)."""
        super()._apply(fn, recurse)
        self.style_grams = {l: fn(g) for l, g in self.style_grams.items()}
        return self

    def _device(self) -> torch.device:
        return self.lossnet.scale.device

    @torch.no_grad()
    def content_targets(self, content: torch.Tensor) -> dict[str, torch.Tensor]:
        """The content image's features, only as deep as the content layers need (relu2_2 by
        default: a fraction of the full forward)."""
        return {l: f.detach() for l, f in self.lossnet(content, list(self.content_layers)).items()}

    def terms(self, out_feats, content_feats, output: torch.Tensor) -> dict[str, torch.Tensor]:
        w = self.config
        c = w.content_weight * content_loss(out_feats, content_feats, self.content_layers)
        s = w.style_weight * style_loss(out_feats, self.style_grams, self.style_layers)
        t = w.tv_weight * tv_loss(output)
        return {"content": c, "style": s, "tv": t, "total": c + s + t}

    def forward(self, output: torch.Tensor, content: torch.Tensor) -> dict[str, torch.Tensor]:
        """Weighted loss terms of `output` against `content` (both Bx3xHxW in [0, 1]).

        The content goes only as deep as the content layers, without gradients: separately, or
        with `batched_content` in one forward with the output (measured slower on the CPU, whose
        backward then computes input gradients for the content half too; faster on GPUs).
        """
        if not self.style_grams:
            raise RuntimeError("Objective.set_style must be called first")
        if self.batched_content:
            out_feats, content_feats = self.lossnet.forward_pair(output, content, list(self.content_layers))
            return self.terms(out_feats, content_feats, output)
        return self.terms(self.lossnet(output), self.content_targets(content), output)

    def forward_with_targets(self, output: torch.Tensor, content_feats: dict[str, torch.Tensor]):
        """Same as forward, with the content features precomputed (the Gatys optimizer's case)."""
        return self.terms(self.lossnet(output), content_feats, output)


def joint_terms(objectives: list[Objective], outputs: list[torch.Tensor],
                content: torch.Tensor) -> list[dict[str, torch.Tensor]]:
    """Each objective's terms for its own output against the one content batch: several styles
    trained together. The objectives share one loss network and its layers, so the content's
    features are computed once and all outputs go through the loss network as one batch (with
    `batched_content`, the content too). With one objective this is exactly `Objective.forward`."""
    first = objectives[0]
    if any(o.lossnet is not first.lossnet or o.content_layers.keys() != first.content_layers.keys()
           for o in objectives):
        raise ValueError("joint_terms needs objectives that share one loss network and its layers")
    if not all(o.style_grams for o in objectives):
        raise RuntimeError("Objective.set_style must be called first")
    joined = outputs[0] if len(outputs) == 1 else torch.cat(outputs)
    if first.batched_content:
        feats, content_feats = first.lossnet.forward_pair(joined, content, list(first.content_layers))
    else:
        feats, content_feats = first.lossnet(joined), first.content_targets(content)
    b = content.shape[0]
    return [o.terms({l: f[i * b:(i + 1) * b] for l, f in feats.items()} if len(outputs) > 1 else feats,
                    content_feats, y)
            for i, (o, y) in enumerate(zip(objectives, outputs))]


# -- stability: a term of the training loss, not of J -----------------------------------------------
# Wang et al. 2020's compound regularization: a small random motion T (shift, rotation, zoom) plus
# noise applied to the input should move the output the same way: ||N(T(x) + noise) - T(N(x))||^2.
MOTION_SHIFT_PX, MOTION_ROTATION_DEG, MOTION_ZOOM, MOTION_NOISE = 4.0, 1.0, 0.02, 0.02


def random_motion(n: int, size: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """n random small motions of size x size images as affine matrices (n x 2 x 3, for
    F.affine_grid) and the noise to add to the moved images (n x 3 x size x size)."""
    u = torch.rand(n, 4, generator=generator) * 2 - 1
    angle = u[:, 0] * MOTION_ROTATION_DEG * torch.pi / 180
    scale = 1 + u[:, 1] * MOTION_ZOOM
    shift = u[:, 2:] * MOTION_SHIFT_PX * 2 / size  # affine_grid's coordinates span 2 across the image
    cos, sin = scale * torch.cos(angle), scale * torch.sin(angle)
    theta = torch.stack([torch.stack([cos, -sin, shift[:, 0]], 1), torch.stack([sin, cos, shift[:, 1]], 1)], 1)
    return theta, torch.randn(n, 3, size, size, generator=generator) * MOTION_NOISE


def stability_loss(net: nn.Module, x: torch.Tensor, y: torch.Tensor, theta: torch.Tensor,
                   noise: torch.Tensor) -> torch.Tensor:
    """Mean squared difference between the network's output on the moved, noisy input and its
    output y = net(x) moved the same way, over the pixels that come from inside the image."""
    grid = F.affine_grid(theta.to(x.dtype), list(x.shape), align_corners=False)
    inside = (grid.abs() <= 1).all(-1).unsqueeze(1)
    moved = F.grid_sample(x, grid, padding_mode="border", align_corners=False)
    target = F.grid_sample(y.float(), grid.float(), padding_mode="border", align_corners=False)
    squared = (net(moved + noise.to(x.dtype)).float() - target) ** 2
    return (squared * inside).sum() / (inside.sum() * squared.shape[1]).clamp(min=1)
