"""Scaling of distributed training: 1 process against N processes (torchrun), same global batch.

Runs the same short training twice in one go, `fastnst train` with batch B*N and
`torchrun --nproc-per-node N -m fastnst train` with batch B per process, and compares the
images/s their logs report (first logged interval dropped as warm-up). Efficiency = N-process
images/s divided by 1-process images/s (1.0 means no gain; N would be perfect scaling on N
devices). On a CPU the processes share the machine's cores, so expect no gain there.

    python benchmarks/ddp_scaling.py [--nproc 2] [--batch 4] [--image-size 128] [--steps 12] [--device auto]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"


def run(nproc: int, batch: int, args, out: Path) -> float:
    common = ["--style", str(DATA / "styles" / "starry_night.jpg"), "--data", str(DATA / "coco"),
              "--steps", str(args.steps), "--image-size", str(args.image_size), "--batch-size", str(batch),
              "--log-every", "2", "--sample-every", "0", "--checkpoint-every", "0", "--device", args.device,
              "--out", str(out)]
    if nproc == 1:
        cmd = [sys.executable, "-m", "fastnst", "train", *common]
    else:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", str(nproc), "-m", "fastnst",
               "train", *common]
    env = dict(os.environ)
    if args.device == "cpu" or not torch.cuda.is_available():
        env["OMP_NUM_THREADS"] = str(max(1, (os.cpu_count() or 1) // nproc))  # share the cores fairly
    subprocess.run(cmd, check=True, env=env, capture_output=True, text=True)
    rates = [json.loads(line)["images_per_s"] for line in (out / "log.jsonl").read_text().splitlines()]
    return statistics.median(rates[1:])


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--nproc", type=int, default=2)
    ap.add_argument("--batch", type=int, default=4, help="per process in the N-process run")
    ap.add_argument("--image-size", type=int, default=128)
    ap.add_argument("--steps", type=int, default=12)
    ap.add_argument("--device", default="auto")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp())
    one = run(1, args.batch * args.nproc, args, tmp / "one")
    many = run(args.nproc, args.batch, args, tmp / "many")
    dev = torch.cuda.get_device_name() if torch.cuda.is_available() and args.device != "cpu" else \
        f"CPU ({platform.machine()}, {os.cpu_count()} cores)"
    print(f"ddp_scaling: {dev}, torch {torch.__version__}, global batch {args.batch * args.nproc}, "
          f"{args.image_size}px, {args.steps} steps")
    print(f"1 process : {one:.2f} images/s")
    print(f"{args.nproc} processes: {many:.2f} images/s")
    print(f"efficiency {many / one:.2f} (ideal {args.nproc} on {args.nproc} devices)")


if __name__ == "__main__":
    main()
