"""Any style at run time against a per-style network: seconds per image on the CPU (onnxruntime).

`python benchmarks/any_style_speed.py [--model any-style] [--baseline starry_night.int8] [--size 512]`

Times, on one photo at SIZE x SIZE (median of --runs after a warm-up): the any-style pipeline with the
style's statistics cached, at each --style-depth, and each level's parts (encoder, transform, decoder); the
style's statistics once per style image; the per-style network (the baseline) on the same photo; and the
whole `fastnst stylize --style` command in a fresh process (start-up, loading, style, photo, writing), on one
photo and on a folder of --folder copies (each photo after the first: the end-to-end time per photo).
Prints the machine and the ratio to the baseline.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort
from PIL import Image

from fastnst.anystyle import AnyStyle, pad_to_multiple, style_statistics, whiten_colour
from fastnst.config import ANY_STYLE_LEVELS, DEFAULT_STYLE_DEPTH
from fastnst.images import load_rgb, pil_to_array
from fastnst.inference import Stylizer

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"


def median_seconds(fn, runs: int) -> float:
    fn()
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="any-style")
    p.add_argument("--baseline", default="starry_night.int8", help="A per-style model to compare with.")
    p.add_argument("--photo", type=Path, default=SHARED / "content" / "tubingen.jpg")
    p.add_argument("--style", type=Path, default=SHARED / "styles" / "shipwreck_of_the_minotaur.jpg")
    p.add_argument("--size", type=int, default=512)
    p.add_argument("--style-size", type=int, default=512)
    p.add_argument("--runs", type=int, default=5)
    p.add_argument("--folder", type=int, default=6, help="Photos in the folder the whole command stylizes.")
    args = p.parse_args()

    photo = pil_to_array(load_rgb(args.photo).resize((args.size, args.size), Image.LANCZOS))
    any_style = AnyStyle(args.style, args.model, "cpu", style_size=args.style_size, style_depth=len(ANY_STYLE_LEVELS))
    stages, x = any_style.stages, pad_to_multiple(photo)
    print(f"machine: {platform.machine()}, {ort.get_device()}, onnxruntime {ort.__version__}, "
          f"{len(os.sched_getaffinity(0))} cores; photo {args.size}x{args.size}, style "
          f"{args.style.name} at {args.style_size}; {any_style.backend}; median of {args.runs}")

    totals = {}
    for depth in range(1, len(ANY_STYLE_LEVELS) + 1):
        any_style.depth = depth
        totals[depth] = median_seconds(lambda: any_style.stylize_one(photo), args.runs)
        print(f"any-style --style-depth {depth}, style cached: {totals[depth]:.3f} s per image"
              + ("  (the default)" if depth == DEFAULT_STYLE_DEPTH else ""))
    total = totals[DEFAULT_STYLE_DEPTH]
    for level in reversed(range(len(ANY_STYLE_LEVELS))):
        feats = stages.encode(x, level)
        enc = median_seconds(lambda: stages.encode(x, level), args.runs)
        wct = median_seconds(lambda: whiten_colour(feats, any_style.style[level]), args.runs)
        dec = median_seconds(lambda: stages.decode(level, feats), args.runs)
        print(f"  {ANY_STYLE_LEVELS[level]}: encode {enc:.3f} s, transform {wct:.3f} s, decode {dec:.3f} s")
    style_s = median_seconds(lambda: style_statistics(stages, args.style, args.style_size), max(1, args.runs // 2))
    print(f"style statistics (once per style image): {style_s:.3f} s")

    baseline = Stylizer(args.baseline, "cpu")
    base = median_seconds(lambda: baseline.stylize_batch(photo[None]), args.runs)
    print(f"baseline {args.baseline} (one pass): {base:.3f} s per image")
    print(f"ratio any-style (default depth {DEFAULT_STYLE_DEPTH}) / baseline: {total / base:.2f}x")

    with tempfile.TemporaryDirectory() as d:
        folder = Path(d) / "photos"
        folder.mkdir()
        image = Image.fromarray((photo.transpose(1, 2, 0) * 255).round().astype(np.uint8))
        for i in range(args.folder):
            image.save(folder / f"photo{i}.png")

        def command_seconds(src: Path, out: Path) -> float:
            command = [sys.executable, "-m", "fastnst", "stylize", str(src), "--style", str(args.style), "--model",
                       args.model, "--style-size", str(args.style_size), "--out", str(out)]
            t = time.perf_counter()
            subprocess.run(command, check=True, capture_output=True)
            return time.perf_counter() - t

        one = command_seconds(folder / "photo0.png", Path(d) / "out.png")
        many = command_seconds(folder, Path(d) / "out")
        print(f"the whole command on one photo (fresh process, style included): {one:.2f} s")
        print(f"the whole command on a folder of {args.folder}: {many:.2f} s, each photo after the first "
              f"(read, stylize, write; style cached): {(many - one) / (args.folder - 1):.2f} s")

if __name__ == "__main__":
    main()
