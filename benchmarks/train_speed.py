"""Training throughput: fastnst's training step against a plain fp32 eager loop, in one run.

The plain loop is the textbook one (the PyTorch fast_neural_style example's shape): fp32, the
output and the content image each through the whole loss network, the loss read every step.
fastnst's step is the one the trainer runs (`fastnst.training.train_step`): the content image
only as deep as the content layer, no loss read, bf16 autocast with fp32 Gram matrices on CUDA. Both train the same network on the same real photos with the same
objective. Also reported: the data pipeline's own images/s, to show it keeps up.

    python benchmarks/train_speed.py [--batch-size 4] [--image-size 256] [--steps 10] [--device auto]
"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from fastnst.data import BatchStream, FolderSource  # noqa: E402
from fastnst.images import load_rgb, resize_long_side, to_tensor  # noqa: E402
from fastnst.losses import LossWeights, Objective, default_layer_weights  # noqa: E402
from fastnst.lossnet import VGGFeatures  # noqa: E402
from fastnst.network import TransformerNet  # noqa: E402
from fastnst.training import autocast_for, resolve_device, train_step  # noqa: E402

DATA = ROOT.parent / "shared" / "data"


def plain_step(net, objective, optimizer, x):
    y = net(x)
    out_feats = objective.lossnet(y)
    with torch.no_grad():
        content_feats = objective.lossnet(x)
    losses = objective.terms(out_feats, content_feats, y)
    optimizer.zero_grad(set_to_none=True)
    losses["total"].backward()
    optimizer.step()
    return losses["total"].item()  # the textbook loop reads the loss every step


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def time_loop(step, batches, device, warmup, steps):
    for i in range(warmup):
        step(batches[i % len(batches)])
    sync(device)
    times = []
    for i in range(steps):
        t = time.perf_counter()
        step(batches[i % len(batches)])
        sync(device)
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--batch-size", type=int, default=4)
    ap.add_argument("--image-size", type=int, default=256)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--data", default=str(DATA / "coco"))
    ap.add_argument("--style", default=str(DATA / "styles" / "starry_night.jpg"))
    args = ap.parse_args()

    device = resolve_device(args.device)
    src = FolderSource(args.data)
    stream = iter(BatchStream(src, args.batch_size, args.image_size, seed=0, workers=4))
    t = time.perf_counter()
    batches = [next(stream).images for _ in range(4)]
    data_rate = 4 * args.batch_size / (time.perf_counter() - t)
    batches = [b.to(device).float().div(255) for b in batches]

    c, s = default_layer_weights("vgg19")
    lossnet = VGGFeatures("vgg19", "bundled", [*c, *s])
    objective = Objective(lossnet, LossWeights(1, 1, 1, c, s)).to(device)
    objective.set_style(to_tensor(resize_long_side(load_rgb(args.style), 512)).unsqueeze(0))

    results = {}
    for name in ("plain fp32 eager", "fastnst"):
        torch.manual_seed(0)
        net = TransformerNet().to(device).train()
        opt = torch.optim.Adam(net.parameters(), 1e-3)
        if name == "fastnst":
            autocast = autocast_for(device)
            step = lambda x: train_step(net, objective, opt, x, autocast)  # noqa: E731
        else:
            step = lambda x: plain_step(net, objective, opt, x)  # noqa: E731
        results[name] = time_loop(step, batches, device, args.warmup, args.steps)

    dev = torch.cuda.get_device_name(device) if device.type == "cuda" else \
        f"CPU ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"
    print(f"train_speed: device {dev}, torch {torch.__version__}, batch {args.batch_size}, "
          f"{args.image_size}x{args.image_size}, VGG19 to relu5_1, median of {args.steps} steps "
          f"after {args.warmup} warm-up")
    print(f"{'loop':<20}{'s/step':>10}{'images/s':>12}")
    for name, sec in results.items():
        print(f"{name:<20}{sec:>10.3f}{args.batch_size / sec:>12.2f}")
    ratio = results["plain fp32 eager"] / results["fastnst"]
    print(f"ratio fastnst / plain: {ratio:.2f}x images/s")
    print(f"data pipeline alone: {data_rate:.1f} images/s (decode + crop, {args.image_size}px, 4 threads)")


if __name__ == "__main__":
    main()
