"""Inference latency: PyTorch eager against onnxruntime fp32 and int8 (and fp16 on CUDA), in one run.

For each size the same trained network runs on each backend; the table gives the median latency
of one image and the speedup over PyTorch eager. Then video throughput: `stylize_video` on the
shared Big Buck Bunny clip (decode, stylize, encode, audio copied), in frames per second.

    python benchmarks/infer_speed.py [--model weights/starry_night.safetensors] [--repeats 3]
"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from fastnst.export import export, quantize_int8  # noqa: E402
from fastnst.inference import Stylizer  # noqa: E402
from fastnst.video import probe, stylize_video  # noqa: E402

DATA = ROOT.parent / "shared" / "data"
SIZES = [(256, 256), (512, 512), (1024, 1024), (1920, 1080)]


def median_latency(fn, x, repeats):
    fn(x)  # warm-up
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn(x)
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=str(ROOT / "weights" / "starry_night.safetensors"))
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    ap.add_argument("--video", default=str(DATA / "video" / "big_buck_bunny_640x360.mp4"))
    ap.add_argument("--skip-video", action="store_true")
    args = ap.parse_args()

    cuda = args.device != "cpu" and torch.cuda.is_available()
    tmp = Path(tempfile.mkdtemp())
    fp32 = export(args.model, tmp / "m.onnx")["path"]
    backends = {"pytorch eager": Stylizer(args.model, "cuda" if cuda else "cpu", fp16=False),
                "onnxruntime fp32": Stylizer(str(fp32), args.device)}
    q = quantize_int8(fp32, tmp / "m.int8.onnx", DATA / "coco")
    backends["onnxruntime int8"] = Stylizer(str(q["path"]), "cpu")
    if cuda:
        backends["onnxruntime fp16"] = Stylizer(str(export(args.model, tmp / "m.fp16.onnx", fp16=True)["path"]),
                                                args.device)

    dev = torch.cuda.get_device_name() if cuda else \
        f"CPU ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"
    print(f"infer_speed: {dev}; torch {torch.__version__}; model {args.model}; batch 1; "
          f"median of {args.repeats} after 1 warm-up; int8 PSNR vs fp32 {q['psnr_vs_fp32_db']:.1f} dB")
    header = f"{'size':<11}" + "".join(f"{name:>20}" for name in backends)
    print(header + "   (seconds; x = speedup over pytorch eager)")
    rng = np.random.default_rng(0)
    for w, h in SIZES:
        x = rng.random((1, 3, h, w), dtype=np.float32)
        lat = {name: median_latency(s.stylize_batch, x, args.repeats) for name, s in backends.items()}
        base = lat["pytorch eager"]
        print(f"{f'{w}x{h}':<11}" + "".join(f"{t:>12.3f} ({base / t:4.2f}x)" for t in lat.values()), flush=True)

    if not args.skip_video:
        info = probe(Path(args.video))
        for name in ("onnxruntime fp32", "onnxruntime int8"):
            t = time.perf_counter()
            n = stylize_video(Path(args.video), tmp / f"{name.split()[-1]}.mp4", backends[name])
            dt = time.perf_counter() - t
            print(f"video {Path(args.video).name} ({info['width']}x{info['height']}, {info['frames']} frames, audio "
                  f"copied) with {name}: {n / dt:.2f} frames/s")


if __name__ == "__main__":
    main()
