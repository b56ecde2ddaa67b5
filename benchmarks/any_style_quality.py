"""Any style at run time, judged on the objective J against L-BFGS from white noise (Johnson 2016, Figure 5),
and side by side with the per-style networks on their own styles.

`python benchmarks/any_style_quality.py [--model any-style] [--size 256] [--iterations 0,10,30,50,100]`

For every photo x style: J of the any-style output (style statistics at --style-size), J of L-BFGS from
white noise at the recorded iterations and the matched iteration (the first at or below the network's J),
on the objective `fastnst compare` uses: a shipped model's own (its loss weights) for the shipped styles,
else the default objective. For the shipped styles, the per-style network's J and matched iteration too.
The photos are from ../shared/data/content, which no model was trained on; --styles default to the style
images that no shipped network was trained on, plus the shipped networks' styles.
"""

from __future__ import annotations

import argparse
import os
import platform
from pathlib import Path

import torch

from fastnst.anystyle import AnyStyle
from fastnst.compare import objective_for
from fastnst.gatys import gatys
from fastnst.images import load_rgb, resize_long_side, to_tensor
from fastnst.inference import Stylizer
from fastnst.modelfile import shipped_models

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
PHOTOS = ("tubingen", "golden_gate", "lion")
UNSEEN_STYLES = ("vg_houses", "shipwreck_of_the_minotaur", "tahiti_gauguin", "woman_with_hat_matisse")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="any-style")
    p.add_argument("--photos", default=",".join(PHOTOS), help="Names in ../shared/data/content.")
    p.add_argument("--styles", default=",".join(UNSEEN_STYLES), help="Names in ../shared/data/styles.")
    p.add_argument("--size", type=int, default=256)
    p.add_argument("--iterations", default="0,10,30,50,100")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    torch.set_num_threads(len(os.sched_getaffinity(0)))
    iterations = sorted(int(i) for i in args.iterations.split(","))
    shipped = [n for n in shipped_models() if "." not in n]
    styles = [(s, None) for s in args.styles.split(",")] + [(s, s) for s in shipped]
    print(f"machine: {platform.machine()}, {len(os.sched_getaffinity(0))} cores, torch {torch.__version__}; "
          f"photos at {args.size} px; L-BFGS from white noise (seed {args.seed}); model {args.model}")
    print("| photo | style | J any-style | J per-style network | " + " | ".join(f"J@{i}" for i in iterations)
          + " | matched: any-style | matched: per-style |")
    print("| --- " * (6 + len(iterations)) + "|")
    for style, model in styles:
        style_path = SHARED / "styles" / f"{style}.jpg"
        network = Stylizer(model, "cpu") if model else None
        any_style = AnyStyle(style_path, args.model, "cpu")
        reference = network or any_style  # whose objective: the shipped model's, else the default
        objective = objective_for(reference, style_path, torch.device("cpu"))
        for photo in args.photos.split(","):
            content = to_tensor(resize_long_side(load_rgb(SHARED / "content" / f"{photo}.jpg"), args.size))[None]
            outputs = {"any": any_style.stylize_batch(content.numpy())}
            if network:
                outputs["net"] = network.stylize_batch(content.numpy())
            with torch.no_grad():
                j = {k: float(objective(torch.from_numpy(v), content)["total"]) for k, v in outputs.items()}
            result = gatys(objective, content, max(iterations), "lbfgs", "noise", seed=args.seed,
                           record_at=set(iterations), record_all=True)
            def matched(value: float) -> str:
                return next((str(h["iteration"]) for h in result.history if h["J"] <= value), f">{max(iterations)}")

            at = {h["iteration"]: h["J"] for h in result.history}
            print(f"| {photo} | {style} | {j['any']:.4g} | {j['net']:.4g} | " if network else
                  f"| {photo} | {style} | {j['any']:.4g} | - | ", end="")
            print(" | ".join(f"{at[i]:.4g}" for i in iterations) + f" | {matched(j['any'])} | "
                  + (matched(j["net"]) if network else "-") + " |", flush=True)


if __name__ == "__main__":
    main()
