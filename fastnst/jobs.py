"""The `stylize` job: which inputs become which outputs, and running them.

Inputs are image files, folders (recursive: every image and video inside, the tree mirrored
under the output folder; a folder of frames is one such folder), glob patterns and videos.
Outputs never overwrite inputs, appear whole or not at all, and a bad input in a batch is
reported and skipped while the others are still written.
"""

from __future__ import annotations

import glob
from dataclasses import dataclass
from pathlib import Path

from fastnst.errors import UserError
from fastnst.images import IMAGE_EXTENSIONS, open_image, save_image_atomic
from fastnst.inference import Stylizer, stylize_image
from fastnst.temporal import DEFAULT_TEMPORAL, TemporalBlend
from fastnst.video import VIDEO_EXTENSIONS, stylize_video

MEDIA_EXTENSIONS = IMAGE_EXTENSIONS | VIDEO_EXTENSIONS


@dataclass
class Job:
    src: Path
    dst: Path

    @property
    def is_video(self) -> bool:
        return self.src.suffix.lower() in VIDEO_EXTENSIONS


def _expand(inputs: list[str]) -> tuple[list[tuple[Path, Path | None]], list[str]]:
    """Each input -> (file, folder it came from or None); globs expanded, folders walked. Also the
    inputs that yield nothing (a glob matching nothing, a folder with no media), each as a message."""
    found: list[tuple[Path, Path | None]] = []
    empty: list[str] = []
    for raw in inputs:
        path = Path(raw)
        if not path.exists() and any(c in raw for c in "*?["):
            matches = sorted(Path(m) for m in glob.glob(raw, recursive=True))
            matches = [m for m in matches if m.is_dir() or m.suffix.lower() in MEDIA_EXTENSIONS]
            if not matches:
                empty.append(f"{raw}: no image or video matches this pattern")
            found += [(m, None) for m in matches if m.is_file()]
            for m in matches:
                if m.is_dir():
                    found += [(f, m) for f in _walk(m)]
        elif path.is_dir():
            files = _walk(path)
            if not files:
                empty.append(f"{path}: no images or videos in this folder")
            found += [(f, path) for f in files]
        else:
            found.append((path, None))
    return found, empty


def _walk(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in MEDIA_EXTENSIONS
                  and not p.name.startswith("."))


def plan(inputs: list[str], out: str | None, style: str) -> tuple[list[Job], list[str]]:
    """Decide every output path -> (jobs, inputs that yield nothing, as messages). Without --out,
    outputs go beside their inputs with the style's name appended (photo.jpg -> photo_<style>.jpg;
    folder -> folder_<style>/...). If nothing at all is to be done, the first such message is raised."""
    found, empty = _expand(inputs)
    if empty and not found:
        raise UserError(empty[0])
    out_path = Path(out) if out else None
    # One named file writes to --out itself, unless --out is a folder (exists, ends in /, or has no
    # extension); a glob, a folder or several inputs always write into the folder --out.
    single_file = (len(inputs) == 1 and len(found) == 1 and found[0][1] is None
                   and Path(inputs[0]).exists())
    out_is_dir = out_path is not None and (out_path.is_dir() or str(out).endswith(("/", "\\"))
                                           or not out_path.suffix or not single_file)
    if out_path is not None and out_path.exists() and not out_path.is_dir() and not single_file:
        raise UserError(f"{out_path}: --out must be a folder when stylizing several inputs")
    jobs = []
    for src, root in found:
        suffix = src.suffix
        if root is not None:
            base = out_path / root.name if (out_is_dir and len(inputs) > 1) else out_path
            if base is None:
                base = root.parent / f"{root.name}_{style}"
            dst = base / src.relative_to(root)
        elif out_path is None:
            dst = src.with_name(f"{src.stem}_{style}{suffix}")
        elif out_is_dir:
            dst = out_path / src.name
        else:
            dst = out_path
        jobs.append(Job(src, dst))
    _refuse_overwrites(jobs)
    return jobs, empty


def _refuse_overwrites(jobs: list[Job]) -> None:
    sources = {j.src.resolve() for j in jobs if j.src.exists()}
    seen: dict[Path, Path] = {}
    for j in jobs:
        d = j.dst.resolve()
        if d in sources:
            raise UserError(f"{j.dst}: --out would overwrite an input; choose another output")
        if d in seen:
            raise UserError(f"{seen[d]} and {j.src} would both be written to {j.dst}")
        seen[d] = j.src


def check_input(src: Path) -> None:
    if not src.exists():
        raise UserError(f"{src}: no such file")
    if src.suffix.lower() not in MEDIA_EXTENSIONS:
        raise UserError(f"{src}: not an image or video fastnst reads (extension {src.suffix or 'none'!r})")


def run_job(job: Job, stylizer: Stylizer, max_size=None, tile=None, keep_color=False, strength=1.0,
            temporal: float | None = None, on_frames=None, frames: TemporalBlend | None = None) -> None:
    """Stylize one input into its output; any failure is a one-line UserError naming the file.
    `temporal`: the blending of a video's frames (None: the default); `frames`: the blending of an
    image with the image before it, as frames of one sequence."""
    check_input(job.src)
    try:
        if job.is_video:
            stylize_video(job.src, job.dst, stylizer, max_size=max_size, preserve_color=keep_color,
                          strength=strength, tile=tile, on_frames=on_frames,
                          temporal=DEFAULT_TEMPORAL if temporal is None else temporal)
            return
        im = open_image(job.src)
        out = stylize_image(stylizer, im, max_size, tile, keep_color, strength, frames.blend if frames else None)
        if out.mode == "RGBA" and job.dst.suffix.lower() in (".jpg", ".jpeg", ".bmp"):
            out = out.convert("RGB")  # these formats have no alpha
        try:
            save_image_atomic(out, job.dst)
        except ValueError as e:  # Pillow cannot write this image in this format
            raise UserError(f"{job.dst}: could not write ({e})") from None
    except OSError as e:  # an output that cannot be written (read-only, full disk): reported, a batch goes on
        raise UserError(f"{job.dst}: could not write ({e.strerror or e})") from None


def run_jobs(jobs: list[Job], stylizer: Stylizer, progress, batch: bool, **options) -> int:
    """Run every job (options: those of run_job). In a `batch` a bad input is reported through
    `progress.error` and skipped; alone, it is raised. Returns how many failed. Given --temporal,
    the images of one folder are frames of one sequence, in name order."""
    failed, sequences = 0, {}
    temporal = options.get("temporal")
    for job in jobs:
        frames = None
        if temporal and not job.is_video:
            frames = sequences.setdefault(job.src.parent, TemporalBlend(temporal))
        try:
            run_job(job, stylizer, **options, on_frames=progress.frames if job.is_video else None, frames=frames)
        except UserError as e:
            if not batch:
                raise
            failed += 1
            progress.error(str(e))
        progress.done(job)
    return failed


def stylize_inputs(inputs: list[str], model: str | None, out: str | None = None, *, device: str = "auto",
                   tile: int | None = None, log=print, any_style: dict | None = None, **options) -> tuple[str, bool]:
    """`fastnst stylize`: every input into its output (options: those of run_job), with progress
    on the terminal; with `any_style` (AnyStyle's style, style_strength, style_size, style_pool), in
    any style image. Returns a one-line summary and whether every input was written."""
    from fastnst.progress import StylizeProgress

    if len(inputs) == 1 and not Path(inputs[0]).exists() and not any(c in inputs[0] for c in "*?["):
        raise UserError(f"{inputs[0]}: no such file")  # before loading a model: a quick answer
    if any_style is not None:
        from fastnst.anystyle import AnyStyle
        from fastnst.modelfile import ANY_STYLE

        stylizer = AnyStyle(model=model or ANY_STYLE, device=device, **any_style)
    elif model is None:
        raise UserError("give --model (a shipped name, an .onnx or .safetensors file) or --style ANY_IMAGE")
    else:
        stylizer = Stylizer(model, device, tiling=tile is not None)
    if tile is not None and stylizer.net is None and any_style is None:
        log(f"warning: {stylizer.path.name} runs on ONNX: its tiles are normalised one by one and blended, so "
            "colours can shift between tiles; a .safetensors model gives seamless tiles (with the training install)")
    jobs, empty = plan(inputs, out, stylizer.name)
    with StylizeProgress(len(jobs)) as progress:
        for message in empty:  # beside good inputs: reported and skipped
            progress.error(message)
        failed = run_jobs(jobs, stylizer, progress, batch=len(jobs) + len(empty) > 1, tile=tile, **options)
    summary = (f"stylized {len(jobs) - failed} of {len(jobs)} input(s) with {stylizer.name} ({stylizer.backend})"
               + (f"; {failed} failed" if failed else "") + (f"; {len(empty)} gave nothing" if empty else "")
               + (f": {jobs[0].dst}" if len(jobs) == 1 else ""))
    return summary, not (failed or empty)
