"""Tiled inference with whole-image instance-norm statistics: huge images in bounded memory.

A network with instance normalisation normalises each input by its own statistics, so tiles
stylized independently each get their own colours and contrast (on a 1280 px photo with 512 px
tiles, a mean difference of 8/255 from the untiled output). Here every tile is normalised with
statistics of the whole image instead:

1. a proxy, the image downscaled to a long side of max(1024, 2 * tile) pixels, gives every
   layer's per-channel mean and variance in one forward;
2. the first REFINE_LAYERS layers (the encoder, where the proxy's scale matters most) are then
   measured exactly, one after the other, over the full-resolution tiles' non-overlapping cores;
   these passes stop right after the measured layer, so they are cheap;
3. the last pass writes each tile's core. A tile is its core plus a halo of HALO pixels on each
   side, more than the network's receptive radius (about 54 px), so with exact statistics a core
   equals the untiled output (checked: 0.0007/255).

Memory: the network sees one tile or the proxy at a time; image and output are float32 arrays.

An ONNX model's normalisation cannot be reached, so its tiles are stylized independently and blended
over a quarter-tile overlap (`stylize_tiled` picks): numpy only, for the light install.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:  # the seamless path needs torch (the training install)
    import torch

    from fastnst.network import InstanceNorm, TransformerNet

HALO = 64
REFINE_LAYERS = 3
MIN_PROXY = 1024


def _ramp(n: int, overlap: int, at_start: bool, at_end: bool) -> np.ndarray:
    """1-D blending weights of a tile: linear ramps over the overlap, except at the image's edges."""
    w = np.ones(n, np.float32)
    k = min(overlap, n)
    ramp = (np.arange(k, dtype=np.float32) + 0.5) / k
    if not at_start:
        w[:k] = np.minimum(w[:k], ramp)
    if not at_end:
        w[n - k:] = np.minimum(w[n - k:], ramp[::-1])
    return w


def _tile_starts(size: int, tile: int, overlap: int) -> list[int]:
    if size <= tile:
        return [0]
    return list(range(0, size - tile, tile - overlap)) + [size - tile]


def stylize_tiled(stylizer, image: np.ndarray, tile: int) -> np.ndarray:
    """Stylize a 3 x H x W float image in overlapping tile x tile pieces.

    With a PyTorch network, tiles share whole-image normalisation statistics (fastnst.tiling) and
    match the untiled output. An ONNX model normalises each tile by itself, so tiles are blended
    with linear ramps over a quarter-tile overlap to hide the seams; colours can still drift
    between distant tiles."""
    if stylizer.net is not None:
        return stylize_tiled_global(stylizer.net, image, tile, device=stylizer.torch_device)
    _, h, w = image.shape
    overlap = max(16, tile // 4)
    out = np.zeros_like(image)
    weight = np.zeros((h, w), np.float32)
    ys, xs = _tile_starts(h, tile, overlap), _tile_starts(w, tile, overlap)
    for y0 in ys:
        for x0 in xs:
            piece = image[:, y0:y0 + tile, x0:x0 + tile]
            result = stylizer.stylize_batch(piece[None])[0]
            th, tw = piece.shape[1:]
            wy = _ramp(th, overlap, y0 == 0, y0 + th >= h)
            wx = _ramp(tw, overlap, x0 == 0, x0 + tw >= w)
            wgt = wy[:, None] * wx[None, :]
            out[:, y0:y0 + th, x0:x0 + tw] += result * wgt
            weight[y0:y0 + th, x0:x0 + tw] += wgt
    return out / weight


class _Stop(Exception):
    """Raised by the recorder to end a measuring pass right after the measured layer."""


class _Recorder:
    """Sums of x and x^2 per channel over the current tile's core, at the layer's resolution."""

    def __init__(self, stop_after: InstanceNorm | None = None):
        self.sums: dict[int, torch.Tensor] = {}
        self.box = None  # (core_y0, core_y1, core_x0, core_x1) in tile pixels, (tile_h, tile_w)
        self.stop_after = stop_after

    def __call__(self, layer, x):
        import torch

        (y0, y1, x0, x1), (th, tw) = self.box
        sy, sx = max(1, round(th / x.shape[-2])), max(1, round(tw / x.shape[-1]))
        part = x[..., y0 // sy: -(-y1 // sy), x0 // sx: -(-x1 // sx)].double()
        s = torch.stack([part.sum(dim=(0, 2, 3)), (part * part).sum(dim=(0, 2, 3)),
                         torch.full((x.shape[1],), float(part[0, 0].numel()), dtype=torch.float64,
                                    device=x.device)])
        self.sums[id(layer)] = s if id(layer) not in self.sums else self.sums[id(layer)] + s
        if layer is self.stop_after:
            raise _Stop

    def stats(self, layer) -> tuple[torch.Tensor, torch.Tensor]:
        total, sq, n = self.sums[id(layer)]
        mean = total / n
        return mean.float(), (sq / n - mean * mean).clamp_min(0).float()


def _cores(size: int, core: int) -> list[tuple[int, int]]:
    """Split [0, size) into cores of at most about `core` pixels, boundaries on multiples of 4."""
    n = max(1, -(-size // core))
    edges = [0] + [min(size, round(size * i / n / 4) * 4) for i in range(1, n)] + [size]
    return [(a, b) for a, b in zip(edges, edges[1:]) if b > a]


def stylize_tiled_global(net: TransformerNet, image: np.ndarray, tile: int, device: str | torch.device = "cpu",
                         proxy_side: int | None = None, refine_layers: int = REFINE_LAYERS) -> np.ndarray:
    """3 x H x W float32 in [0, 1] -> stylized, the network seeing `tile` x `tile` pieces."""
    import torch

    with torch.no_grad():
        return _tiled_global(net.eval(), image, tile, device, proxy_side, refine_layers)


def _tiled_global(net, image, tile, device, proxy_side, refine_layers) -> np.ndarray:
    import torch
    import torch.nn.functional as F

    from fastnst.network import InstanceNorm

    _, h, w = image.shape
    halo = min(HALO, tile // 4)
    core = max(4, tile - 2 * halo)
    layers = [m for m in net.modules() if isinstance(m, InstanceNorm)]
    x_full = torch.from_numpy(np.ascontiguousarray(image))
    boxes = []
    for cy0, cy1 in _cores(h, core):
        for cx0, cx1 in _cores(w, core):
            ty0, tx0 = max(0, cy0 - halo) // 4 * 4, max(0, cx0 - halo) // 4 * 4
            boxes.append(((cy0, cy1, cx0, cx1), (ty0, min(h, cy1 + halo), tx0, min(w, cx1 + halo))))

    def run(piece: torch.Tensor, rec: _Recorder | None, box) -> torch.Tensor | None:
        if rec is not None:
            rec.box = box
        try:
            return net(piece.unsqueeze(0).to(device))[0].float().cpu()
        except _Stop:
            return None

    try:
        # 1. every layer's statistics from the downscaled proxy
        side = max(proxy_side or MIN_PROXY, 2 * tile)
        scale = min(1.0, side / max(h, w))
        proxy = F.interpolate(x_full[None], scale_factor=scale, mode="area")[0] if scale < 1 else x_full
        rec = _Recorder()
        for m in layers:
            m.recorder, m.fixed_stats = rec, None
        run(proxy, rec, ((0, proxy.shape[1], 0, proxy.shape[2]), tuple(proxy.shape[1:])))
        for m in layers:
            m.recorder, m.fixed_stats = None, tuple(t.to(device) for t in rec.stats(m))
        if scale < 1:
            # 2. the first layers measured exactly over the full-resolution tiles
            for layer in layers[:refine_layers]:
                rec = _Recorder(stop_after=layer)
                layer.recorder = rec
                for (cy0, cy1, cx0, cx1), (ty0, ty1, tx0, tx1) in boxes:
                    run(x_full[:, ty0:ty1, tx0:tx1], rec,
                        ((cy0 - ty0, cy1 - ty0, cx0 - tx0, cx1 - tx0), (ty1 - ty0, tx1 - tx0)))
                layer.recorder, layer.fixed_stats = None, tuple(t.to(device) for t in rec.stats(layer))
        # 3. the output, core by core
        out = np.empty_like(image)
        for (cy0, cy1, cx0, cx1), (ty0, ty1, tx0, tx1) in boxes:
            y = run(x_full[:, ty0:ty1, tx0:tx1], None, None)
            out[:, cy0:cy1, cx0:cx1] = y[:, cy0 - ty0:cy1 - ty0, cx0 - tx0:cx1 - tx0].numpy()
        return out
    finally:
        for m in layers:
            m.recorder, m.fixed_stats = None, None
