"""The feed-forward transformer network of Johnson, Alahi and Fei-Fei (2016).

Changes from the paper, all common practice since: instance normalisation (Ulyanov et al.)
instead of batch norm, reflection padding instead of zero padding, and nearest-neighbour
upsampling followed by a convolution instead of transposed convolutions (no checkerboard
artefacts, Odena et al. 2016).

Input and output: RGB, NCHW, float, values in [0, 1] (the output through a sigmoid). Any height and width work: the input is
reflection-padded to a multiple of 4 and the output cropped back.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class InstanceNorm(nn.InstanceNorm2d):
    """Affine instance normalisation that can also normalise with given statistics.

    Tiled inference of a large image sets `fixed_stats` (per-channel mean and variance of the
    whole image) so that every tile is normalised like the whole image, and uses `recorder` to
    collect those statistics. Both are None in training and export: plain instance norm.
    """

    def __init__(self, channels: int):
        super().__init__(channels, affine=True)
        self.fixed_stats: tuple[torch.Tensor, torch.Tensor] | None = None
        self.recorder = None

    def forward(self, x):
        if self.recorder is not None:
            self.recorder(self, x)
        if self.fixed_stats is None:
            return super().forward(x)
        mean, var = self.fixed_stats
        x = (x - mean.view(1, -1, 1, 1)) * torch.rsqrt(var.view(1, -1, 1, 1) + self.eps)
        return x * self.weight.view(1, -1, 1, 1) + self.bias.view(1, -1, 1, 1)


class ConvLayer(nn.Sequential):
    """Reflection pad + conv (+ instance norm + ReLU)."""

    def __init__(self, cin: int, cout: int, kernel: int, stride: int = 1, norm: bool = True, relu: bool = True):
        layers = [nn.ReflectionPad2d(kernel // 2), nn.Conv2d(cin, cout, kernel, stride)]
        if norm:
            layers.append(InstanceNorm(cout))
        if relu:
            layers.append(nn.ReLU(inplace=True))
        super().__init__(*layers)


class ResidualBlock(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.body = nn.Sequential(ConvLayer(channels, channels, 3), ConvLayer(channels, channels, 3, relu=False))

    def forward(self, x):
        return x + self.body(x)


class UpsampleConv(nn.Sequential):
    """Nearest-neighbour x2 upsampling, then a convolution."""

    def __init__(self, cin: int, cout: int):
        super().__init__(nn.Upsample(scale_factor=2, mode="nearest"), ConvLayer(cin, cout, 3))


class TransformerNet(nn.Module):
    """Johnson's image transformation network.

    width: channels of the first layer (32 in the paper; the residual blocks have 4*width).
    blocks: number of residual blocks (5 in the paper).
    """

    def __init__(self, width: int = 32, blocks: int = 5):
        super().__init__()
        self.width, self.blocks = width, blocks
        w = width
        self.encoder = nn.Sequential(ConvLayer(3, w, 9), ConvLayer(w, 2 * w, 3, stride=2),
                                     ConvLayer(2 * w, 4 * w, 3, stride=2))
        self.residuals = nn.Sequential(*[ResidualBlock(4 * w) for _ in range(blocks)])
        self.decoder = nn.Sequential(UpsampleConv(4 * w, 2 * w), UpsampleConv(2 * w, w),
                                     ConvLayer(w, 3, 9, norm=False, relu=False))

    def config(self) -> dict:
        return {"width": self.width, "blocks": self.blocks}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2], x.shape[-1]
        # Pad to a multiple of 4 (two stride-2 convolutions, then two x2 upsamplings give back
        # exactly the padded size), and to at least 16 px so the 9x9 reflection padding fits.
        # Replicate padding works for any size; the padded border is cropped off again.
        ph = max(16 - h, (4 - h % 4) % 4)
        pw = max(16 - w, (4 - w % 4) % 4)
        x = F.pad(x, (0, pw, 0, ph), mode="replicate")
        y = self.decoder(self.residuals(self.encoder(x)))
        # A sigmoid keeps the output in [0, 1] in training as at inference, so the objective a
        # model is trained on is the one its (never clipped) output is judged by.
        return torch.sigmoid(y[..., :h, :w])
