"""Quality of the int8 ONNX models against their fp32 originals, on photos held out from calibration.

For each shipped model with an int8 variant and each photo (its long side capped at --max-size), the
PSNR of the int8 output against the fp32 output, both run by onnxruntime on the CPU. The baseline
is the fp32 model itself; the export refuses an int8 model under 30 dB (fastnst.export.INT8_MIN_PSNR).

    python benchmarks/int8_quality.py [--photos DIR] [--models a,b] [--max-size 2000]
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from fastnst.data import list_images  # noqa: E402
from fastnst.export import psnr  # noqa: E402
from fastnst.images import fit_max_size, load_rgb, pil_to_array  # noqa: E402
from fastnst.inference import Stylizer  # noqa: E402
from fastnst.modelfile import shipped_models  # noqa: E402


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--photos", type=Path, default=ROOT.parent / "shared" / "data" / "content")
    ap.add_argument("--models", default=None, help="comma-separated shipped names [default: all with .int8]")
    ap.add_argument("--max-size", type=int, default=2000)
    args = ap.parse_args()
    shipped = shipped_models()
    names = args.models.split(",") if args.models else [n for n in shipped if f"{n}.int8" in shipped]
    photos = list_images(args.photos)
    print(f"int8_quality: CPU {platform.machine()}, {os.cpu_count()} cores; {len(photos)} photos from {args.photos} "
          f"(long side at most {args.max_size}); PSNR of int8 against fp32, dB")
    print(f"  {'photo':<22}{'size':>11}" + "".join(f"{n:>18}" for n in names))
    fp32 = {n: Stylizer(n, "cpu") for n in names}
    int8 = {n: Stylizer(f"{n}.int8", "cpu") for n in names}
    scores = {n: [] for n in names}
    for path in photos:
        im = load_rgb(path)
        im = im.resize(fit_max_size(im.size, args.max_size))
        x = pil_to_array(im)[None]
        row = []
        for n in names:
            s = psnr(int8[n].stylize_batch(x), fp32[n].stylize_batch(x))
            scores[n].append(s)
            row.append(s)
        print(f"  {path.name[:21]:<22}{f'{im.width}x{im.height}':>11}" + "".join(f"{s:>18.1f}" for s in row),
              flush=True)
    print(f"  {'min / mean':<33}" + "".join(f"{f'{min(v):.1f} / {np.mean(v):.1f}':>18}" for v in scores.values()))


if __name__ == "__main__":
    main()
