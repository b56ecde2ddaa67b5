"""The Gatys optimizer (Gatys, Ecker and Bethge 2016): an image optimised directly to lower J.

It minimises the very `Objective` that training uses, with L-BFGS or Adam over the pixels,
starting from the content image, noise or a given file. It is the reference a feed-forward
network is compared with (`fastnst compare`), and can produce targets for a network.

J is always reported for the image a user would get: pixels clamped to [0, 1].
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch

from fastnst.config import LossConfig
from fastnst.errors import UserError
from fastnst.losses import Objective


@dataclass
class OptimizeResult:
    image: torch.Tensor  # 1x3xHxW in [0, 1]
    history: list[dict] = field(default_factory=list)  # {"iteration", "J", "content", "style", "tv", "seconds"}
    snapshots: dict[int, torch.Tensor] = field(default_factory=dict)


def initial_image(content: torch.Tensor, init: str | torch.Tensor, seed: int = 0) -> torch.Tensor:
    """The starting image: "content", "noise", a tensor, or an image file resized to the content."""
    if isinstance(init, torch.Tensor):
        return init.clone(memory_format=torch.contiguous_format)
    if init == "content":
        return content.clone(memory_format=torch.contiguous_format)
    if init == "noise":
        g = torch.Generator().manual_seed(seed)
        return torch.rand(content.shape, generator=g).to(content.device)
    from fastnst.images import load_rgb, to_tensor

    image = load_rgb(init).resize((content.shape[3], content.shape[2]))
    return to_tensor(image).unsqueeze(0).to(content.device)


def gatys(objective: Objective, content: torch.Tensor, steps: int, optimizer: str = "lbfgs",
          init: str | torch.Tensor = "content", seed: int = 0, lr: float | None = None,
          record_at: set[int] | None = None, record_all: bool = False,
          on_step: Callable[[int, dict], None] | None = None) -> OptimizeResult:
    """Optimise an image against `objective` (style already set) for `steps` iterations.

    `record_at`: iterations (0 = the initial image) whose J and image are kept in the result's
    history and snapshots; `record_all` keeps J (not the image) after every iteration. J is
    computed on the clamped image with the same objective, outside the timed optimizer steps.
    One L-BFGS iteration is one evaluation of J and one step, as in Gatys et al. and Johnson et al.'s
    comparison: a fixed step along the L-BFGS direction, no line search (a strong-Wolfe line search
    cost two evaluations per iteration and, J being only piecewise smooth (ReLU, max pooling), kept
    failing on some photos: 80 iterations stuck near J 1.9 where this reaches 0.69). One Adam
    iteration is one gradient step, followed by a clamp.
    """
    torch.manual_seed(seed)
    content_feats = objective.content_targets(content)
    x = initial_image(content, init, seed).requires_grad_(True)
    def new_lbfgs():
        # No early stop on torch's absolute tolerances: the caller sets the iterations.
        return torch.optim.LBFGS([x], lr=lr or 1.0, max_iter=1, history_size=50, tolerance_grad=0.0,
                                 tolerance_change=0.0)

    if optimizer == "lbfgs":
        opt = new_lbfgs()
    elif optimizer == "adam":
        opt = torch.optim.Adam([x], lr=lr or 0.02)
    else:
        raise ValueError(f"unknown optimizer {optimizer!r}")
    record_at = set(record_at or ())
    result = OptimizeResult(image=x.detach())
    spent = 0.0  # seconds inside the optimizer's steps only, not in the J evaluations for the record

    def evaluate(i: int) -> dict:
        with torch.no_grad():
            terms = objective.forward_with_targets(x.clamp(0, 1), content_feats)
        return {"iteration": i, "J": float(terms["total"]), "content": float(terms["content"]),
                "style": float(terms["style"]), "tv": float(terms["tv"]), "seconds": spent}

    def closure():
        opt.zero_grad(set_to_none=True)
        loss = objective.forward_with_targets(x, content_feats)["total"]
        loss.backward()
        return loss

    if 0 in record_at or record_all:
        result.history.append(evaluate(0))
    if 0 in record_at:
        result.snapshots[0] = x.detach().clamp(0, 1).clone()
    for i in range(1, steps + 1):
        t = time.perf_counter()
        before = x.detach().clone() if optimizer == "lbfgs" else None
        opt.step(closure)
        if optimizer == "adam":
            with torch.no_grad():
                x.clamp_(0, 1)
        elif not torch.isfinite(x).all():
            # Without a line search nothing bounds a step: take it back and start L-BFGS afresh
            # (its first step is a short steepest-descent one).
            with torch.no_grad():
                x.copy_(before)
            opt = new_lbfgs()
        # L-BFGS runs unconstrained, as in Gatys et al.: clamping between its iterations moves the
        # point behind its curvature history, and it stalls (seen at 256 px after ~20 iterations).
        if x.device.type == "cuda":
            torch.cuda.synchronize()
        spent += time.perf_counter() - t
        if i in record_at or i == steps or record_all or on_step is not None:
            rec = evaluate(i)
            if i in record_at or i == steps or record_all:
                result.history.append(rec)
            if i in record_at or i == steps:
                result.snapshots[i] = x.detach().clamp(0, 1)
            if on_step is not None:
                on_step(i, rec)
    result.image = x.detach().clamp(0, 1)
    return result


def style_objective(loss: LossConfig, style: Path, style_size: int, device: torch.device) -> Objective:
    """The objective of `loss` with the style image `style` (resized to `style_size` on its long side)."""
    from fastnst.images import load_image_tensor

    objective = Objective.from_config(loss).to(device)
    objective.set_style(load_image_tensor(style, style_size))
    return objective


def optimize_image(content: Path, style: Path, out: Path, loss: LossConfig, *, steps: int = 300,
                   optimizer: str = "lbfgs", init: str = "content", size: int = 512, style_size: int | None = None,
                   lr: float | None = None, preserve_color: bool = False, snapshot_every: int = 0,
                   device: str = "auto", seed: int = 0, log: Callable[[str], None] | None = None) -> dict:
    """`fastnst optimize`: Gatys et al.'s method on one photo, written to `out` (and to
    OUT_NNNN.EXT every `snapshot_every` iterations); `log` gets a line every 5% of the iterations.
    Returns the last record (iteration, J, terms, seconds)."""
    from fastnst.devices import resolve_device
    from fastnst.files import check_writable
    from fastnst.images import array_to_pil, load_image_tensor, save_image_atomic, to_pil
    from fastnst.images import preserve_color as keep_colors

    if out.resolve() in (content.resolve(), style.resolve()):
        raise UserError(f"{out}: --out would overwrite an input")
    check_writable(out)
    if init not in ("content", "noise") and not Path(init).is_file():
        raise UserError(f"--init {init}: choose content, noise or an image file")
    dev = resolve_device(device)
    objective = style_objective(loss, style, style_size or size, dev)
    x = load_image_tensor(content, size).to(dev)
    record = set(range(snapshot_every, steps + 1, snapshot_every)) if snapshot_every else set()

    def on_step(i, rec):
        if i % max(1, steps // 20) == 0 or i == steps:
            log(f"iteration {i}/{steps}  J {rec['J']:.4g} (content {rec['content']:.3g} style {rec['style']:.3g} "
                f"tv {rec['tv']:.3g})  {rec['seconds']:.1f}s")

    result = gatys(objective, x, steps, optimizer, init, seed, lr, record_at=record, on_step=on_step if log else None)

    def finish(t):
        if not preserve_color:
            return to_pil(t)
        return array_to_pil(keep_colors(t[0].cpu().numpy(), x[0].cpu().numpy()))

    for i, snap in sorted(result.snapshots.items()):
        if i != steps:
            save_image_atomic(finish(snap), out.with_name(f"{out.stem}_{i:04d}{out.suffix}"))
    save_image_atomic(finish(result.image), out)
    return result.history[-1]
