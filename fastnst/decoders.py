"""Universal style transfer's networks (Li et al. 2017) and their training.

The loss network is cut into stages that end at the levels of ANY_STYLE_LEVELS (relu1_1 ... relu4_1);
one decoder per level maps that level's features back to an image. The decoders are trained on
photos only (no style images): the pixel error of the reconstruction, the error of its features, and
the error of the features of decoding one photo's features transformed with another's statistics.
At run time anystyle.py whitens and re-colours the features between encoder and decoder (numpy), so
the exported stages run without torch.

A decoders file is safetensors: `decoder<k>.<param>` for each level k (1 = relu1_1), with metadata
(key "fastnst") saying the format, the loss network, the width and how the decoders were trained.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import json
import math
import signal
import time
import warnings
from pathlib import Path

import numpy as np

import torch
from torch import nn

import fastnst
from fastnst.config import (ANY_STYLE_LEVELS, DECODER_RESUMABLE, EIGEN_FLOOR, TORCHVISION_FEATURE_RATIO,
                            DecoderConfig)
from fastnst.errors import Interrupted, TrainingDiverged, UserError
from fastnst.files import atomic_path, check_writable, file_mode
from fastnst.lossnet import VGG_CONFIGS, VGGFeatures

DECODERS_FORMAT = "fastnst-decoders-1"
CHECKPOINT_FORMAT = "fastnst-decoders-checkpoint-1"


class Normalise(nn.Module):
    """RGB in [0, 1] -> the loss network's input convention, as a 1x1 convolution (exact, and one ONNX op)."""

    def __init__(self, vgg: VGGFeatures):
        super().__init__()
        order = [2, 1, 0] if vgg.bgr else [0, 1, 2]
        weight = torch.zeros(3, 3, 1, 1)
        for out_ch, in_ch in enumerate(order):
            weight[out_ch, in_ch] = vgg.scale.flatten()[out_ch]
        self.conv = nn.Conv2d(3, 3, 1)
        self.conv.weight.data.copy_(weight)
        self.conv.bias.data.copy_(vgg.shift.flatten())

    def forward(self, x):
        return self.conv(x)


def encoder_stages(loss_net: str = "vgg19", weights: str = "bundled") -> nn.ModuleList:
    """Stage k maps the features of level k-1 (stage 0: the image) to those of level k; frozen."""
    vgg = VGGFeatures(loss_net, weights, layers=list(ANY_STYLE_LEVELS))
    stages, current = [], [Normalise(vgg)]
    for name, layer in vgg.body.named_children():
        current.append(layer)
        if name in ANY_STYLE_LEVELS:
            stages.append(nn.Sequential(*current))
            current = []
    return nn.ModuleList(stages).requires_grad_(False).eval()


def encode(stages: nn.ModuleList, x: torch.Tensor, level: int) -> torch.Tensor:
    """The features of `x` (N x 3 x H x W in [0, 1]) at level `level` (0 = relu1_1)."""
    for stage in stages[: level + 1]:
        x = stage(x)
    return x


# The root mean square of the bundled VGG19's features of photos at each level (relu1_1 ... relu4_1):
# a decoder divides its input by it, so every level starts from features of about unit size.
FEATURE_RMS = (40.0, 200.0, 300.0, 1000.0)


class Scale(nn.Module):
    def __init__(self, factor: float):
        super().__init__()
        self.factor = factor

    def forward(self, x):
        return x * self.factor


def make_decoder(level: int, width: float, loss_net: str = "vgg19", convention: str = "caffe") -> nn.Sequential:
    """The mirror of the loss network up to level `level`: each convolution reversed (its width scaled by
    `width`, except the features in and the RGB out), each pooling a nearest-neighbour upsampling."""
    rms = FEATURE_RMS[level] / (TORCHVISION_FEATURE_RATIO if convention == "torchvision" else 1.0)
    convs, c_in, block, first = [], 3, 1, True
    for v in VGG_CONFIGS[loss_net]:  # the encoder's convolutions (in, out) and poolings, up to this level
        if v == "M":
            convs.append(v)
            block, first = block + 1, True
            continue
        convs.append((c_in, v))
        c_in = v
        if block == level + 1 and first:
            break
        first = False
    c, layers = convs[-1][1], [Scale(1.0 / rms)]
    for item in reversed(convs):
        if item == "M":
            layers.append(nn.Upsample(scale_factor=2, mode="nearest"))
            continue
        out = 3 if item[0] == 3 else max(8, round(item[0] * width))
        layers += [nn.ReflectionPad2d(1), nn.Conv2d(c, out, 3)]
        if out != 3:
            layers.append(nn.ReLU())
        c = out
    return nn.Sequential(*layers)


class Decoders(nn.Module):
    """One decoder per level of ANY_STYLE_LEVELS."""

    def __init__(self, width: float = 1.0, loss_net: str = "vgg19", vgg_weights: str = "bundled"):
        super().__init__()
        self.width, self.loss_net, self.vgg_weights = width, loss_net, vgg_weights
        convention = "caffe" if vgg_weights == "bundled" else "torchvision"
        for k in range(len(ANY_STYLE_LEVELS)):
            self.add_module(f"decoder{k + 1}", make_decoder(k, width, loss_net, convention))

    def level(self, k: int) -> nn.Sequential:
        return getattr(self, f"decoder{k + 1}")


def transferred(features: torch.Tensor) -> torch.Tensor:
    """Each photo's features whitened and re-coloured with the next photo's of the batch: the transform of
    `stylize --style` (anystyle.whiten_colour, numpy, which a test holds this to), batched on the features'
    device with the eigendecomposition in float64, with photos standing in for style images."""
    f = features.detach().flatten(2).float()
    n = f.shape[2]
    mean = f.double().mean(2, keepdim=True)
    cov = ((f @ f.transpose(1, 2)).double() - n * mean @ mean.transpose(1, 2)) / max(n - 1, 1)
    values, vectors = torch.linalg.eigh(cov)
    keep = values > values[:, -1:].clamp(min=1e-12) * EIGEN_FLOOR  # as anystyle._eigen: tiny directions dropped
    root = torch.where(keep, values.clamp(min=1e-300).sqrt(), 0.0)
    whiten = (vectors * torch.where(keep, 1.0 / root, 0.0)[:, None]) @ vectors.transpose(1, 2)
    colour = (vectors * root[:, None]) @ vectors.transpose(1, 2)
    transform = colour.roll(-1, 0) @ whiten  # one C x C matrix and a bias per photo, as whiten_colour folds them
    bias = mean.roll(-1, 0) - transform @ mean
    out = transform.float() @ f + bias.float()
    return out.to(features.dtype).view_as(features)


def reconstruction_losses(stages: nn.ModuleList, decoders: Decoders, x: torch.Tensor, feature_weight: float,
                          transfer_weight: float = 0.0):
    """Per level: the pixel MSE of decoding x's features; the MSE of the reconstruction's features relative
    to the mean square of x's (scale-free across levels); and the same relative MSE for decoding the
    transferred features (which have no image to compare pixels with)."""
    losses, features = {}, x
    for k, stage in enumerate(stages):
        with torch.no_grad():
            features = stage(features)
        out = decoders.level(k)(features)
        losses[f"pixel{k + 1}"] = torch.mean((out - x) ** 2)
        if feature_weight:
            rec = encode(stages, out, k)
            losses[f"feature{k + 1}"] = torch.mean((rec - features) ** 2) / torch.mean(features**2)
        if transfer_weight:
            target = transferred(features)
            rec = encode(stages, decoders.level(k)(target), k)
            losses[f"transfer{k + 1}"] = torch.mean((rec - target) ** 2) / torch.mean(target**2)
    return losses


# -- the decoders file ------------------------------------------------------------------------------

def save_decoders(path: Path, decoders: Decoders, metadata: dict, fp16: bool = True) -> None:
    """Write the decoders (fp16 by default: half the size) and their metadata, atomically."""
    from safetensors.torch import save_file

    state = {k: (v.half() if fp16 else v.float()).contiguous().cpu() for k, v in decoders.state_dict().items()}
    meta = {"format": DECODERS_FORMAT, "fastnst_version": fastnst.__version__, "levels": list(ANY_STYLE_LEVELS),
            "width": decoders.width, "loss_network": decoders.loss_net, "storage": "fp16" if fp16 else "fp32",
            **metadata}
    with atomic_path(path) as tmp:
        save_file(state, str(tmp), metadata={"fastnst": json.dumps(meta, sort_keys=True)})


def read_decoders_metadata(path: str | Path) -> dict | None:
    """The metadata of a decoders file, or None for another safetensors file."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), "pt") as f:
            raw = (f.metadata() or {}).get("fastnst")
    except Exception as e:
        raise UserError(f"{path}: not a readable safetensors file ({e.__class__.__name__})") from None
    meta = json.loads(raw) if raw else None
    return meta if isinstance(meta, dict) and meta.get("format") == DECODERS_FORMAT else None


def load_decoders(path: str | Path, device: torch.device | str = "cpu") -> tuple[Decoders, nn.ModuleList, dict]:
    """(decoders, the encoder stages they invert, metadata) of a decoders file."""
    from safetensors.torch import load_file

    meta = read_decoders_metadata(path)
    if meta is None:
        raise UserError(f"{path}: not a fastnst decoders file (train one with `fastnst train-decoders`)")
    decoders = Decoders(meta["width"], meta["loss_network"], meta.get("vgg_weights", "bundled"))
    decoders.load_state_dict({k: v.float() for k, v in load_file(str(path)).items()})
    stages = encoder_stages(meta["loss_network"], meta.get("vgg_weights", "bundled"))
    return decoders.to(device).eval().requires_grad_(False), stages.to(device), meta


# -- training -----------------------------------------------------------------------------------------

def _config(resume: str | Path | None, options: dict) -> tuple[DecoderConfig, dict | None]:
    if resume is None:
        return DecoderConfig(**options), None
    ckpt = torch.load(str(resume), map_location="cpu", weights_only=True) if Path(resume).is_file() else None
    if ckpt is None or ckpt.get("format") != CHECKPOINT_FORMAT:
        raise UserError(f"{resume}: not a checkpoint of `fastnst train-decoders`")
    fixed = [k for k, v in options.items() if k not in DECODER_RESUMABLE and v != ckpt["config"].get(k)]
    if fixed:
        raise UserError(f"--{fixed[0].replace('_', '-')} cannot change when resuming (it is the checkpoint's "
                        f"{ckpt['config'][fixed[0]]!r})")
    return DecoderConfig(**{**ckpt["config"], **options}), ckpt


def _init_from(decoders: Decoders, cfg: DecoderConfig) -> dict:
    """Load trained decoders into `decoders` (same width and loss network); what the metadata records of them."""
    from fastnst.files import sha256_file

    path = Path(cfg.init_from)
    if not path.is_file():
        raise UserError(f"--init-from {path}: no such decoders file")
    meta = read_decoders_metadata(path)
    if meta is None:
        raise UserError(f"--init-from {path}: not a fastnst decoders file")
    if (meta["width"], meta["loss_network"]) != (cfg.width, cfg.loss_net):
        raise UserError(f"--init-from {path}: its decoders have width {meta['width']} on {meta['loss_network']}, "
                        f"this run {cfg.width} on {cfg.loss_net}")
    from safetensors.torch import load_file

    decoders.load_state_dict({k: v.float() for k, v in load_file(str(path)).items()})
    return {"path": str(path), "sha256": sha256_file(path), "steps": meta.get("steps"),
            "config": meta.get("config"), "init_from": meta.get("init_from")}


def train_decoders(*, resume: str | Path | None = None, log=None, **options) -> Path:
    """Train the decoders as `fastnst train-decoders` does; returns the decoders file. `options` are
    DecoderConfig's fields. Ctrl-C and SIGTERM write a checkpoint; --resume continues exactly."""
    from fastnst.data import Position, open_training_data
    from fastnst.devices import describe, resolve_device
    from fastnst.training import atomic_torch_save, decayed_lr

    cfg, ckpt = _config(resume, options)
    log = log or (lambda *a: None)
    out = Path(cfg.out)
    check_writable(out / "decoders.safetensors")
    out.mkdir(parents=True, exist_ok=True)
    device = resolve_device(cfg.device)

    # the networks, the optimizer and the data
    torch.manual_seed(cfg.seed)
    stages = encoder_stages(cfg.loss_net, cfg.vgg_weights).to(device)
    decoders = Decoders(cfg.width, cfg.loss_net, cfg.vgg_weights).to(device)
    optimizer = torch.optim.Adam(decoders.parameters(), lr=cfg.lr)
    step, position, history, init_info = 0, Position(), [], None
    if cfg.init_from and ckpt is None:
        init_info = _init_from(decoders, cfg)
    if ckpt is not None:
        decoders.load_state_dict(ckpt["decoders"])
        optimizer.load_state_dict(ckpt["optimizer"])
        step, position, history = ckpt["step"], Position(*ckpt["position"]), ckpt["history"]
        init_info = ckpt.get("init_from")
    data = open_training_data(cfg.data, device, cfg.image_size, cfg.workers)
    batches = data.stream(cfg.batch_size, cfg.image_size, cfg.seed, position, cfg.workers)
    log(f"train-decoders: {sum(p.numel() for p in decoders.parameters()) / 1e6:.2f}M parameters (width "
        f"{cfg.width}) on {describe(device)}; {data.description}; step {step} of {cfg.steps}")

    def save_checkpoint() -> Path:
        path = out / "checkpoint.pt"
        atomic_torch_save({"format": CHECKPOINT_FORMAT, "config": dataclasses.asdict(cfg), "step": step,
                           "position": [position.epoch, position.offset], "history": history,
                           "decoders": decoders.state_dict(), "optimizer": optimizer.state_dict(),
                           "init_from": init_info}, path)
        return path

    stop = {"signal": None}
    handlers = {s: signal.signal(s, lambda signum, _: stop.update(signal=signum))
                for s in (signal.SIGINT, signal.SIGTERM)}
    window, t0 = {}, time.perf_counter()
    try:
        while step < cfg.steps:
            # a batch of photos
            batch = next(batches)
            x = batch.images if batch.images.is_floating_point() else batch.images.to(device).float().div_(255.0)
            # a step on every level's reconstruction
            for group in optimizer.param_groups:
                group["lr"] = decayed_lr(cfg.lr, cfg.lr_decay, step, cfg.steps)
            losses = reconstruction_losses(stages, decoders, x, cfg.feature_weight, cfg.transfer_weight)
            weights = {"pixel": 1.0, "feature": cfg.feature_weight, "transfer": cfg.transfer_weight}
            total = sum(weights[k.rstrip("0123456789")] * v for k, v in losses.items())
            optimizer.zero_grad(set_to_none=True)
            total.backward()
            optimizer.step()
            step, position = step + 1, batch.position
            for k, v in {**losses, "total": total}.items():
                window[k] = window.get(k, 0.0) + v.detach()
            # logs, stops and checkpoints
            if step % cfg.log_every == 0 or step == cfg.steps:
                n = cfg.log_every if step % cfg.log_every == 0 else step % cfg.log_every
                record = {"step": step, **{k: float(v) / n for k, v in window.items()},
                          "images_per_s": n * cfg.batch_size / (time.perf_counter() - t0)}
                if not math.isfinite(record["total"]):
                    raise TrainingDiverged(f"the loss became {record['total']} by step {step}; training stopped "
                                           f"(the last checkpoint is {out / 'checkpoint.pt'}): try a lower --lr")
                history.append(record)
                with open(out / "log.jsonl", "a") as f:
                    f.write(json.dumps(record) + "\n")
                log(f"step {step}/{cfg.steps}  total {record['total']:.4g}  " + " ".join(
                    f"{k} {record[k]:.3g}" for k in losses) + f"  {record['images_per_s']:.1f} img/s")
                window, t0 = {}, time.perf_counter()
            if stop["signal"] is not None:
                raise Interrupted(f"interrupted at step {step}; checkpoint written to {save_checkpoint()}; "
                                  f"continue with --resume")
            if cfg.checkpoint_every and step % cfg.checkpoint_every == 0:
                save_checkpoint()
    finally:
        for s, h in handlers.items():
            signal.signal(s, h)

    # the decoders file
    save_checkpoint()
    path = out / "decoders.safetensors"
    save_decoders(path, decoders, {"config": dataclasses.asdict(cfg), "vgg_weights": cfg.vgg_weights,
                                   "steps": step, "images_seen": step * cfg.batch_size, "device": describe(device),
                                   "final_losses": history[-1] if history else None, "init_from": init_info})
    log(f"wrote {path} (step {step})")
    return path


class TorchStages:
    """A decoders file and the encoder stages it inverts, on PyTorch (numpy in and out, as OnnxStages)."""

    def __init__(self, path: Path, device: str = "auto"):
        from fastnst.devices import resolve_device

        self.device = resolve_device(device)
        self.decoders, self.stages, self.metadata = load_decoders(path, self.device)
        self.backend = f"PyTorch ({self.device})"

    @torch.no_grad()
    def encode(self, image, level: int):
        return encode(self.stages, torch.from_numpy(image[None]).to(self.device), level)[0].cpu().numpy()

    @torch.no_grad()
    def decode(self, level: int, features):
        return self.decoders.level(level)(torch.from_numpy(features[None]).to(self.device))[0].cpu().numpy()


# -- export -------------------------------------------------------------------------------------------

def export_any_style(path: str | Path, out: str | Path | None = None, opset: int = 18) -> dict:
    """Export a decoders file to a folder of ONNX stages (encoder<k>.onnx, decoder<k>.onnx; dynamic batch,
    height and width), each checked against PyTorch at a size it was not traced with; the folder
    appears whole or not at all."""
    import shutil
    import tempfile

    import onnx
    import onnxruntime as ort
    from torch.export import Dim

    from fastnst.modelfile import write_onnx_metadata

    path = Path(path)
    decoders, stages, meta = load_decoders(path)
    out = Path(out) if out else path.with_suffix("")
    if out.exists():
        raise UserError(f"{out}: already exists; remove it or give another --out")
    check_writable(out / "decoder1.onnx")
    tmp, worst = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent)), 0.0
    widths = [s[-2].out_channels for s in stages]  # each stage ends with a convolution and its ReLU
    try:
        for k in range(len(ANY_STYLE_LEVELS)):
            for name, module, channels in ((f"encoder{k + 1}", stages[k], 3 if k == 0 else widths[k - 1]),
                                           (f"decoder{k + 1}", decoders.level(k), widths[k])):
                file = tmp / f"{name}.onnx"
                dims = {0: Dim("batch", min=1, max=4096), 2: Dim("height", min=1, max=1 << 16),
                        3: Dim("width", min=1, max=1 << 16)}
                with torch.no_grad(), warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
                    warnings.simplefilter("ignore")
                    torch.onnx.export(module, (torch.rand(2, channels, 16, 24),), str(file), dynamo=True,
                                      opset_version=opset, input_names=["input"], output_names=["output"],
                                      dynamic_shapes=(dims,), verbose=False, external_data=False)
                model = onnx.load(str(file))
                write_onnx_metadata(model, meta, "fp32")
                onnx.checker.check_model(model)
                onnx.save(model, str(file))
                # checked on inputs of the stage's own scale, at an untraced size
                x = torch.rand(1, channels, 34, 46) * (1.0 if name == "encoder1" else FEATURE_RMS[k - (name[0] == "e")])
                with torch.no_grad():
                    expected = module(x).numpy()
                session = ort.InferenceSession(str(file), providers=["CPUExecutionProvider"])
                got = session.run(None, {"input": x.numpy()})[0]
                error = float(np.abs(got - expected).max() / max(np.abs(expected).max(), 1e-6))
                if got.shape != expected.shape or error > 1e-4:
                    raise UserError(f"export: {name} on onnxruntime differs from PyTorch (relative {error:.2g}, "
                                    f"shapes {got.shape} and {expected.shape})")
                worst = max(worst, error)
        tmp.chmod(file_mode() | (file_mode() & 0o444) >> 2)  # a folder's mode from the umask: x where r
        tmp.rename(out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return {"path": out, "max_relative_diff": worst, "opset": opset,
            "size_bytes": sum(f.stat().st_size for f in out.iterdir())}
