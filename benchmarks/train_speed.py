"""Training throughput: fastnst's training loop against a plain fp32 eager loop, in one run.

The plain loop is the textbook one (the PyTorch fast_neural_style example's shape): images decoded
and cropped on the CPU by worker threads, copied to the device, fp32, output and content each
through the whole loss network, the loss read every step. fastnst's loop is the trainer's:
`fastnst.training.make_train_step` with, on CUDA, images decoded once and cropped on the GPU,
bf16 autocast (Gram matrices fp32), channels-last, fused Adam, one loss-network forward for output
and content, torch.compile, no host synchronisation. Both train the same network on the same real
photos against the same objective.

Also printed: the FLOPs of one optimised step (counted by torch's FlopCounterMode on the eager
step), the rate the step achieves, and its fraction of the device's measured bf16 matrix-multiply
rate; the time 160,000 images (Johnson 2016's budget) take at the measured rate. With --ablate,
every change is measured on its own, added one at a time. Candidates (changes measured but not yet
the trainer's default, such as CUDA graphs) are measured on CUDA with or without --ablate. With
--profile N, torch.profiler's table of what takes the time in N steps of the default loop. With
--styles N, the default loop training N styles at once (one network each, their outputs through
the loss network as one batch, the content features computed once: `fastnst train --style a
--style b ...`) against one style alone: images/s per style and the speedup over training the N
styles one after another.

    python benchmarks/train_speed.py [--batch-sizes 4,16] [--image-size 256] [--steps 30] [--ablate]
                                     [--profile STEPS] [--styles N]
"""

from __future__ import annotations

import argparse
import copy
import platform
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from fastnst.data import (BatchStream, DeviceBatchStream, FolderSource, PackedImages,  # noqa: E402
                          pack_size_for)
from fastnst.images import load_image_tensor  # noqa: E402
from fastnst.config import LossConfig  # noqa: E402
from fastnst.losses import Objective  # noqa: E402
from fastnst.network import TransformerNet  # noqa: E402
from fastnst.devices import resolve_device, use_gpu_speedups  # noqa: E402
from fastnst.training import make_styles_step  # noqa: E402

DATA = ROOT.parent / "shared" / "data"
FULL_RUN_IMAGES = 160_000
# Public-domain styles, in the order --styles N takes them.
STYLES = ["starry_night", "the_scream", "wave", "composition_vii", "shipwreck_of_the_minotaur", "tahiti_gauguin",
          "vg_houses", "woman_with_hat_matisse"]

# Cumulative: each variant adds one change (a switch of `Bench.prepare`) to the one before. DEFAULT
# is what the trainer does on CUDA; the variants after it are candidates, not (yet) the default.
CHANGES = [
    ("plain fp32 eager", None),
    ("+ data on the device", "device_data"),
    ("+ fastnst step (content to relu2_2, no loss read)", "fastnst_step"),
    ("+ bf16 autocast", "bf16"),
    ("+ cuDNN autotune, TF32 matmul", "autotune"),
    ("+ channels-last", "channels_last"),
    ("+ content and output in one VGG forward", "batched_vgg"),
    ("+ fused Adam", "fused_adam"),
    ("+ torch.compile (fastnst default)", "compile"),
    ("+ CUDA graphs (compile mode reduce-overhead)", "cuda_graphs"),
]


def cumulative(changes) -> list[tuple[str, dict]]:
    """(name, the switches of this change and every one before it) for each change."""
    variants, switches = [], {}
    for name, switch in changes:
        switches = {**switches, switch: True} if switch else {}
        variants.append((name, switches))
    return variants


VARIANTS = cumulative(CHANGES)
DEFAULT = "+ torch.compile (fastnst default)"
# Process-wide switches some variants turn on: each run starts from PyTorch's defaults again.
TORCH_DEFAULTS = (torch.backends.cudnn.benchmark, torch.backends.cuda.matmul.allow_tf32,
                  torch.backends.cudnn.allow_tf32)


def reset_torch_switches():
    (torch.backends.cudnn.benchmark, torch.backends.cuda.matmul.allow_tf32,
     torch.backends.cudnn.allow_tf32) = TORCH_DEFAULTS


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


def measure(step, next_batch, device, warmup: int, steps: int) -> float:
    """Seconds per step (data included), from the time of `steps` steps after `warmup`."""
    for _ in range(warmup):
        step(next_batch())
    sync(device)
    t = time.perf_counter()
    for _ in range(steps):
        step(next_batch())
    sync(device)
    return (time.perf_counter() - t) / steps


def matmul_rate(device) -> float | None:
    """Measured bf16 matrix-multiply FLOP/s (8192^3, mean of 10 after 3 warm-ups), CUDA only."""
    if device.type != "cuda":
        return None
    a = torch.randn(8192, 8192, device=device, dtype=torch.bfloat16)
    b = torch.randn(8192, 8192, device=device, dtype=torch.bfloat16)
    for _ in range(3):
        a @ b
    sync(device)
    t = time.perf_counter()
    for _ in range(10):
        a @ b
    sync(device)
    return 10 * 2 * 8192**3 / (time.perf_counter() - t)


def step_flops(objective, batch_size, image_size, device) -> int:
    """FLOPs of one training step (forward and backward of network, loss network and losses)."""
    from torch.utils.flop_counter import FlopCounterMode

    net = TransformerNet().to(device)
    x = torch.rand(batch_size, 3, image_size, image_size, device=device)
    with FlopCounterMode(display=False) as counter:
        objective(net(x), x)["total"].backward()
    return counter.get_total_flops()


class Bench:
    def __init__(self, args, device):
        self.args, self.device = args, device
        self.objective = Objective.from_config(LossConfig()).to(device)
        self.styles = [load_image_tensor(path, 512)
                       for path in [args.style, *[DATA / "styles" / f"{n}.jpg" for n in STYLES[1:args.styles]]]]
        self.objective.set_style(self.styles[0])
        self.source = FolderSource(args.data)
        t = time.perf_counter()
        self.packed = PackedImages.decode(self.source, pack_size_for(args.image_size), device)
        self.decode_s = time.perf_counter() - t

    def prepare(self, batch_size: int, opts: dict, styles: int = 1):
        """Fresh networks (one per style), optimizers and data stream with the switches of `opts`:
        (step, next_batch)."""
        args, device = self.args, self.device
        torch._dynamo.reset()
        reset_torch_switches()
        torch.manual_seed(0)
        objective = copy.deepcopy(self.objective)
        objectives = [objective]
        for style in self.styles[1:styles]:  # the trainer's objectives share one loss network
            objectives.append(Objective(objective.lossnet, objective.config).to(device))
            objectives[-1].set_style(style)
        nets = [TransformerNet().to(device).train() for _ in range(styles)]
        for net, o in zip(nets, objectives):
            use_gpu_speedups(device, net, o, autotune=opts.get("autotune", False),
                             channels_last=opts.get("channels_last", False), batched_vgg=opts.get("batched_vgg", False))
        fused = opts.get("fused_adam", False) and device.type == "cuda"
        opts_ = [torch.optim.Adam(net.parameters(), 1e-3, fused=fused) for net in nets]
        if opts.get("fastnst_step"):
            cpu = torch.device("cpu")  # make_styles_step uses bf16 autocast on CUDA only
            step = make_styles_step(nets, objectives, opts_, device if opts.get("bf16") else cpu,
                                    compile=opts.get("compile", False),
                                    compile_mode="reduce-overhead" if opts.get("cuda_graphs") else None)
        else:
            if styles != 1:
                raise ValueError("the plain loop trains one style")
            step = lambda x: plain_step(nets[0], objective, opts_[0], x)  # noqa: E731
        if opts.get("device_data"):
            batches = iter(DeviceBatchStream(self.packed, batch_size, args.image_size, seed=0))
            next_batch = lambda: next(batches).images  # noqa: E731
        else:
            cpu_batches = iter(BatchStream(self.source, batch_size, args.image_size, seed=0, workers=4))
            next_batch = lambda: next(cpu_batches).images.to(device, non_blocking=True).float().div_(255)  # noqa: E731
        return step, next_batch

    def warmup(self, opts: dict) -> int:
        return self.args.warmup + (self.args.compile_warmup if opts.get("compile") else 0)

    def run(self, batch_size: int, opts: dict, styles: int = 1) -> float:
        step, next_batch = self.prepare(batch_size, opts, styles)
        return measure(step, next_batch, self.device, self.warmup(opts), self.args.steps)

    def profile(self, batch_size: int, opts: dict, steps: int, rows: int) -> str:
        """torch.profiler's table of the operators and kernels that take the time of `steps` steps."""
        from torch.profiler import ProfilerActivity, profile

        step, next_batch = self.prepare(batch_size, opts)
        for _ in range(self.warmup(opts)):
            step(next_batch())
        sync(self.device)
        cuda = self.device.type == "cuda"
        activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
        with profile(activities=activities) as prof:
            for _ in range(steps):
                step(next_batch())
            sync(self.device)
        key = "self_device_time_total" if cuda else "self_cpu_time_total"
        return prof.key_averages().table(sort_by=key, row_limit=rows, max_name_column_width=70)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--batch-sizes", default="4,16")
    ap.add_argument("--image-size", type=int, default=256)
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--compile-warmup", type=int, default=5, help="extra warm-up steps when compiling")
    ap.add_argument("--ablate", action="store_true", help="measure every change on its own")
    ap.add_argument("--profile", type=int, default=0, metavar="STEPS",
                    help="also profile this many steps of the default loop (largest batch) and print the "
                         "operators and kernels that take the time")
    ap.add_argument("--profile-rows", type=int, default=30)
    ap.add_argument("--styles", type=int, default=1, choices=range(1, len(STYLES) + 1), metavar="N",
                    help=f"also measure N styles trained at once against one alone (N up to {len(STYLES)})")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--data", default=str(DATA / "coco"))
    ap.add_argument("--style", default=str(DATA / "styles" / "starry_night.jpg"))
    args = ap.parse_args()

    device = resolve_device(args.device)
    bench = Bench(args, device)
    default = next(v for v in VARIANTS if v[0] == DEFAULT)
    candidates = VARIANTS[VARIANTS.index(default) + 1:]
    variants = VARIANTS if args.ablate else [VARIANTS[0], default, *candidates]
    if device.type != "cuda":  # the trainer neither compiles nor keeps a folder's images in memory there
        default = ("fastnst on the CPU (worker decoding, fastnst step)", dict(fastnst_step=True))
        variants = [v for v in variants if not v[1].get("compile")] if args.ablate else [VARIANTS[0]]
        variants, candidates = [*variants, default], []
    sizes = [int(b) for b in args.batch_sizes.split(",")]

    dev = torch.cuda.get_device_name(device) if device.type == "cuda" else \
        f"CPU ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"
    rate = matmul_rate(device)
    print(f"train_speed: device {dev}, torch {torch.__version__}, {args.image_size}x{args.image_size} crops, "
          f"Johnson network, VGG19 to relu5_1, {args.steps} timed steps after warm-up, data included")
    print(f"data: {bench.source.description}, decoded once to {device} in {bench.decode_s:.1f} s")
    if rate:
        print(f"measured bf16 matrix multiply (8192^3): {rate / 1e12:.0f} TFLOP/s")
    results = {}
    for b in sizes:
        objective = _batched(bench.objective) if device.type == "cuda" else bench.objective
        flops = step_flops(objective, b, args.image_size, device)
        print(f"\nbatch {b}: {flops / b / 1e9:.1f} GFLOP per image per step (forward + backward)")
        print(f"  {'loop':<58}{'s/step':>9}{'images/s':>10}{'vs plain':>10}{'TFLOP/s':>9}{'of bf16 mm':>11}")
        for name, opts in variants:
            sec = bench.run(b, opts)
            results[(b, name)] = sec
            base = results[(b, variants[0][0])]
            util = f"{flops / sec / rate:>10.1%}" if rate else f"{'n/a':>10}"
            print(f"  {name:<58}{sec:>9.4f}{b / sec:>10.1f}{base / sec:>9.2f}x"
                  f"{flops / sec / 1e12:>9.1f} {util}", flush=True)
        plain = results[(b, VARIANTS[0][0])]
        best = results[(b, default[0])]
        print(f"  ratio {default[0]} / plain: {plain / best:.2f}x images/s; {FULL_RUN_IMAGES:,} images "
              f"would take {FULL_RUN_IMAGES / (b / best) / 60:.1f} min at this rate")
        for name, _ in candidates:
            print(f"  candidate {name}: {plain / results[(b, name)]:.2f}x plain, "
                  f"{best / results[(b, name)]:.2f}x the default")
    if args.styles > 1:
        print(f"\n{args.styles} styles in one run ({', '.join(STYLES[:args.styles])}), {default[0]}:")
        print(f"  {'batch':>6}{'s/step':>9}{'images/s per style':>20}{'one style alone':>17}"
              f"{'per style vs alone':>20}{'all styles vs one after another':>33}")
        for b in sizes:
            sec = bench.run(b, default[1], args.styles)
            alone = results[(b, default[0])]
            print(f"  {b:>6}{sec:>9.4f}{b / sec:>20.1f}{b / alone:>17.1f}{alone / sec:>19.2f}x"
                  f"{args.styles * alone / sec:>32.2f}x", flush=True)
    if args.profile:
        b = sizes[-1]
        print(f"\nprofile: {default[0]}, batch {b}, {args.profile} steps after warm-up")
        print(bench.profile(b, default[1], args.profile, args.profile_rows))


def _batched(objective):
    """The objective as the optimised step runs it (output and content in one forward)."""
    o = copy.deepcopy(objective)
    o.batched_content = True
    return o


if __name__ == "__main__":
    main()
