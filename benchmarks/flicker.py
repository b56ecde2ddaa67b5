"""Flicker against style and speed: `stylize --temporal F` at several strengths on real clips.

For each clip and model, the baseline is F = 0 (every frame stylized on its own). Each row runs
the real command path end to end (decode, stylize, blend, encode) on the CPU with onnxruntime, then
measures the output as `fastnst flicker` does (Lai et al.'s warping error; the input's own is the
floor) and the mean J of the output frames under the model's own objective (the style kept?) on
--j-frames evenly spaced frames. Ratios are against the baseline row.

    python benchmarks/flicker.py [--models starry_night] [--strengths 0,0.3,0.5,0.7] [--clips A,B]
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from fastnst.compare import objective_for  # noqa: E402
from fastnst.inference import Stylizer  # noqa: E402
from fastnst.jobs import plan, run_jobs  # noqa: E402
from fastnst.progress import StylizeProgress  # noqa: E402
from fastnst.video import flicker, probe, read_frames  # noqa: E402

VIDEOS = ROOT.parent / "shared" / "data" / "video"
CLIPS = f"{VIDEOS / 'sintel_mountain_2'},{VIDEOS / 'big_buck_bunny_640x360.mp4'}"


def stylize_clip(clip: Path, out: Path, stylizer: Stylizer, strength: float) -> tuple[int, float]:
    """The clip through `fastnst stylize --temporal strength`'s jobs: (frames, seconds)."""
    t = time.perf_counter()
    jobs, _ = plan([str(clip)], str(out), stylizer.name)
    with StylizeProgress(len(jobs)) as progress:
        run_jobs(jobs, stylizer, progress, batch=False, temporal=strength)  # a failure raises
    seconds = time.perf_counter() - t
    return (len(jobs) if clip.is_dir() else probe(out)["frames"]), seconds


def mean_j(objective, clip: Path, out: Path, n: int) -> float:
    frames = list(zip(read_frames(clip), read_frames(out)))
    chosen = np.linspace(0, len(frames) - 1, n).round().astype(int)
    with torch.no_grad():
        return float(np.mean([float(objective(torch.from_numpy(frames[i][1][None]), torch.from_numpy(frames[i][0][None]))
                                    ["total"]) for i in chosen]))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default="starry_night", help="comma-separated models (names or .onnx files)")
    ap.add_argument("--strengths", default="0,0.3,0.5,0.7")
    ap.add_argument("--clips", default=CLIPS, help="comma-separated videos or frame folders")
    ap.add_argument("--j-frames", type=int, default=10, help="frames per clip scored for J")
    args = ap.parse_args()
    torch.set_num_threads(os.cpu_count())
    strengths = [float(s) for s in args.strengths.split(",")]
    print(f"flicker: CPU {platform.machine()}, {os.cpu_count()} cores; onnxruntime fp32 on the CPU; baseline "
          f"--temporal 0 (every frame on its own); J on {args.j_frames} frames per clip")
    print(f"{'clip':<28}{'model':<16}{'temporal':>9}{'frames':>7}{'size':>10}{'warp err':>10}{'input':>9}"
          f"{'x base':>8}{'mean J':>9}{'x base':>8}{'frames/s':>9}{'x base':>8}")
    with tempfile.TemporaryDirectory() as tmp:
        for model in args.models.split(","):
            stylizer = Stylizer(model, "cpu")
            label = f"{Path(model).parent.name}/{Path(model).stem}" if Path(model).is_file() else stylizer.name
            objective = objective_for(stylizer, None, torch.device("cpu"))
            for clip in map(Path, args.clips.split(",")):
                base = None
                for strength in strengths:
                    out = Path(tmp) / f"{len(os.listdir(tmp))}{'' if clip.is_dir() else clip.suffix}"
                    n, seconds = stylize_clip(clip, out, stylizer, strength)
                    report = flicker(clip, out)
                    j = mean_j(objective, clip, out, args.j_frames)
                    first = next(read_frames(clip))
                    row = (report["warping_error"], j, n / seconds)
                    base = base or row
                    print(f"{clip.name[:27]:<28}{label[:15]:<16}{strength:>9.2f}{n:>7}"
                          f"{f'{first.shape[2]}x{first.shape[1]}':>10}{row[0]:>10.5f}"
                          f"{report['input_warping_error']:>9.5f}{row[0] / base[0]:>8.2f}{row[1]:>9.4g}"
                          f"{row[1] / base[1]:>8.3f}{row[2]:>9.2f}{row[2] / base[2]:>8.2f}", flush=True)


if __name__ == "__main__":
    main()
