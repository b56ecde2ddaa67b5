"""The command line: `fastnst train | pack | export | stylize | optimize | compare | models | gallery`.

A user's mistake (UserError, or a bad option caught by the parser) is printed as one line,
`fastnst: error: ...`, with exit status 2, never a traceback.
"""

from __future__ import annotations

import dataclasses
import sys
from enum import Enum
from pathlib import Path
from typing import Optional

import typer

from fastnst import progress as progress_display
from fastnst.config import LossConfig, TrainConfig, parse_layer_weights
from fastnst.errors import Interrupted, TrainingDiverged, UserError, require_training_install

try:  # recent typer vendors its own click
    from typer._click.exceptions import ClickException as _ClickException
except ImportError:  # older typer runs on click itself
    from click.exceptions import ClickException as _ClickException

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  rich_markup_mode=None,
                  help="Fast neural style transfer: train feed-forward style networks, export them to ONNX, "
                       "stylize images and videos.")


SETTINGS = {f.name: f for f in dataclasses.fields(TrainConfig)}
LOSS_SETTINGS = {f.name for f in dataclasses.fields(LossConfig)}


class LossNet(str, Enum):
    vgg19 = "vgg19"
    vgg16 = "vgg16"


class Device(str, Enum):
    auto = "auto"
    cpu = "cpu"
    cuda = "cuda"


class Optim(str, Enum):
    lbfgs = "lbfgs"
    adam = "adam"


class Pooling(str, Enum):
    max = "max"
    avg = "avg"


@app.callback()
def _root() -> None:
    """Fast neural style transfer: train feed-forward style networks, export them to ONNX, stylize
    images and videos."""


def _err(message: str) -> None:
    print(f"fastnst: error: {message}", file=sys.stderr)


def option(name: str, *decls: str, **kw):
    """A command-line option for the TrainConfig (or LossConfig) setting `name`: its documentation and
    default come from the dataclass, where they are declared; not given (None) means that default."""
    f = SETTINGS[name]
    shown = "" if f.default in (None, "", dataclasses.MISSING) else f" [default: {f.default}]"
    return typer.Option(None, *decls, help=f.metadata["doc"] + shown, **kw)


DEVICE = typer.Option(Device.auto, help="auto picks CUDA when available.")


def _given(values: dict, exclude: tuple[str, ...] = ()) -> dict:
    """The options a user gave (not None), as plain values for the library (enums, paths, layer lists)."""
    out = {}
    for name, value in values.items():
        if value is None or name in exclude:
            continue
        if name in ("content_layers", "style_layers"):
            value = parse_layer_weights(value)
        out[name] = value.value if isinstance(value, Enum) else str(value) if isinstance(value, Path) else value
    return out


@app.command(help="Train a feed-forward style network on a folder of images or a Hugging Face data set. "
                  "Options not given take their defaults (or, with --resume, the checkpoint's).")
def train(
    style: Optional[list[Path]] = option("style", metavar="IMAGE"),
    data: Optional[str] = option("data"),
    out: Optional[Path] = option("out"),
    steps: Optional[int] = option("steps", min=1),
    epochs: Optional[int] = option("epochs", min=1),
    batch_size: Optional[int] = option("batch_size", min=1),
    image_size: Optional[int] = option("image_size", min=16, max=4096),
    style_size: Optional[int] = option("style_size", min=16, max=8192),
    content_weight: Optional[float] = option("content_weight", min=0.0),
    style_weight: Optional[list[float]] = option("style_weight", min=0.0),
    tv_weight: Optional[float] = option("tv_weight", min=0.0),
    content_layers: Optional[str] = option("content_layers"),
    style_layers: Optional[str] = option("style_layers"),
    lr: Optional[float] = option("lr", min=1e-8, max=10.0),
    lr_decay: Optional[float] = option("lr_decay", min=0.0, max=1.0),
    loss_net: Optional[LossNet] = option("loss_net"),
    vgg_weights: Optional[str] = option("vgg_weights"),
    pooling: Optional[Pooling] = option("pooling"),
    width: Optional[int] = option("width", min=4, max=256),
    blocks: Optional[int] = option("blocks", min=0, max=32),
    device: Optional[Device] = option("device"),
    checkpoint_every: Optional[int] = option("checkpoint_every", min=0),
    sample_every: Optional[int] = option("sample_every", min=0),
    log_every: Optional[int] = option("log_every", min=1),
    workers: Optional[int] = option("workers", min=1, max=64),
    seed: Optional[int] = option("seed", min=0),
    compile: Optional[bool] = option("compile", "--compile/--no-compile"),
    teacher: Optional[Path] = option("teacher"),
    teacher_weight: Optional[float] = option("teacher_weight", min=0.0),
    init_from: Optional[list[str]] = option("init_from"),
    resume: Optional[Path] = typer.Option(None, help="Continue the run of this checkpoint exactly."),
):
    options = _given(locals(), exclude=("style", "resume"))
    require_training_install("fastnst train")
    from fastnst.training import open_run

    trainer = open_run(style, resume=resume, **options)
    cfg, main = trainer.config, trainer.world.is_main
    if main:
        ranks = f" x {trainer.world.size} processes" if trainer.world.distributed else ""
        print(f"training {', '.join(s.name for s in trainer.styles)} on {trainer.source.description}, {trainer.device}, "
              f"batch {cfg.batch_size}{ranks} at {cfg.image_size}px, from step {trainer.step}; writing to "
              f"{trainer.out}", file=sys.stderr)
    try:
        with progress_display.TrainProgress(trainer.total_steps() if main else 0, trainer.step) as progress:
            trainer.run(progress if main else None)
    finally:
        trainer.close()
    if not main:
        return
    if trainer.bad_examples:
        print(f"skipped {len(trainer.bad_examples)} unreadable training image(s); "
              f"first: {next(iter(trainer.bad_examples))}", file=sys.stderr)
    for run in trainer.styles:
        final = run.history[-1] if run.history else {}
        print(f"wrote {run.model_path} (step {trainer.step}, final J {final.get('total', float('nan')):.4g}); "
              f"samples in {run.out / 'samples'}", file=sys.stderr)


@app.command(help="Decode a folder or Hugging Face data set once into a pack file of uint8 centre squares, "
                  "which `fastnst train --data FILE` keeps on the GPU: no decoding while training, and "
                  "one file to copy to a GPU machine.")
def pack(
    data: str = typer.Argument(..., help="A folder of images (searched recursively) or hf:NAME[:SPLIT]."),
    out: Path = typer.Option(..., help="The pack file to write (safetensors)."),
    size: int = typer.Option(320, min=16, max=4096,
                             help="Side of the stored squares: 1.25 x the training --image-size keeps "
                                  "random crops at full resolution."),
    workers: int = typer.Option(8, min=1, max=64, help="Threads decoding images."),
):
    require_training_install("fastnst pack")
    from fastnst.data import open_source, write_pack
    from fastnst.files import check_writable

    if out.exists():
        raise UserError(f"{out} exists: choose another --out or delete it first")
    check_writable(out)
    source = open_source(data)
    print(f"packing {source.description} at {size}x{size}", file=sys.stderr)

    def progress(good: int, bad: int) -> None:
        if (good + bad) % 1000 == 0:
            print(f"  {good} images packed, {bad} unreadable", file=sys.stderr)

    meta = write_pack(source, out, size, workers, progress)
    gib = out.stat().st_size / 2**30
    print(f"wrote {out}: {meta['count']} images of {size}x{size} ({gib:.2f} GiB), "
          f"{len(meta['bad'])} unreadable skipped", file=sys.stderr)


@app.command(help="Export a trained model file to ONNX (dynamic batch, height and width), verified with "
                  "onnxruntime against PyTorch. Input and output: float32 NCHW RGB in [0, 1].")
def export(
    model: Path = typer.Argument(..., help="A trained model file (.safetensors)."),
    out: Optional[Path] = typer.Option(None, help="Output .onnx file [default: MODEL with .onnx]."),
    fp16: bool = typer.Option(False, "--fp16", help="fp16 weights and arithmetic inside (float32 input and "
                                                     "output), for GPUs."),
    int8: bool = typer.Option(False, "--int8", help="Also write an int8 model (NAME.int8.onnx) for faster CPU "
                                                     "inference, calibrated on --calibration photos."),
    calibration: Optional[Path] = typer.Option(None, help="Folder of real photos for int8 calibration."),
    opset: int = typer.Option(18, min=18, max=23, help="ONNX opset."),
):
    require_training_install("fastnst export", ("torch", "onnx", "onnxscript"))
    from fastnst.export import ExportError, export as export_onnx

    if int8 and calibration is None:
        raise UserError("--int8 needs --calibration DIR (a folder of real photos)")
    try:
        report = export_onnx(model, out, fp16=fp16, opset=opset, int8_calibration=calibration if int8 else None)
    except ExportError as e:
        raise UserError(f"{model}: export failed its check: {e}") from None
    print(f"wrote {report['path']} ({report['precision']}, {report['size_bytes'] / 1e6:.1f} MB, opset {opset}); "
          f"onnxruntime vs PyTorch at {' and '.join('x'.join(map(str, s[2:])) for s in report['verified_shapes'])}: "
          f"max abs difference {report['max_abs_diff_255']:.4f} on the 0-255 scale")
    if "int8" in report:
        q = report["int8"]
        print(f"wrote {q['path']} (int8, {q['size_bytes'] / 1e6:.1f} MB, calibrated on {q['calibration_images']} "
              f"photos): PSNR against fp32 at least {q['psnr_vs_fp32_db']:.1f} dB on held-out photos")


@app.command(help="Stylize images, folders (recursive, mirrored under --out), globs, videos and frame folders.")
def stylize(
    inputs: list[str] = typer.Argument(..., metavar="INPUT...", help="Images, folders, globs or videos."),
    model: str = typer.Option(..., help="A shipped model name (see `fastnst models`), an .onnx file or a "
                                        ".safetensors model file."),
    out: Optional[str] = typer.Option(None, help="Output file (one input) or folder [default: beside each "
                                                 "input, with the style name appended]."),
    max_size: Optional[int] = typer.Option(None, min=1, help="Scale down so the long side is at most N pixels "
                                                             "[default: keep the input's size]."),
    preserve_color: bool = typer.Option(False, "--preserve-color", help="Keep the input's colours "
                                                                       "(transfer luminance only)."),
    strength: float = typer.Option(1.0, min=0.0, max=1.0, help="Blend between the input (0) and the "
                                                               "stylized image (1)."),
    tile: Optional[int] = typer.Option(None, min=128, max=8192, help="Process in N x N tiles (bounded memory, "
                                                                     "for huge images); seamless with a "
                                                                     "PyTorch model file."),
    device: Device = typer.Option(Device.auto, help="auto uses CUDA when onnxruntime (or PyTorch, for "
                                                    ".safetensors models) offers it."),
):
    if len(inputs) == 1 and not Path(inputs[0]).exists() and not any(c in inputs[0] for c in "*?["):
        raise UserError(f"{inputs[0]}: no such file")  # before loading anything: a quick answer
    from fastnst.inference import Stylizer
    from fastnst.jobs import plan, run_jobs

    stylizer = Stylizer(model, device.value, tiling=tile is not None)
    if tile is not None and stylizer.net is None:
        print(f"warning: {stylizer.path.name} runs on ONNX: its tiles are normalised one by one and blended, "
              "so colours can shift between tiles; a .safetensors model gives seamless tiles (with the training "
              "install)", file=sys.stderr)
    jobs, empty = plan(inputs, out, stylizer.name)
    with progress_display.StylizeProgress(len(jobs)) as progress:
        for message in empty:  # beside good inputs: reported and skipped
            progress.error(message)
        failed = run_jobs(jobs, stylizer, progress, batch=len(jobs) + len(empty) > 1, max_size=max_size,
                          tile=tile, keep_color=preserve_color, strength=strength)
    print(f"stylized {len(jobs) - failed} of {len(jobs)} input(s) with {stylizer.name} ({stylizer.backend})"
          + (f"; {failed} failed" if failed else "") + (f"; {len(empty)} gave nothing" if empty else "")
          + (f": {jobs[0].dst}" if len(jobs) == 1 else ""), file=sys.stderr)
    if failed or empty:
        raise typer.Exit(1)


@app.command(help="Gatys et al.'s optimizer: optimise one image's pixels against the same objective as training.")
def optimize(
    content: Path = typer.Option(..., help="Content image, or a folder of them to make a teacher for "
                                           "`fastnst train --teacher`."),
    style: Path = typer.Option(..., help="Style image."),
    out: Path = typer.Option(..., help="Output image file (a folder when --content is one)."),
    steps: int = typer.Option(300, min=1, max=100000, help="Iterations."),
    optimizer: Optim = typer.Option(Optim.lbfgs, help="L-BFGS (Gatys) or Adam."),
    init: str = typer.Option("content", help="Start from content, noise or an image FILE."),
    size: int = typer.Option(512, min=16, max=8192, help="Long side of the content image."),
    style_size: Optional[int] = typer.Option(None, min=16, max=8192, help="Long side of the style image "
                                                                          "[default: --size]."),
    loss_net: Optional[LossNet] = option("loss_net"),
    vgg_weights: Optional[str] = option("vgg_weights"),
    pooling: Optional[Pooling] = option("pooling"),
    content_weight: Optional[float] = option("content_weight", min=0.0),
    style_weight: Optional[float] = typer.Option(None, min=0.0, help="Weight of the style loss. [default: 1.0]"),
    tv_weight: Optional[float] = option("tv_weight", min=0.0),
    content_layers: Optional[str] = option("content_layers"),
    style_layers: Optional[str] = option("style_layers"),
    lr: Optional[float] = typer.Option(None, min=1e-6, max=10.0, help="Step size [default: 1 for L-BFGS, "
                                                                      "0.02 for Adam]."),
    preserve_color: bool = typer.Option(False, "--preserve-color", help="Keep the content's colours."),
    snapshot_every: int = typer.Option(0, min=0, help="Also write OUT_NNNN.png every N iterations."),
    device: Device = DEVICE,
    seed: int = typer.Option(0, min=0, help="Random seed (noise init)."),
):
    loss_options = {name: value for name, value in locals().items() if name in LOSS_SETTINGS}
    require_training_install("fastnst optimize")
    from rich.console import Console

    from fastnst.gatys import optimize_image

    loss = LossConfig(**_given(loss_options))
    console = Console(stderr=True, soft_wrap=True)
    if content.is_dir():
        from fastnst.teacher import optimize_folder

        def on_image(i, n, name, rec):
            console.print(f"[{i}/{n}] {name}: J {rec['J']:.4g} after {steps} iterations, {rec['seconds']:.1f}s",
                          highlight=False, markup=False)

        done = optimize_folder(content, style, out, loss, dict(steps=steps, optimizer=optimizer.value, init=init,
                               size=size, style_size=style_size or size, lr=lr, seed=seed), device.value, on_image)
        print(f"wrote {done} target(s) and {out / 'teacher.json'}: train with --teacher {out}", file=sys.stderr)
        return

    def on_step(i, rec):
        if i % max(1, steps // 20) == 0 or i == steps:
            console.print(f"iteration {i}/{steps}  J {rec['J']:.4g} (content {rec['content']:.3g} "
                          f"style {rec['style']:.3g} tv {rec['tv']:.3g})  {rec['seconds']:.1f}s", highlight=False)

    last = optimize_image(content, style, out, loss, steps=steps, optimizer=optimizer.value, init=init, size=size,
                          style_size=style_size, lr=lr, preserve_color=preserve_color, snapshot_every=snapshot_every,
                          device=device.value, seed=seed, on_step=on_step)
    print(f"wrote {out} ({steps} {optimizer.value} iterations, J {last['J']:.4g}, {last['seconds']:.1f}s)",
          file=sys.stderr)


@app.command(help="Compare a model with the Gatys optimizer on the same objective: J, matched iterations and "
                  "speedups (Johnson 2016, Figure 5 and Table 1).")
def compare(
    contents: list[Path] = typer.Argument(..., metavar="CONTENT...", help="Content images."),
    model: str = typer.Option(..., help="A shipped name, an .onnx file or a .safetensors model file."),
    out: Path = typer.Option(..., help="Output folder for report.json, report.csv and the plots."),
    style: Optional[Path] = typer.Option(None, help="Style image [default: the style Gram matrices in the "
                                                    "model file]."),
    sizes: str = typer.Option("256,512", help="Long sides to compare at."),
    iterations: str = typer.Option("0,10,50,100,300,500", help="Optimizer iterations to record."),
    runs: int = typer.Option(5, min=1, max=100, help="Timed runs of the network (median)."),
    init: str = typer.Option("noise,content", help="Starts of the optimizer: noise (white noise, Johnson 2016's "
                                                   "protocol), content (the photo), or both."),
    seed: int = typer.Option(0, min=0, help="Random seed of the noise start."),
    device: Device = DEVICE,
):
    require_training_install("fastnst compare", ("torch", "safetensors", "matplotlib"))
    from fastnst.compare import compare as run_compare, table_header, table_lines

    def ints(text: str, name: str, low: int) -> tuple[int, ...]:
        try:
            values = tuple(int(v) for v in text.split(",") if v.strip())
        except ValueError:
            raise UserError(f"--{name}: expected comma-separated whole numbers, got {text!r}") from None
        if not values or min(values) < low:
            raise UserError(f"--{name}: values must be at least {low}")
        return values

    size_list, iteration_list = ints(sizes, "sizes", 16), ints(iterations, "iterations", 0)
    inits = tuple(dict.fromkeys(v.strip() for v in init.split(",") if v.strip()))

    header = [table_header(iteration_list)]  # printed with the first row, after the checks

    def on_row(row):
        print("\n".join(header + table_lines(row, iteration_list)), flush=True)
        header.clear()

    report = run_compare(contents, model, out, style, size_list, iteration_list, device.value, runs, on_row,
                         inits, seed)
    print(f"{report['machine']}; network on {report['backend']}; wrote {out}/report.json, report.csv, "
          f"loss_vs_iterations.png, grid.png", file=sys.stderr)


@app.command(help="List the shipped models: name, style, licence and how each was trained.")
def models():
    from fastnst.modelfile import WEIGHTS_DIR, list_models

    found = list_models()
    if not found:
        print(f"no shipped models in {WEIGHTS_DIR}")
        return
    print(f"{'name':<26}{'style':<22}{'precision':<10}{'MB':>6}  training")
    for m in found:
        print(f"{m['name']:<26}{m['style']:<22}{m['precision']:<10}{m['megabytes']:>6.1f}  {m['training']}"
              + (f"; style {m['licence']}" if m["licence"] else ""))


@app.command(help="A grid of photos times models, labelled by style: the README's gallery. The default photos "
                  "are scikit-image's bundled public-domain images (astronaut, coffee, chelsea, rocket).")
def gallery(
    out: Path = typer.Option(..., help="Output image (.jpg or .png)."),
    models: Optional[str] = typer.Option(None, help="Comma-separated model names or files "
                                                    "[default: every shipped fp32 model]."),
    photos: Optional[Path] = typer.Option(None, help="A folder of photos instead of scikit-image's."),
    tile: int = typer.Option(192, min=32, max=1024, help="Side of each cell of the grid."),
    work_size: int = typer.Option(512, min=32, max=4096, help="Side the photos are stylized at."),
    device: Device = DEVICE,
):
    require_training_install("fastnst gallery")
    from fastnst.gallery import folder_photos, make_gallery, skimage_photos
    from fastnst.modelfile import shipped_models

    names = [m.strip() for m in models.split(",") if m.strip()] if models else \
        [n for n in shipped_models() if "." not in n]
    if not names:
        raise UserError("no models: give --models or ship some in weights/")
    chosen = folder_photos(photos) if photos is not None else skimage_photos()
    path = make_gallery(names, chosen, out, tile, work_size, device.value)
    print(f"wrote {path}: {len(chosen)} photos x {len(names)} models ({', '.join(names)})", file=sys.stderr)


def _stop(signum, _frame):
    """SIGTERM and SIGHUP end a command as Ctrl-C does: by unwinding, so temporary files are removed.
    (Training catches SIGTERM itself, to write a checkpoint first.)"""
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> None:
    import signal

    for signum in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, _stop)
    try:
        rc = app(args=argv, prog_name="fastnst", standalone_mode=False)
        if rc == 130:  # typer's answer to Ctrl-C (and to SIGTERM, SIGHUP: see _stop)
            _err("interrupted")
        if isinstance(rc, int) and rc:
            sys.exit(rc)
    except _ClickException as e:  # bad options, caught by the parser
        _err(" ".join(e.format_message().split()))
        sys.exit(2)
    except typer.Abort:
        _err("aborted")
        sys.exit(130)
    except UserError as e:
        _err(str(e))
        sys.exit(2)
    except TrainingDiverged as e:
        _err(str(e))
        sys.exit(1)
    except Interrupted as e:
        _err(str(e))
        sys.exit(130)
    except KeyboardInterrupt:
        _err("interrupted")
        sys.exit(130)
    except OSError as e:  # an output that cannot be written (read-only, full disk, a file in the way)
        _err(f"{e.filename}: {e.strerror}" if e.filename else f"{e.strerror or e}")
        sys.exit(2)
