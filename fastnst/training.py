"""The training loop: Adam on the transformer network against the perceptual objective.

A run trains one network per style image: with several styles they share one data stream, the
content features of each batch are computed once, and all the styles' outputs go through the loss
network as one batch. Each style's network, Adam and loss are its own, so each equals the network
of a run of that style alone with the same seed.

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
from fastnst.config import DEFAULT_STEPS, J_TERMS, RESUMABLE_OVERRIDES, LossConfig, TrainConfig
from fastnst.data import Position, open_training_data, seed_for
from fastnst.devices import autocast_for, describe, resolve_device, use_gpu_speedups
from fastnst.errors import Interrupted, TrainingDiverged, UserError
from fastnst.files import atomic_path, check_writable, sha256_file
from fastnst.images import load_rgb, resize_long_side, save_image_atomic, to_pil, to_tensor
from fastnst.losses import Objective, joint_terms, random_motion, stability_loss
from fastnst.modelfile import save_model
from fastnst.network import TransformerNet
from fastnst.teacher import TeacherPairs, teacher_loss

CHECKPOINT_NAME = "checkpoint.pt"
CHECKPOINT_FORMAT = "fastnst-checkpoint-2"  # -1 held one style's network, optimizer and history at the top level
MODEL_NAME = "model.safetensors"


def decayed_lr(lr: float, lr_decay: float, step: int, total: int) -> float:
    """The learning rate after `step` of `total` steps: constant, then falling linearly over the last
    `lr_decay` fraction of the steps to lr / decay-length at the last step."""
    if not lr_decay:
        return lr
    return lr * min(1.0, max(total - step, 1) / max(1.0, lr_decay * total))


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
    if not isinstance(ckpt, dict) or ckpt.get("format") not in ("fastnst-checkpoint-1", CHECKPOINT_FORMAT):
        raise UserError(f"{path}: not a fastnst training checkpoint")
    if ckpt["format"] == "fastnst-checkpoint-1":  # one style, its state at the top level
        ckpt["styles"] = [{k: ckpt.get(k) for k in ("network", "optimizer", "history", "init_from")}]
    return ckpt


def make_styles_step(models: list[torch.nn.Module], objectives: list[Objective],
                     optimizers: list[torch.optim.Optimizer], device: torch.device, compile: bool = False,
                     compile_backend: str = "inductor", teacher_weight: float = 0.0, compile_mode: str | None = None,
                     temporal_weight: float = 0.0):
    """The training step of one network per style: step(x) optimises every network on the batch x
    (Bx3xHxW in [0, 1]) and returns each style's detached loss terms without reading them (reading
    forces a host sync). The styles' losses are summed for one backward: each network's gradient
    is that of its own loss. With `compile`, the forward (networks, loss network, losses) goes
    through torch.compile; backward follows it. `compile_mode` is torch.compile's mode:
    "reduce-overhead" also replays forward and backward as CUDA graphs (a candidate measured by
    benchmarks/train_speed.py, not the trainer's default).
    step(x, (content, target)) adds teacher_weight x the pixel MSE of the (one) network's output on
    a teacher batch against the optimizer's targets (term "teacher"; "total" includes it).
    step(x, motion=(theta, noise)) adds temporal_weight x each network's stability loss under that
    random motion (term "temporal"; "total" includes it)."""
    autocast = autocast_for(device)

    def losses_of(x: torch.Tensor, teacher=None, motion=None) -> list[dict[str, torch.Tensor]]:
        with autocast:
            outputs = [m(x) for m in models]
            losses = joint_terms(objectives, outputs, x)
            if teacher is not None:
                t = teacher_weight * teacher_loss(models[0](teacher[0]), teacher[1])
                losses[0] = {**losses[0], "teacher": t, "total": losses[0]["total"] + t}
            if motion is not None:
                for i, (m, y) in enumerate(zip(models, outputs)):
                    t = temporal_weight * stability_loss(m, x, y, *motion)
                    losses[i] = {**losses[i], "temporal": t, "total": losses[i]["total"] + t}
            return losses

    cuda_graphs = compile and compile_mode == "reduce-overhead" and device.type == "cuda"
    if compile:
        losses_of = torch.compile(losses_of, backend=compile_backend, mode=compile_mode)

    def step(x: torch.Tensor, teacher=None, motion=None) -> list[dict[str, torch.Tensor]]:
        if cuda_graphs:
            torch.compiler.cudagraph_mark_step_begin()
        for optimizer in optimizers:
            optimizer.zero_grad(set_to_none=True)  # before the forward: no gradient outlives its step
        losses = losses_of(x, teacher, motion)
        sum(l["total"] for l in losses).backward()
        for optimizer in optimizers:
            optimizer.step()
        # A CUDA graph's outputs live in memory its next replay overwrites: keep copies.
        return [{k: v.detach().float().clone() if cuda_graphs else v.detach().float() for k, v in l.items()}
                for l in losses]

    return step


def make_train_step(model: torch.nn.Module, objective: Objective, optimizer: torch.optim.Optimizer,
                    device: torch.device, **options):
    """make_styles_step for one network: step(x) returns its detached loss terms."""
    step = make_styles_step([model], [objective], [optimizer], device, **options)
    return lambda x, teacher=None, motion=None: step(x, teacher, motion)[0]


@dataclass
class StyleRun:
    """One style of a run: its image, objective, network, Adam, training curve and files."""
    name: str
    image: Path
    sha256: str
    out: Path  # the run's folder for a single style; a subfolder per style otherwise
    objective: Objective
    net: TransformerNet
    optimizer: torch.optim.Optimizer
    model: torch.nn.Module  # the network, or its DDP wrapper under torchrun
    init_info: dict | None = None
    history: list[dict] = field(default_factory=list)

    @property
    def model_path(self) -> Path:
        return self.out / MODEL_NAME


def default_run_folder(names: list[str]) -> Path:
    return Path("runs") / ("+".join(names) if len(names) <= 3 else f"{names[0]}+{len(names) - 1}-more")


class Trainer:
    """One training run of one network per style. `run()` trains to the end and returns the model
    files' paths, one per style."""

    def __init__(self, config: TrainConfig | None = None, resume: str | None = None,
                 overrides: dict | None = None):
        """A new run from `config`, or a resumed one from the checkpoint `resume` with the
        changes in `overrides` (only RESUMABLE_OVERRIDES may change)."""
        ckpt = load_checkpoint(resume) if resume else None
        if ckpt is not None:
            config = self._merge_resumed_config(ckpt["config"], overrides or {})
        self.config = cfg = self._completed(config)
        images = [Path(p) for p in cfg.styles]
        self.out = Path(cfg.out or default_run_folder([p.stem for p in images]))
        outs = [self.out] if len(images) == 1 else [self.out / p.stem for p in images]
        self._check(images, outs, new_run=ckpt is None)
        device = resolve_device(cfg.device)
        self.world = distributed.init(device.type)
        self.device = distributed.device_for(self.world, device)

        # Everything random below is seeded, so a fresh run is reproducible from its config.
        random.seed(cfg.seed)
        torch.manual_seed(cfg.seed)
        style_images = [resize_long_side(load_rgb(p), cfg.style_size) for p in images]
        self.source = open_training_data(cfg.data, self.device, cfg.image_size, cfg.workers)
        self.styles = self._open_styles(images, style_images, outs, start_from=ckpt is None)
        if cfg.lr_decay and self.total_steps() is None:
            raise UserError("--lr-decay needs a known length: give --steps (a streamed data set's epochs "
                            "have no known number of steps)")
        self.step, self.position, self.images_seen = 0, Position(), 0
        self.bad_examples: dict[str, str] = {}
        if ckpt is not None:
            self._restore(ckpt)
            if self.world.is_main:
                self._truncate_logs()
        self.teacher = self._open_teacher()
        self.bad_examples.update(self.source.skipped)
        if self.world.is_main:
            for style in self.styles:
                style.out.mkdir(parents=True, exist_ok=True)
            self.sample_inputs = self.source.sample_images(4, cfg.image_size)

    @staticmethod
    def _completed(cfg: TrainConfig) -> TrainConfig:
        """The configuration with what "not given" means filled in: the run's length, the loss
        network's default layers. This is what checkpoints and model files record."""
        resolved = cfg.resolved()
        steps = DEFAULT_STEPS if cfg.steps is None and cfg.epochs is None else cfg.steps
        return dataclasses.replace(cfg, steps=steps, content_layers=resolved.content_layers,
                                   style_layers=resolved.style_layers)

    def _check(self, images: list[Path], outs: list[Path], new_run: bool) -> None:
        """One line for a configuration that cannot run, before anything is loaded."""
        cfg, names = self.config, [p.stem for p in images]
        twice = next((n for n in names if names.count(n) > 1), None)
        if twice:
            raise UserError(f"two style images are named {twice!r}: each style's model is named after its "
                            f"image, so rename one")
        cfg.per_style("style_weight"), cfg.per_style("init_from")  # one value, or one per style
        if new_run:
            self._refuse_to_overwrite(outs)
        for out in outs:
            check_writable(out / CHECKPOINT_NAME)
        if cfg.teacher and len(names) > 1:
            raise UserError("--teacher works with one --style: its targets were made for one style image")
        if cfg.teacher and cfg.teacher_weight <= 0:
            raise UserError("--teacher needs a --teacher-weight above 0")
        if cfg.teacher_weight and not cfg.teacher:
            raise UserError("--teacher-weight needs --teacher DIR")

    def _open_styles(self, images: list[Path], style_images: list, outs: list[Path],
                     start_from: bool) -> list[StyleRun]:
        """Each style's objective (one loss network for all), network, Adam and folder. Every network
        starts from the same random state, so each is the network of its style trained alone;
        `start_from`: load --init-from weights (a resumed run's come from its checkpoint)."""
        cfg = self.config
        objectives = [Objective.from_config(cfg.for_style(0))]
        objectives += [Objective.from_config(cfg.for_style(i), objectives[0].lossnet) for i in range(1, len(images))]
        net_rng = torch.get_rng_state()
        styles = []
        for i, (image, style_image, objective, out) in enumerate(zip(images, style_images, objectives, outs)):
            objective = objective.to(self.device)
            objective.set_style(to_tensor(style_image).unsqueeze(0))
            torch.set_rng_state(net_rng)
            net = TransformerNet(cfg.width, cfg.blocks).to(self.device)
            init_from = cfg.per_style("init_from")[i]
            init_info = self._start_from(net, init_from) if init_from and start_from else None
            use_gpu_speedups(self.device, net, objective)
            # Under torchrun, DDP averages the gradients of the ranks; net stays the plain network.
            model = net
            if self.world.distributed:
                from torch.nn.parallel import DistributedDataParallel

                model = DistributedDataParallel(
                    net, device_ids=[self.device.index] if self.device.type == "cuda" else None)
            # Fused Adam: one kernel for all parameters instead of several per parameter.
            optimizer = torch.optim.Adam(net.parameters(), lr=cfg.lr, fused=self.device.type == "cuda")
            styles.append(StyleRun(image.stem, image, sha256_file(image), out, objective, net, optimizer, model,
                                   init_info))
        return styles

    def _open_teacher(self) -> TeacherPairs | None:
        cfg = self.config
        if not cfg.teacher:
            return None
        teacher = TeacherPairs(cfg.teacher, self.device)
        if teacher.style_sha256 != self.styles[0].sha256:
            raise UserError(f"{cfg.teacher}: its targets were made for another style image "
                            f"({teacher.manifest['style']})")
        return teacher

    def describe(self) -> str:
        """One line saying what this run trains, on what, and where it writes."""
        cfg = self.config
        ranks = f" x {self.world.size} processes" if self.world.distributed else ""
        return (f"training {', '.join(s.name for s in self.styles)} on {self.source.description}, {self.device}, "
                f"batch {cfg.batch_size}{ranks} at {cfg.image_size}px, from step {self.step}; writing to {self.out}")

    def outcome(self) -> list[str]:
        """What a finished run made: skipped images, and each model file with its final J."""
        lines = []
        if self.bad_examples:
            lines.append(f"skipped {len(self.bad_examples)} unreadable training image(s); "
                         f"first: {next(iter(self.bad_examples))}")
        for run in self.styles:
            final = run.history[-1] if run.history else {}
            j = sum(final.get(k, float("nan")) for k in J_TERMS)  # without extra terms
            lines.append(f"wrote {run.model_path} (step {self.step}, final J {j:.4g}); samples in {run.out / 'samples'}")
        return lines

    def close(self) -> None:
        """Leave the process group under torchrun. The DDP wrappers hold the group: drop them first,
        so the group and its threads are torn down here and not during interpreter exit, where gloo
        aborted a finished rank about once in 30 runs ("terminate called without an active exception")."""
        for style in self.styles:
            style.model = style.net
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

    @staticmethod
    def _start_from(net: TransformerNet, model: str) -> dict:
        """Load a trained model's network weights into `net` (Adam starts afresh); -> what the
        metadata records."""
        from fastnst.modelfile import load_model, model_sibling, resolve_model

        path = resolve_model(model)
        if path.suffix == ".onnx":
            path = model_sibling(path, ".safetensors")
            if not path.is_file():
                raise UserError(f"--init-from {model}: needs the model's .safetensors file ({path} not found); "
                                f"an ONNX file holds no trainable network")
        trained, meta, _ = load_model(path)
        if trained.config() != net.config():
            raise UserError(f"--init-from {path}: its network has width {trained.width} and {trained.blocks} "
                            f"blocks, this run's width {net.width} and {net.blocks}: give --width "
                            f"{trained.width} --blocks {trained.blocks}")
        net.load_state_dict(trained.state_dict())
        return {"model": str(path), "sha256": sha256_file(path), "style_name": meta["style_name"],
                "steps": meta["steps"], "images_seen": meta["images_seen"]}

    def _refuse_to_overwrite(self, outs: list[Path]) -> None:
        if self.out.exists() and not self.out.is_dir():
            raise UserError(f"{self.out}: --out must be a folder, and this is a file")
        for path in [self.out / CHECKPOINT_NAME] + [out / MODEL_NAME for out in outs]:
            if path.exists():
                raise UserError(f"{path} exists: resume with --resume {self.out / CHECKPOINT_NAME} "
                                f"or choose another --out")

    def metadata(self, i: int, final_losses: dict | None) -> dict:
        """What style i's model file records: how it was made, as if it had been trained alone. The
        loss settings are in "loss" only; "config" holds the rest of the configuration."""
        style, alone = self.styles[i], dataclasses.asdict(self.config.for_style(i))
        return {
            "fastnst_version": fastnst.__version__,
            "style_name": style.name,
            "style_sha256": style.sha256,
            "data": self.source.description,
            "loss_network": style.objective.lossnet.describe(),
            "loss": style.objective.config.loss_settings(),
            "config": {k: v for k, v in alone.items() if k not in LossConfig().loss_settings()},
            "trained_with": [s.name for s in self.styles] if len(self.styles) > 1 else None,
            "steps": self.step,
            "images_seen": self.images_seen,
            "final_losses": final_losses,
            "init_from": style.init_info,
            "device": describe(self.device),
            "world_size": self.world.size,
            "torch_version": torch.__version__,
        }

    def _truncate_logs(self) -> None:
        """A resumed run continues its curve from the checkpoint's step: lines logged after it (by a
        run that crashed before its next checkpoint) are dropped, so no step appears twice."""
        for style in self.styles:
            log = style.out / "log.jsonl"
            if not log.is_file():
                continue
            lines = [l for l in log.read_text().splitlines() if l.strip()]
            kept = [l for l in lines if json.loads(l)["step"] <= self.step]
            if len(kept) < len(lines):
                with atomic_path(log) as tmp:
                    tmp.write_text("".join(l + "\n" for l in kept))

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
            "format": CHECKPOINT_FORMAT,
            "fastnst_version": fastnst.__version__,
            "config": dataclasses.asdict(self.config),
            "step": self.step,
            "images_seen": self.images_seen,
            "position": positions[0],
            "positions": positions,
            "world_size": self.world.size,
            "styles": [{"name": s.name, "network": s.net.state_dict(), "optimizer": s.optimizer.state_dict(),
                        "history": s.history, "init_from": s.init_info} for s in self.styles],
            "rng": self._rng_states(),
            "bad_examples": bad,
        }, path)
        distributed.barrier(self.world)
        return path

    def _restore(self, ckpt: dict) -> None:
        for style, saved in zip(self.styles, ckpt["styles"]):
            style.net.load_state_dict(saved["network"])
            style.optimizer.load_state_dict(saved["optimizer"])
            style.history = list(saved.get("history", []))
            style.init_info = saved.get("init_from")
        self.step, self.images_seen = ckpt["step"], ckpt["images_seen"]
        saved_world = ckpt.get("world_size", 1)
        if saved_world != self.world.size:
            raise UserError(f"this checkpoint was written by {saved_world} process(es): resume it with the same "
                            f"number (now {self.world.size}), so every rank continues its own part of the data")
        self.position = Position(*ckpt.get("positions", [ckpt["position"]])[self.world.rank])
        self.bad_examples = dict(ckpt.get("bad_examples", {}))
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
        per_epoch = self.source.steps_per_epoch(cfg.batch_size * self.world.size)
        return None if per_epoch is None else cfg.epochs * per_epoch

    def lr_at(self, step: int) -> float:
        """The learning rate of the step after `step` steps: constant, then with lr_decay falling
        linearly over the run's last steps to lr / decay-length at the last step. It depends on the
        step alone, so a resumed run follows the same schedule (over its new length, if --steps changed)."""
        cfg = self.config
        return decayed_lr(cfg.lr, cfg.lr_decay, step, self.total_steps() if cfg.lr_decay else 0)

    def _done(self) -> bool:
        cfg = self.config
        if cfg.steps is not None:
            return self.step >= cfg.steps
        # Ranks reach an epoch's end at slightly different steps: stop together when one does.
        return distributed.any_rank(self.position.epoch >= cfg.epochs, self.world, self.device)

    def write_samples(self, style: StyleRun) -> Path:
        style.net.eval()
        with torch.no_grad():
            out = style.net(self.sample_inputs.to(self.device)).float().cpu()
        style.net.train()
        grid = torch.cat([torch.cat(list(self.sample_inputs), 2), torch.cat(list(out), 2)], 1)
        path = style.out / "samples" / f"step_{self.step:06d}.jpg"
        save_image_atomic(to_pil(grid), path)
        return path

    def _log(self, window: list[dict], window_n: int, lr: float, rate: float, progress) -> None:
        """Each style's mean loss terms over the last steps: checked, kept, written, shown."""
        flat = {f"{i}.{k}": v for i, terms in enumerate(window) for k, v in terms.items()}
        means = {k: float(v) / window_n for k, v in distributed.all_mean(flat, self.world).items()}
        records = []
        for i, style in enumerate(self.styles):
            terms = {k.split(".", 1)[1]: v for k, v in means.items() if k.split(".", 1)[0] == str(i)}
            if not all(math.isfinite(v) for v in terms.values()):
                whose = f" of {style.name}" if len(self.styles) > 1 else ""
                raise TrainingDiverged(
                    f"the loss{whose} became {terms['total']} by step {self.step}; training stopped. "
                    f"The last good checkpoint is {self.out / CHECKPOINT_NAME} (if one was written): "
                    f"try a lower --lr or smaller loss weights")
            record = {"step": self.step, "images_seen": self.images_seen, "epoch": self.position.epoch,
                      **terms, "lr": lr, "images_per_s": rate}
            style.history.append(record)
            records.append(record)
            if self.world.is_main:
                with open(style.out / "log.jsonl", "a") as f:
                    f.write(json.dumps(record) + "\n")
        if progress:
            progress.update(self.step, records, [s.name for s in self.styles])

    def _save_models(self) -> None:
        for i, style in enumerate(self.styles):
            self.write_samples(style)
            final = None
            if style.history:  # J: the objective's terms, without the teacher's or stability's
                final = {k: style.history[-1][k] for k in J_TERMS}
                final["total"] = sum(final.values())
            save_model(style.model_path, style.net, style.objective.style_grams, self.metadata(i, final))
        (self.out / "config.json").write_text(json.dumps(dataclasses.asdict(self.config), indent=2) + "\n")

    def run(self, progress=None) -> list[Path]:
        cfg = self.config
        batches = self.source.stream(cfg.batch_size, cfg.image_size, cfg.seed, self.position, cfg.workers,
                                     rank=self.world.rank, world=self.world.size)
        main = self.world.is_main
        if not main:
            progress = None
        step = make_styles_step([s.model for s in self.styles], [s.objective for s in self.styles],
                                [s.optimizer for s in self.styles], self.device,
                                compile=cfg.compile and self.device.type == "cuda", teacher_weight=cfg.teacher_weight,
                                temporal_weight=cfg.temporal_weight)
        teacher_rng, motion_rng = torch.Generator(), torch.Generator()
        stop = {"signal": None}

        def on_signal(signum, _frame):
            stop["signal"] = signum

        old_handlers = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
        for style in self.styles:
            style.net.train()
        window, window_n, t0, imgs0 = None, 0, time.perf_counter(), self.images_seen
        try:
            while not self._done():
                # the batch
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
                    teacher_rng.manual_seed(seed_for(cfg.seed, self.step))
                    teacher_batch = self.teacher.batch(x.shape[0], cfg.image_size, teacher_rng)
                motion = None
                if cfg.temporal_weight:  # the same for (seed, step): resumable
                    motion_rng.manual_seed(seed_for(cfg.seed, self.step, 1))
                    motion = [t.to(self.device) for t in random_motion(x.shape[0], x.shape[-1], motion_rng)]

                # one optimisation step of every style's network
                lr = self.lr_at(self.step)
                for style in self.styles:
                    for group in style.optimizer.param_groups:
                        group["lr"] = lr
                losses = step(x, teacher_batch, motion)
                # Accumulate on the device; reading values forces a sync, so do it every log_every.
                window = losses if window is None else [{k: w[k] + l[k] for k in w} for w, l in zip(window, losses)]
                window_n += 1
                self.step += 1
                self.images_seen += x.shape[0] * self.world.size
                self.position = batch.position

                # logs, samples, stops and checkpoints
                if self.step % cfg.log_every == 0 or self._done():
                    now = time.perf_counter()
                    self._log(window, window_n, lr, (self.images_seen - imgs0) / max(now - t0, 1e-9), progress)
                    window, window_n, t0, imgs0 = None, 0, now, self.images_seen
                if main and cfg.sample_every and self.step % cfg.sample_every == 0:
                    for style in self.styles:
                        self.write_samples(style)
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
        if main:
            self._save_models()
        distributed.barrier(self.world)
        return [style.model_path for style in self.styles]


def style_images(paths) -> list[str]:
    """--style values: image files, and folders of them (their images, in order)."""
    from fastnst.data import list_images

    out = []
    for path in [paths] if isinstance(paths, (str, Path)) else paths:
        path = Path(path)
        if path.is_dir():
            found = list_images(path)
            if not found:
                raise UserError(f"{path}: no style images found in this folder")
            out += [str(p) for p in found]
        else:
            out.append(str(path))
    return out


def open_run(style=None, *, resume: str | Path | None = None, **options) -> Trainer:
    """A training run: of `style` (an image, a folder of images, or a list of them: one network per
    style) with TrainConfig's `options`, or the run of the checkpoint `resume` with the options that
    may change on resume. Per-style options (style_weight, init_from) take one value or a list."""
    if options.get("steps") is not None and options.get("epochs") is not None:
        raise UserError("give --steps or --epochs, not both")
    unknown = sorted(set(options) - {f.name for f in dataclasses.fields(TrainConfig)} - {"style"})
    if unknown:
        raise TypeError(f"unknown training option {unknown[0]!r}")
    for name in ("style_weight", "init_from"):  # one value for all styles, as a list of one or not
        if isinstance(options.get(name), (list, tuple)) and len(options[name]) == 1:
            options[name] = options[name][0]
    if resume is not None:
        if style:
            raise UserError("--style cannot change when resuming: the checkpoint's styles are used")
        return Trainer(resume=str(resume), overrides=options)
    styles = style_images(style) if style else []
    if not styles:
        raise UserError("--style is required (the style image to learn)")
    for name in ("out", "data", "teacher", "init_from"):
        if isinstance(options.get(name), Path):
            options[name] = str(options[name])
    return Trainer(TrainConfig(style=styles[0] if len(styles) == 1 else styles, **options))


def train(style=None, *, resume: str | Path | None = None, log=None, **options) -> list[Path]:
    """Train one network per style image, as `fastnst train` does; returns the model files, one per
    style. `options` are TrainConfig's fields (steps, batch_size, data, out, style_weight, ...).
    With `log` (a print-like function), the run is described and its outcome told, with a progress bar."""
    from fastnst.progress import TrainProgress

    trainer = open_run(style, resume=resume, **options)
    shown = log is not None and trainer.world.is_main
    if shown:
        log(trainer.describe())
    try:
        with TrainProgress(trainer.total_steps() if shown else 0, trainer.step) as progress:
            files = trainer.run(progress if shown else None)
    finally:
        trainer.close()
    if shown:
        log(*trainer.outcome())
    return files
