"""Any style at run time, judged on the objective J against L-BFGS from white noise (Johnson 2016, Figure 5),
and side by side with the per-style networks on their own styles.

`python benchmarks/any_style_quality.py [--model any-style] [--size 256] [--iterations 0,10,30,50,100]`

For every photo x style: J of the any-style output at the default --style-depth and --style-strength, J of
L-BFGS from white noise at the recorded iterations and the matched iteration (the first at or below it),
on the objective `fastnst compare` uses: a shipped model's own (its loss weights) for the shipped styles,
else the default objective. For the shipped styles, the per-style network's J and matched iteration too.
The photos are from ../shared/data/content, which no model was trained on; --styles default to the style
images that no shipped network was trained on, plus the shipped networks' styles. A second table scores
every --style-depth x --style-strength over all pairs (J over J@30, matched iterations): how the defaults
were chosen.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
from pathlib import Path

import torch

from fastnst.anystyle import AnyStyle
from fastnst.compare import objective_for
from fastnst.config import DEFAULT_STYLE_DEPTH, DEFAULT_STYLE_STRENGTH
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
    p.add_argument("--shipped", action=argparse.BooleanOptionalAction, default=True,
                   help="Also the shipped networks' styles, side by side with the networks.")
    p.add_argument("--size", type=int, default=256)
    p.add_argument("--iterations", default="0,10,30,50,100")
    p.add_argument("--depths", default="1,2,3,4", help="--style-depth values to score (the grid's rows).")
    p.add_argument("--strengths", default="0.4,0.6,0.8,1.0", help="--style-strength values to score.")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    torch.set_num_threads(len(os.sched_getaffinity(0)))
    iterations = sorted(int(i) for i in args.iterations.split(","))
    settings = [(int(d), float(a)) for d in args.depths.split(",") for a in args.strengths.split(",")]
    default = (DEFAULT_STYLE_DEPTH, DEFAULT_STYLE_STRENGTH)
    if default not in settings:
        settings.append(default)
    shipped = [n for n in shipped_models() if "." not in n] if args.shipped else []
    styles = [(s, None) for s in args.styles.split(",")] + [(s, s) for s in shipped]
    print(f"machine: {platform.machine()}, {len(os.sched_getaffinity(0))} cores, torch {torch.__version__}; "
          f"photos at {args.size} px; L-BFGS from white noise (seed {args.seed}); model {args.model}, "
          f"default --style-depth {default[0]} --style-strength {default[1]}")
    print("| photo | style | J any-style | J per-style network | " + " | ".join(f"J@{i}" for i in iterations)
          + " | matched: any-style | matched: per-style |")
    print("| --- " * (6 + len(iterations)) + "|")
    scores = {setting: [] for setting in settings}  # (J / J@30, matched) per pair
    for style, model in styles:
        style_path = SHARED / "styles" / f"{style}.jpg"
        network = Stylizer(model, "cpu") if model else None
        any_style = AnyStyle(style_path, args.model, "cpu", style_depth=4)
        reference = network or any_style  # whose objective: the shipped model's, else the default
        objective = objective_for(reference, style_path, torch.device("cpu"))
        for photo in args.photos.split(","):
            content = to_tensor(resize_long_side(load_rgb(SHARED / "content" / f"{photo}.jpg"), args.size))[None]
            result = gatys(objective, content, max(iterations), "lbfgs", "noise", seed=args.seed,
                           record_at=set(iterations), record_all=True)
            at = {h["iteration"]: h["J"] for h in result.history}

            def score(image) -> tuple[float, int | None]:
                with torch.no_grad():
                    j = float(objective(torch.from_numpy(image), content)["total"])
                return j, next((h["iteration"] for h in result.history if h["J"] <= j), None)

            for depth, strength in settings:
                any_style.depth, any_style.strength = depth, strength
                j, matched = score(any_style.stylize_batch(content.numpy()))
                scores[(depth, strength)].append((j / at[30] if 30 in at else j, matched))
                if (depth, strength) == default:
                    j_any, matched_any = j, matched
            j_net, matched_net = score(network.stylize_batch(content.numpy())) if network else (None, None)

            def shown(matched):
                return f">{max(iterations)}" if matched is None else str(matched)

            print(f"| {photo} | {style} | {j_any:.4g} | " + (f"{j_net:.4g}" if network else "-") + " | "
                  + " | ".join(f"{at[i]:.4g}" for i in iterations) + f" | {shown(matched_any)} | "
                  + (shown(matched_net) if network else "-") + " |", flush=True)
    print("\n| --style-depth | --style-strength | mean J / J@30 | median matched | pairs matched at >= 30 |")
    print("| --- | --- | --- | --- | --- |")
    for (depth, strength), values in scores.items():
        ratios = [r for r, _ in values]
        median = statistics.median(max(iterations) + 1 if m is None else m for _, m in values)
        print(f"| {depth} | {strength} | {statistics.mean(ratios):.2f} | "
              f"{'>' + str(max(iterations)) if median > max(iterations) else f'{median:g}'} | "
              f"{sum(m is None or m >= 30 for _, m in values)} of {len(values)} |")


if __name__ == "__main__":
    main()
