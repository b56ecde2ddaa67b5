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
    arrays = []
    for path in photos:
        im = load_rgb(path)
        arrays.append((path.name, im.resize(fit_max_size(im.size, args.max_size))))
    scores = {}
    for n in names:  # one model at a time: two sessions on 2000 px photos hold gigabytes of activations
        fp32, int8 = Stylizer(n, "cpu"), Stylizer(f"{n}.int8", "cpu")
        scores[n] = [psnr(int8.stylize_batch(x), fp32.stylize_batch(x))
                     for x in (pil_to_array(im)[None] for _, im in arrays)]
        del fp32, int8
    for k, (name, im) in enumerate(arrays):
        print(f"  {name[:21]:<22}{f'{im.width}x{im.height}':>11}" + "".join(f"{scores[n][k]:>18.1f}" for n in names))
    print(f"  {'min / mean':<33}" + "".join(f"{f'{min(v):.1f} / {np.mean(v):.1f}':>18}" for v in scores.values()))


if __name__ == "__main__":
    main()
