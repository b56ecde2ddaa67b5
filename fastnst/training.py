"""The training loop: Adam on the transformer network against the perceptual objective.

Everything a run needs is in `TrainConfig`, recorded in every checkpoint and in the model's
metadata. Checkpoints hold the network, the optimizer, the step, the data stream position and
every random state, and are written atomically, so `--resume` continues exactly where a run
stopped (bit for bit on the CPU). Ctrl-C and SIGTERM write a checkpoint before exiting; a
non-finite loss stops the run and leaves the last good checkpoint in place.
"""

from __future__ import annotations

import dataclasses
import gc
import json
import math
import os
import random
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

import fastnst
from fastnst import distributed
from fastnst.data import (BatchStream, DeviceBatchStream, PackedImages, Position, load_fixed_images,
                          open_training_data)
from fastnst.errors import UserError
from fastnst.files import atomic_path, sha256_file
from fastnst.images import load_rgb, resize_long_side, save_image_atomic, to_pil, to_tensor
from fastnst.losses import LossWeights, Objective, default_layer_weights
from fastnst.lossnet import VGGFeatures
from fastnst.modelfile import save_model
from fastnst.network import TransformerNet
from fastnst.teacher import TeacherPairs, teacher_loss

CHECKPOINT_NAME = "checkpoint.pt"
MODEL_NAME = "model.safetensors"
DEFAULT_STEPS = 40_000  # 160k images at batch 4: Johnson 2016's budget (two epochs of COCO)
DEFAULT_DATA = "hf:detection-datasets/coco:train"
# What may differ between a run and its resumption: its length and how it ends (the lr decay),
# where it writes, how it runs.
RESUMABLE_OVERRIDES = ("steps", "epochs", "lr_decay", "out", "device", "workers", "checkpoint_every",
                       "sample_every", "log_every", "compile")


@dataclass
class TrainConfig:
    style: str
    data: str = DEFAULT_DATA
    out: str = ""
    steps: int | None = None
    epochs: int | None = None
    batch_size: int = 4
    image_size: int = 256
    style_size: int = 512
    content_weight: float = 1.0
    style_weight: float = 1.0
    tv_weight: float = 1.0
    content_layers: dict[str, float] = field(default_factory=dict)
    style_layers: dict[str, float] = field(default_factory=dict)
    lr: float = 1e-3
    lr_decay: float = 0.0  # the last fraction of the steps over which lr falls linearly to 0 (0: constant)
    loss_net: str = "vgg19"
    vgg_weights: str = "bundled"
    width: int = 32
    blocks: int = 5
    device: str = "auto"
    checkpoint_every: int = 1000
    sample_every: int = 500
    log_every: int = 10
    workers: int = 4
    seed: int = 0
    compile: bool = True  # torch.compile the step on CUDA (a minute of compiling, then faster)
    teacher: str = ""  # a folder of Gatys-optimizer targets (fastnst optimize --content DIR)
    teacher_weight: float = 0.0
    init_from: str = ""  # start from this trained model's network (a continuation or a fine-tune)


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite."""


class Interrupted(RuntimeError):
    """Ctrl-C or SIGTERM arrived; a checkpoint was written."""


def resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise UserError("--device cuda: no CUDA GPU is available to PyTorch here")
    if device not in ("cpu", "cuda") and not device.startswith("cuda:"):
        raise UserError(f"--device {device!r}: choose auto, cpu or cuda")
    return torch.device(device)


def atomic_torch_save(obj, path: Path) -> None:
    """torch.save to a temporary file in the same folder, fsync, then rename over `path`."""
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())


def load_checkpoint(path: str | Path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: no such checkpoint")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise UserError(f"{path}: not a readable fastnst checkpoint ({e.__class__.__name__})") from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != "fastnst-checkpoint-1":
        raise UserError(f"{path}: not a fastnst training checkpoint")
    return ckpt


def autocast_for(device: torch.device):
    """bf16 autocast on CUDA (Gram matrices stay fp32 inside the objective); off elsewhere."""
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return torch.autocast(device.type, enabled=False)


def make_train_step(model: torch.nn.Module, objective: Objective, optimizer: torch.optim.Optimizer,
                    device: torch.device, compile: bool = False, compile_backend: str = "inductor",
                    teacher_weight: float = 0.0, compile_mode: str | None = None):
    """The training step: step(x) optimises on a batch x (Bx3xHxW in [0, 1]) and returns the
    detached loss terms without reading them (reading forces a host sync). With `compile`, the
    forward (network, loss network, losses) goes through torch.compile; backward follows it.
    `compile_mode` is torch.compile's mode: "reduce-overhead" also replays forward and backward
    as CUDA graphs (a candidate measured by benchmarks/train_speed.py, not the trainer's default).
    step(x, (content, target)) adds teacher_weight x the pixel MSE of the network's output on
    a teacher batch against the optimizer's targets (term "teacher"; "total" includes it)."""
    autocast = autocast_for(device)

    def losses_of(x: torch.Tensor, teacher=None) -> dict[str, torch.Tensor]:
        with autocast:
            losses = objective(model(x), x)
            if teacher is not None:
                t = teacher_weight * teacher_loss(model(teacher[0]), teacher[1])
                losses = {**losses, "teacher": t, "total": losses["total"] + t}
            return losses

    cuda_graphs = compile and compile_mode == "reduce-overhead" and device.type == "cuda"
    if compile:
        losses_of = torch.compile(losses_of, backend=compile_backend, mode=compile_mode)

    def step(x: torch.Tensor, teacher=None) -> dict[str, torch.Tensor]:
        if cuda_graphs:
            torch.compiler.cudagraph_mark_step_begin()
        optimizer.zero_grad(set_to_none=True)  # before the forward: no gradient outlives its step
        losses = losses_of(x, teacher)
        losses["total"].backward()
        optimizer.step()
        # A CUDA graph's outputs live in memory its next replay overwrites: keep copies.
        return {k: v.detach().float().clone() if cuda_graphs else v.detach().float() for k, v in losses.items()}

    return step


def use_gpu_speedups(device: torch.device, net: torch.nn.Module, objective: Objective, autotune: bool = True,
                     channels_last: bool = True, batched_vgg: bool = True) -> None:
    """What the trainer does on CUDA besides bf16 autocast and torch.compile: cuDNN autotuning and
    TF32 for what stays fp32, channels-last tensors (what the tensor-core convolutions want), one
    loss-network forward for output and content. The trainer takes all; the benchmark one by one."""
    if device.type != "cuda":
        return
    if autotune:
        torch.backends.cudnn.benchmark = True
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    if channels_last:
        net.to(memory_format=torch.channels_last)
        objective.to(memory_format=torch.channels_last)
    objective.batched_content = batched_vgg


class Trainer:
    """One training run. `run()` trains to the end and returns the model file's path."""

    def __init__(self, config: TrainConfig | None = None, resume: str | None = None,
                 overrides: dict | None = None):
        """A new run from `config`, or a resumed one from the checkpoint `resume` with the
        changes in `overrides` (only RESUMABLE_OVERRIDES may change)."""
        ckpt = load_checkpoint(resume) if resume else None
        if ckpt is not None:
            config = self._merge_resumed_config(ckpt["config"], overrides or {})
        self.config = cfg = config
        if cfg.steps is None and cfg.epochs is None:
            cfg.steps = DEFAULT_STEPS
        if not cfg.content_layers or not cfg.style_layers:
            convention = "caffe" if cfg.vgg_weights == "bundled" else "torchvision"
            c, s = default_layer_weights(cfg.loss_net, convention)
            cfg.content_layers = cfg.content_layers or c
            cfg.style_layers = cfg.style_layers or s
        self.out = Path(cfg.out or Path("runs") / Path(cfg.style).stem)
        if ckpt is None:
            self._refuse_to_overwrite()
        device = resolve_device(cfg.device)
        self.world = distributed.init(device.type)
        self.device = distributed.device_for(self.world, device)

        # Everything random below is seeded, so a fresh run is reproducible from its config.
        random.seed(cfg.seed)
        torch.manual_seed(cfg.seed)

        style_path = Path(cfg.style)
        style_img = resize_long_side(load_rgb(style_path), cfg.style_size)
        self.style_sha256 = sha256_file(style_path)
        self.source = open_training_data(cfg.data, self.device, cfg.image_size, cfg.workers)

        lossnet = VGGFeatures(cfg.loss_net, cfg.vgg_weights, [*cfg.content_layers, *cfg.style_layers])
        weights = LossWeights(cfg.content_weight, cfg.style_weight, cfg.tv_weight,
                              dict(cfg.content_layers), dict(cfg.style_layers))
        self.objective = Objective(lossnet, weights).to(self.device)
        self.objective.set_style(to_tensor(style_img).unsqueeze(0))

        self.net = TransformerNet(cfg.width, cfg.blocks).to(self.device)
        # A resumed run's network comes from its checkpoint, which also keeps where it started from.
        self.init_info = self._start_from(cfg.init_from) if cfg.init_from and ckpt is None else None
        use_gpu_speedups(self.device, self.net, self.objective)
        # Under torchrun, DDP averages the gradients of the ranks; self.net stays the plain network.
        self.model = self.net
        if self.world.distributed:
            from torch.nn.parallel import DistributedDataParallel

            self.model = DistributedDataParallel(
                self.net, device_ids=[self.device.index] if self.device.type == "cuda" else None)
        # Fused Adam: one kernel for all parameters instead of several per parameter.
        self.optimizer = torch.optim.Adam(self.net.parameters(), lr=cfg.lr, fused=self.device.type == "cuda")
        if cfg.lr_decay and self.total_steps() is None:
            raise UserError("--lr-decay needs a known length: give --steps (a streamed data set's epochs "
                            "have no known number of steps)")
        self.step, self.position, self.images_seen = 0, Position(), 0
        self.bad_examples: dict[str, str] = {}
        self.history: list[dict] = []
        if ckpt is not None:
            self._restore(ckpt)
        self.teacher = None
        if cfg.teacher:
            if cfg.teacher_weight <= 0:
                raise UserError("--teacher needs a --teacher-weight above 0")
            self.teacher = TeacherPairs(cfg.teacher, self.device)
            if self.teacher.style_sha256 != self.style_sha256:
                raise UserError(f"{cfg.teacher}: its targets were made for another style image "
                                f"({self.teacher.manifest['style']})")
        elif cfg.teacher_weight:
            raise UserError("--teacher-weight needs --teacher DIR")
        if isinstance(self.source, PackedImages):
            self.bad_examples.update(self.source.bad)
        if self.world.is_main:
            self.out.mkdir(parents=True, exist_ok=True)
            self.sample_inputs = load_fixed_images(self.source, 4, cfg.image_size)

    def close(self) -> None:
        """Leave the process group under torchrun. The DDP wrapper holds the group: drop it first,
        so the group and its threads are torn down here and not during interpreter exit, where gloo
        aborted a finished rank about once in 30 runs ("terminate called without an active exception")."""
        self.model = self.net
        gc.collect()
        distributed.shutdown(self.world)

    # -- configuration and files -------------------------------------------------------------

    @staticmethod
    def _merge_resumed_config(saved: dict, overrides: dict) -> TrainConfig:
        """A resumed run keeps its checkpoint's configuration but for RESUMABLE_OVERRIDES."""
        cfg = TrainConfig(**saved)
        bad = sorted(set(overrides) - set(RESUMABLE_OVERRIDES))
        if bad:
            raise UserError(f"--{bad[0].replace('_', '-')} cannot change when resuming: the checkpoint's "
                            f"configuration is used (only {', '.join('--' + o.replace('_', '-') for o in RESUMABLE_OVERRIDES)} may)")
        if "steps" in overrides or "epochs" in overrides:
            cfg.steps, cfg.epochs = overrides.get("steps"), overrides.get("epochs")
        for name, value in overrides.items():
            if name not in ("steps", "epochs"):
                setattr(cfg, name, value)
        return cfg

    def _start_from(self, model: str) -> dict:
        """Load a trained model's network weights (Adam starts afresh); -> what the metadata records."""
        from fastnst.inference import model_sibling, resolve_model
        from fastnst.modelfile import load_model

        path = resolve_model(model)
        if path.suffix == ".onnx":
            path = model_sibling(path, ".safetensors")
            if not path.is_file():
                raise UserError(f"--init-from {model}: needs the model's .safetensors file ({path} not found); "
                                f"an ONNX file holds no trainable network")
        net, meta, _ = load_model(path)
        if net.config() != self.net.config():
            raise UserError(f"--init-from {path}: its network has width {net.width} and {net.blocks} blocks, "
                            f"this run's width {self.net.width} and {self.net.blocks}: give --width "
                            f"{net.width} --blocks {net.blocks}")
        self.net.load_state_dict(net.state_dict())
        return {"model": str(path), "sha256": sha256_file(path), "style_name": meta["style_name"],
                "steps": meta["steps"], "images_seen": meta["images_seen"]}

    def _refuse_to_overwrite(self) -> None:
        for name in (CHECKPOINT_NAME, MODEL_NAME):
            if (self.out / name).exists():
                raise UserError(f"{self.out / name} exists: resume with --resume {self.out / CHECKPOINT_NAME} "
                                f"or choose another --out")

    def metadata(self, final_losses: dict | None) -> dict:
        cfg = self.config
        return {
            "fastnst_version": fastnst.__version__,
            "style_name": Path(cfg.style).stem,
            "style_sha256": self.style_sha256,
            "data": self.source.description,
            "loss_network": self.objective.lossnet.describe(),
            "loss": {"content_weight": cfg.content_weight, "style_weight": cfg.style_weight,
                     "tv_weight": cfg.tv_weight, "content_layers": cfg.content_layers,
                     "style_layers": cfg.style_layers},
            "config": dataclasses.asdict(cfg),
            "steps": self.step,
            "images_seen": self.images_seen,
            "final_losses": final_losses,
            "init_from": self.init_info,
            "device": torch.cuda.get_device_name(self.device) if self.device.type == "cuda" else "cpu",
            "world_size": self.world.size,
            "torch_version": torch.__version__,
        }

    def _rng_states(self) -> dict:
        states = {"torch": torch.get_rng_state(), "python": list(random.getstate()[1]),
                  "python_version": random.getstate()[0], "python_gauss": random.getstate()[2]}
        if torch.cuda.is_available():
            states["cuda"] = torch.cuda.get_rng_state_all()
        return states

    def save_checkpoint(self) -> Path:
        """Called on every rank (it gathers their data positions); only rank 0 writes."""
        path = self.out / CHECKPOINT_NAME
        positions = distributed.gather([self.position.epoch, self.position.offset], self.world)
        bad = {k: v for d in distributed.gather(self.bad_examples, self.world) for k, v in d.items()}
        if not self.world.is_main:
            distributed.barrier(self.world)
            return path
        atomic_torch_save({
            "format": "fastnst-checkpoint-1",
            "fastnst_version": fastnst.__version__,
            "config": dataclasses.asdict(self.config),
            "step": self.step,
            "images_seen": self.images_seen,
            "position": positions[0],
            "positions": positions,
            "world_size": self.world.size,
            "network": self.net.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "rng": self._rng_states(),
            "bad_examples": bad,
            "history": self.history,
            "init_from": self.init_info,
        }, path)
        distributed.barrier(self.world)
        return path

    def _restore(self, ckpt: dict) -> None:
        self.net.load_state_dict(ckpt["network"])
        self.optimizer.load_state_dict(ckpt["optimizer"])
        self.step, self.images_seen = ckpt["step"], ckpt["images_seen"]
        saved_world = ckpt.get("world_size", 1)
        if saved_world != self.world.size:
            raise UserError(f"this checkpoint was written by {saved_world} process(es): resume it with the same "
                            f"number (now {self.world.size}), so every rank continues its own part of the data")
        self.position = Position(*ckpt.get("positions", [ckpt["position"]])[self.world.rank])
        self.bad_examples = dict(ckpt.get("bad_examples", {}))
        self.history = list(ckpt.get("history", []))
        self.init_info = ckpt.get("init_from")
        rng = ckpt["rng"]
        torch.set_rng_state(rng["torch"])
        random.setstate((rng["python_version"], tuple(rng["python"]), rng["python_gauss"]))
        if "cuda" in rng and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(rng["cuda"])

    # -- the loop ------------------------------------------------------------------------------

    def total_steps(self) -> int | None:
        cfg = self.config
        if cfg.steps is not None:
            return cfg.steps
        global_batch = cfg.batch_size * self.world.size
        if isinstance(self.source, PackedImages):  # drops each epoch's last partial batch
            return cfg.epochs * (len(self.source) // global_batch)
        try:
            return math.ceil(cfg.epochs * len(self.source) / global_batch)
        except TypeError:  # a streamed data set: length unknown until the end of an epoch
            return None

    def lr_at(self, step: int) -> float:
        """The learning rate of the step after `step` steps: constant, then with lr_decay falling
        linearly over the run's last steps to lr / decay-length at the last step. It depends on the
        step alone, so a resumed run follows the same schedule (over its new length, if --steps changed)."""
        cfg = self.config
        if not cfg.lr_decay:
            return cfg.lr
        total = self.total_steps()
        decay_steps = max(1.0, cfg.lr_decay * total)
        return cfg.lr * min(1.0, max(total - step, 1) / decay_steps)

    def _done(self) -> bool:
        cfg = self.config
        if cfg.steps is not None:
            return self.step >= cfg.steps
        # Ranks reach an epoch's end at slightly different steps: stop together when one does.
        return distributed.any_rank(self.position.epoch >= cfg.epochs, self.world, self.device)

    def write_samples(self) -> Path:
        self.net.eval()
        with torch.no_grad():
            out = self.net(self.sample_inputs.to(self.device)).float().cpu()
        self.net.train()
        grid = torch.cat([torch.cat(list(self.sample_inputs), 2), torch.cat(list(out), 2)], 1)
        path = self.out / "samples" / f"step_{self.step:06d}.jpg"
        save_image_atomic(to_pil(grid), path)
        return path

    def run(self, progress=None) -> Path:
        cfg = self.config
        if isinstance(self.source, PackedImages):
            stream = DeviceBatchStream(self.source, cfg.batch_size, cfg.image_size, cfg.seed, self.position,
                                       rank=self.world.rank, world=self.world.size)
        else:
            stream = BatchStream(self.source, cfg.batch_size, cfg.image_size, cfg.seed, self.position,
                                 cfg.workers, rank=self.world.rank, world=self.world.size)
        main = self.world.is_main
        if not main:
            progress = None
        step = make_train_step(self.model, self.objective, self.optimizer, self.device,
                               compile=cfg.compile and self.device.type == "cuda", teacher_weight=cfg.teacher_weight)
        teacher_rng = torch.Generator()
        stop = {"signal": None}

        def on_signal(signum, _frame):
            stop["signal"] = signum

        old_handlers = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
        self.net.train()
        window, window_n, t0, imgs0 = None, 0, time.perf_counter(), self.images_seen
        log_path = self.out / "log.jsonl"
        try:
            batches = iter(stream)
            while not self._done():
                batch = next(batches)
                for name, reason in batch.bad:
                    if name not in self.bad_examples:
                        self.bad_examples[name] = reason
                        if progress:
                            progress.warn(f"skipped unreadable {name}: {reason}")
                x = batch.images
                if not x.is_floating_point():  # uint8 crops from the CPU pipeline
                    x = x.to(self.device, non_blocking=True).float().div_(255.0)
                teacher_batch = None
                if self.teacher is not None:  # its crops depend only on (seed, step): resumable
                    teacher_rng.manual_seed(cfg.seed * 1_000_003 + self.step)
                    teacher_batch = self.teacher.batch(x.shape[0], cfg.image_size, teacher_rng)
                lr = self.lr_at(self.step)
                for group in self.optimizer.param_groups:
                    group["lr"] = lr
                detached = step(x, teacher_batch)
                # Accumulate on the device; reading values forces a sync, so do it every log_every.
                window = detached if window is None else {k: window[k] + detached[k] for k in window}
                window_n += 1
                self.step += 1
                self.images_seen += x.shape[0] * self.world.size
                self.position = batch.position

                if self.step % cfg.log_every == 0 or self._done():
                    means = {k: float(v) / window_n for k, v in distributed.all_mean(window, self.world).items()}
                    if not all(math.isfinite(v) for v in means.values()):
                        raise TrainingDiverged(
                            f"the loss became {means['total']} by step {self.step}; training stopped. "
                            f"The last good checkpoint is {self.out / CHECKPOINT_NAME} (if one was written): "
                            f"try a lower --lr or smaller loss weights")
                    now = time.perf_counter()
                    rate = (self.images_seen - imgs0) / max(now - t0, 1e-9)
                    record = {"step": self.step, "images_seen": self.images_seen, "epoch": self.position.epoch,
                              **means, "lr": lr, "images_per_s": rate}
                    self.history.append(record)
                    if main:
                        with open(log_path, "a") as f:
                            f.write(json.dumps(record) + "\n")
                    if progress:
                        progress.update(self.step, record)
                    window, window_n, t0, imgs0 = None, 0, now, self.images_seen

                if main and cfg.sample_every and self.step % cfg.sample_every == 0:
                    self.write_samples()
                # Agreeing on a stop is a collective (a host sync): only every log_every steps.
                at_log = self.step % cfg.log_every == 0 or not self.world.distributed
                if at_log and distributed.any_rank(stop["signal"] is not None, self.world, self.device):
                    path = self.save_checkpoint()
                    raise Interrupted(f"interrupted at step {self.step}; checkpoint written to {path}; "
                                      f"continue with --resume {path}")
                if cfg.checkpoint_every and self.step % cfg.checkpoint_every == 0 and not self._done():
                    self.save_checkpoint()
        finally:
            for s, h in old_handlers.items():
                signal.signal(s, h)

        self.save_checkpoint()
        model_path = self.out / MODEL_NAME
        if main:
            self.write_samples()
            final = {k: v for k, v in self.history[-1].items() if k in ("content", "style", "tv", "total")} \
                if self.history else None
            save_model(model_path, self.net, self.objective.style_grams, self.metadata(final))
            (self.out / "config.json").write_text(json.dumps(dataclasses.asdict(cfg), indent=2) + "\n")
        distributed.barrier(self.world)
        return model_path
