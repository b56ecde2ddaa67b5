"""The command line: `fastnst train | pack | export | stylize | flicker | optimize | compare | models | gallery | web`.

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

from fastnst.config import (DEFAULT_STYLE_DEPTH, DEFAULT_STYLE_STRENGTH, DEFAULT_TEMPORAL, DecoderConfig, LossConfig,
                            TrainConfig, parse_layer_weights)
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
DECODER_SETTINGS = {f.name: f for f in dataclasses.fields(DecoderConfig)}
LOSS_SETTINGS = {f.name for f in dataclasses.fields(LossConfig)}


def choices(name: str, *values: str) -> type[Enum]:
    return Enum(name, {v: v for v in values}, type=str)


LossNet, Device = choices("LossNet", "vgg19", "vgg16"), choices("Device", "auto", "cpu", "cuda")
Optim, Pooling = choices("Optim", "lbfgs", "adam"), choices("Pooling", "max", "avg")


def _err(message: str) -> None:
    print(f"fastnst: error: {message}", file=sys.stderr)


def say(*lines: str) -> None:
    """Messages go to stderr; stdout carries only what a command is asked for (tables, lists)."""
    print(*lines, sep="\n", file=sys.stderr, flush=True)


def option(name: str, *decls: str, settings: dict = SETTINGS, **kw):
    """A command-line option for the TrainConfig (or LossConfig, or `settings`') setting `name`: its
    documentation and default come from the dataclass, where they are declared; not given (None) means
    that default."""
    f = settings[name]
    shown = "" if f.default in (None, "", dataclasses.MISSING) else f" [default: {f.default}]"
    return typer.Option(None, *decls, help=f.metadata["doc"] + shown, **kw)


DEVICE = typer.Option(Device.auto, help="auto picks CUDA when available (to onnxruntime or PyTorch).")


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
    temporal_weight: Optional[float] = option("temporal_weight", min=0.0),
    init_from: Optional[list[str]] = option("init_from"),
    resume: Optional[Path] = typer.Option(None, help="Continue the run of this checkpoint exactly."),
):
    options = _given(locals(), exclude=("style", "resume"))
    require_training_install("fastnst train")
    from fastnst.training import train as run_training

    run_training(style, resume=resume, log=say, **options)


def decoder_option(name: str, **kw):
    return option(name, settings=DECODER_SETTINGS, **kw)


@app.command("train-decoders", help="Train the decoders of `stylize --style ANY_IMAGE` (universal style transfer, "
                                    "Li et al. 2017): they invert the loss network's features of photos; no style "
                                    "images are needed. Options not given take their defaults (or the checkpoint's).")
def train_decoders(
    data: Optional[str] = decoder_option("data"),
    out: Optional[Path] = decoder_option("out"),
    steps: Optional[int] = decoder_option("steps", min=1),
    batch_size: Optional[int] = decoder_option("batch_size", min=1),
    image_size: Optional[int] = decoder_option("image_size", min=32, max=4096),
    lr: Optional[float] = decoder_option("lr", min=1e-8, max=10.0),
    lr_decay: Optional[float] = decoder_option("lr_decay", min=0.0, max=1.0),
    width: Optional[float] = decoder_option("width", min=0.05, max=4.0),
    feature_weight: Optional[float] = decoder_option("feature_weight", min=0.0),
    transfer_weight: Optional[float] = decoder_option("transfer_weight", min=0.0),
    vgg_weights: Optional[str] = decoder_option("vgg_weights"),
    device: Optional[Device] = decoder_option("device"),
    checkpoint_every: Optional[int] = decoder_option("checkpoint_every", min=0),
    log_every: Optional[int] = decoder_option("log_every", min=1),
    workers: Optional[int] = decoder_option("workers", min=1, max=64),
    seed: Optional[int] = decoder_option("seed", min=0),
    init_from: Optional[Path] = decoder_option("init_from"),
    resume: Optional[Path] = typer.Option(None, help="Continue the run of this checkpoint exactly."),
):
    options = _given(locals(), exclude=("resume",))
    require_training_install("fastnst train-decoders")
    from fastnst.decoders import train_decoders as run_training

    run_training(resume=resume, log=say, **options)


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
    from fastnst.data import pack as write_pack_file

    write_pack_file(data, out, size, workers, log=say)


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
    from fastnst.export import describe, export_checked

    say(*describe(export_checked(model, out, fp16, opset, int8, calibration)))


@app.command(help="Stylize images, folders (recursive, mirrored under --out), globs, videos and frame folders.")
def stylize(
    inputs: list[str] = typer.Argument(..., metavar="INPUT...", help="Images, folders, globs or videos."),
    model: Optional[str] = typer.Option(None, help="A shipped model name (see `fastnst models`), an .onnx file or a "
                                                   ".safetensors model file; with --style: any-style (the default), "
                                                   "an exported decoders folder or a decoders file."),
    style: Optional[Path] = typer.Option(None, help="Any style image, with no model trained for it (universal "
                                                    "style transfer)."),
    style_strength: float = typer.Option(DEFAULT_STYLE_STRENGTH, min=0.0, max=1.0,
                                         help="With --style: blend the photo's features (0) with the style's (1)."),
    style_depth: int = typer.Option(DEFAULT_STYLE_DEPTH, min=1, max=4,
                                    help="With --style: the deepest level transformed (1: relu1_1 only, colour and "
                                         "fine texture; 4: from relu4_1, larger strokes)."),
    style_size: int = typer.Option(512, min=16, max=8192, help="With --style: long side of the style image."),
    style_pool: Optional[str] = typer.Option(None, metavar="K,S", help="With --style: average-pool the style image "
                                                                       "(kernel K, stride S) for smoother strokes."),
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
    temporal: Optional[float] = typer.Option(None, min=0.0, max=1.0, help="Blend each video frame with the last "
                                             "along the motion, against flicker (0: every frame on its own) "
                                             f"[default: {DEFAULT_TEMPORAL} for videos and GIFs; given, a folder's "
                                             "images are frames too]."),
    device: Device = DEVICE,
):
    from fastnst.jobs import stylize_inputs

    any_style = None if style is None else dict(style=style, style_strength=style_strength, style_size=style_size,
                                                style_pool=style_pool, style_depth=style_depth)
    summary, ok = stylize_inputs(inputs, model, out, device=device.value, tile=tile, log=say, max_size=max_size,
                                 keep_color=preserve_color, strength=strength, temporal=temporal, any_style=any_style)
    say(summary)
    if not ok:
        raise typer.Exit(1)


@app.command(help="Measure the flicker of a stylized video: its warping error against the input it was made "
                  "from (Lai et al. 2018), and the input's own (the floor). Videos, GIFs or frame folders.")
def flicker(
    video: Path = typer.Argument(..., metavar="INPUT", help="The input video (or GIF, or frame folder)."),
    stylized: Path = typer.Argument(..., metavar="STYLIZED", help="Its stylized version, the same frames."),
    json_out: Optional[Path] = typer.Option(None, "--json", help="Write the report and per-frame values here."),
    plot: Optional[Path] = typer.Option(None, help="Plot the per-frame warping errors here (.png)."),
):
    from fastnst.video import flicker as measure

    r = measure(video, stylized, json_out, plot)
    print(f"warping error {r['warping_error']:.5f} (input {r['input_warping_error']:.5f}) over {r['frames']} frames")


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
    loss = LossConfig(**_given({name: value for name, value in locals().items() if name in LOSS_SETTINGS}))
    require_training_install("fastnst optimize")
    if content.is_dir():
        from fastnst.teacher import optimize_folder

        done = optimize_folder(content, style, out, loss, dict(steps=steps, optimizer=optimizer.value, init=init,
                               size=size, style_size=style_size or size, lr=lr, seed=seed), device.value, log=say)
        return say(f"wrote {done} target(s) and {out / 'teacher.json'}: train with --teacher {out}")
    from fastnst.gatys import optimize_image

    last = optimize_image(content, style, out, loss, steps=steps, optimizer=optimizer.value, init=init, size=size,
                          style_size=style_size, lr=lr, preserve_color=preserve_color, snapshot_every=snapshot_every,
                          device=device.value, seed=seed, log=say)
    say(f"wrote {out} ({steps} {optimizer.value} iterations, J {last['J']:.4g}, {last['seconds']:.1f}s)")


@app.command(help="Compare a model with the Gatys optimizer on the same objective: J, matched iterations and "
                  "speedups (Johnson 2016, Figure 5 and Table 1).")
def compare(
    contents: list[Path] = typer.Argument(..., metavar="CONTENT...", help="Content images."),
    model: str = typer.Option(..., help="A shipped name, an .onnx file or a .safetensors model file; any-style "
                                        "(or decoders) with --style."),
    out: Path = typer.Option(..., help="Output folder for report.json, report.csv and the plots."),
    style: Optional[Path] = typer.Option(None, help="Style image [default: the style Gram matrices in the "
                                                    "model file]."),
    sizes: str = typer.Option("256,512", help="Long sides to compare at."),
    iterations: str = typer.Option("0,10,50,100,300,500", help="Optimizer iterations to record."),
    runs: int = typer.Option(5, min=1, max=100, help="Timed runs of the network (median)."),
    init: str = typer.Option("noise,content", help="Starts of the optimizer: noise (white noise, Johnson 2016's "
                                                   "protocol), content (the photo), or both."),
    seed: int = typer.Option(0, min=0, help="Random seed of the noise start."),
    style_weight: Optional[float] = typer.Option(None, min=0.0, help="Weight of the style loss in J [default: the "
                                                                     "model's; any-style: 1]."),
    device: Device = DEVICE,
):
    require_training_install("fastnst compare", ("torch", "safetensors", "matplotlib"))
    from fastnst.compare import compare as run_compare

    report = run_compare(contents, model, out, style, sizes, iterations, device.value, runs,
                         lambda text: print(text, flush=True), init, seed, style_weight)
    say(f"{report['machine']}; network on {report['backend']}; wrote {out}/report.json, report.csv, "
        f"loss_vs_iterations.png, grid.png")


@app.command(help="List the shipped models: name, style, licence and how each was trained.")
def models():
    from fastnst.modelfile import models_table

    print(*models_table(), sep="\n")


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
    from fastnst.gallery import gallery as make_gallery

    say(make_gallery(out, models, photos, tile, work_size, device.value))


@app.command(help="Serve the browser page and the shipped models on this machine (or --build a static site). "
                  "Photos never leave the browser.")
def web(
    port: int = typer.Option(8000, min=0, max=65535, help="Port to listen on (0: any free port)."),
    models: Optional[str] = typer.Option(None, help="Comma-separated shipped models [default: all]."),
    ort: Optional[Path] = typer.Option(None, help="A local onnxruntime-web dist/ folder to serve instead of the "
                                                  "pinned CDN copy (works offline)."),
    build: Optional[Path] = typer.Option(None, help="Write the site into this folder instead of serving it."),
):
    from fastnst import web as site

    if build is not None:
        return say(f"wrote {site.build(build, models, ort)} files to {build}: publish it on any static host")
    site.serve(port, models, ort, log=say)


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
    except (UserError, TrainingDiverged, Interrupted) as e:
        _err(str(e))
        sys.exit(1 if isinstance(e, TrainingDiverged) else 130 if isinstance(e, Interrupted) else 2)
    except (typer.Abort, KeyboardInterrupt) as e:
        _err("aborted" if isinstance(e, typer.Abort) else "interrupted")
        sys.exit(130)
    except OSError as e:  # an output that cannot be written (read-only, full disk, a file in the way)
        _err(f"{e.filename}: {e.strerror}" if e.filename else f"{e.strerror or e}")
        sys.exit(2)
