"""Video and animated GIF stylization.

Videos are decoded and encoded with PyAV (FFmpeg): every frame is stylized (in batches on a GPU)
and re-encoded with its own timestamp, so the output keeps the frame count and frame rate; audio
packets are copied unchanged. Animated GIFs go through Pillow, keeping frame durations and loop.
Outputs are written under a temporary name and renamed when complete.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Iterator

import numpy as np
from PIL import Image, ImageSequence

from fastnst.errors import UserError
from fastnst.files import atomic_path
from fastnst.images import IMAGE_EXTENSIONS, array_to_pil, fit_max_size, open_image, pil_to_array
from fastnst.inference import Stylizer, stylize_array
from fastnst.temporal import DEFAULT_TEMPORAL, TemporalBlend, measure_flicker

VIDEO_EXTENSIONS = {".mp4", ".mov", ".mkv", ".webm", ".avi", ".gif"}
VIDEO_CODECS = {".mp4": "libx264", ".mov": "libx264", ".mkv": "libx264", ".webm": "libvpx-vp9", ".avi": "mpeg4"}
FALLBACK_AUDIO = {".webm": "libopus", ".mkv": "aac", ".avi": "mp3"}


def _open(src: Path):
    import av

    if not src.is_file():
        raise UserError(f"{src}: no such file")
    if src.stat().st_size == 0:
        raise UserError(f"{src}: empty file (0 bytes)")
    try:
        container = av.open(str(src))
    except Exception as e:
        raise UserError(f"{src}: not a readable video ({e.__class__.__name__})") from None
    if not container.streams.video:
        container.close()
        raise UserError(f"{src}: has no video stream")
    return container


def probe(src: Path) -> dict:
    """Frame count (decoded), frame rate, size and whether there is audio."""
    with _open(src) as c:
        v = c.streams.video[0]
        n = sum(1 for _ in c.decode(v))
        return {"frames": n, "fps": v.average_rate, "width": v.codec_context.width,
                "height": v.codec_context.height, "audio": bool(c.streams.audio)}


def stylize_video(src: str | Path, dst: str | Path, model: Stylizer | str, *, max_size: int | None = None,
                  preserve_color: bool = False, strength: float = 1.0, tile: int | None = None, device: str = "auto",
                  temporal: float = DEFAULT_TEMPORAL,
                  on_frames: Callable[[int, int | None], None] | None = None) -> int:
    """Stylize every frame of the video or animated GIF `src` into `dst` (same frame count, frame
    rate and audio) with `model`, a Stylizer or a model name or file; returns the number of frames
    written. `temporal` blends each frame with the last along the motion (0: every frame on its
    own; see fastnst.temporal). `on_frames(done, total)` is called as frames are written."""
    stylizer = Stylizer(model, device) if isinstance(model, (str, Path)) else model  # or AnyStyle
    src, dst, keep_color = Path(src), Path(dst), preserve_color
    blend = TemporalBlend(temporal)
    if src.suffix.lower() == ".gif":
        return stylize_gif(stylizer, src, dst, max_size, keep_color, strength, tile, on_frames, blend)
    import av

    codec = VIDEO_CODECS.get(dst.suffix.lower())
    if codec is None:
        raise UserError(f"{dst}: cannot write video with extension {dst.suffix!r}")
    inp = _open(src)
    written = 0
    try:
        with atomic_path(dst) as tmp:
            vin = inp.streams.video[0]
            ain = inp.streams.audio[0] if inp.streams.audio else None
            total = vin.frames or None
            size = fit_max_size((vin.codec_context.width, vin.codec_context.height), max_size)
            out = av.open(str(tmp), mode="w", format=None if dst.suffix.lower() != ".mkv" else "matroska")
            rate = vin.average_rate or vin.guessed_rate or 24
            vout = out.add_stream(codec, rate=rate)
            vout.width, vout.height = size
            # H.264 takes odd sizes only in 4:4:4 (High 4:4:4: not every hardware player); others in 4:2:0.
            vout.pix_fmt = "yuv444p" if codec == "libx264" and (size[0] % 2 or size[1] % 2) else "yuv420p"
            vout.time_base = vin.time_base
            if codec == "libx264":
                vout.options = {"crf": "18", "preset": "medium"}
            aout = _audio_stream(out, ain, dst) if ain is not None else None

            pending: list = []

            def flush():
                nonlocal written
                if not pending:
                    return
                frames = np.stack([f.to_ndarray(format="rgb24", width=size[0], height=size[1]) for f in pending])
                batch = frames.astype(np.float32).transpose(0, 3, 1, 2) / 255.0
                if tile or keep_color or strength < 1.0 or stylizer.batch_limit == 1:
                    result = np.stack([stylize_array(stylizer, im, tile, keep_color, strength) for im in batch])
                else:
                    result = np.clip(stylizer.stylize_batch(batch), 0, 1)
                for f, source, img in zip(pending, batch, result):
                    img = blend.blend(source, img)
                    rgb = (img.transpose(1, 2, 0) * 255.0 + 0.5).astype(np.uint8)
                    frame = av.VideoFrame.from_ndarray(rgb, format="rgb24")
                    frame.pts, frame.time_base = f.pts, f.time_base
                    for packet in vout.encode(frame):
                        out.mux(packet)
                written += len(pending)
                pending.clear()
                if on_frames:
                    on_frames(written, total)

            streams = [vin] + ([ain] if ain is not None else [])
            for packet in inp.demux(*streams):
                if packet.stream.type == "audio":
                    if aout is None or packet.dts is None:
                        continue
                    if aout.get("remux"):
                        packet.stream = aout["stream"]
                        out.mux(packet)
                    else:
                        for af in packet.decode():
                            for p in aout["stream"].encode(af):
                                out.mux(p)
                    continue
                for frame in packet.decode():
                    pending.append(frame)
                    if len(pending) >= stylizer.batch_limit:
                        flush()
            flush()
            for packet in vout.encode(None):
                out.mux(packet)
            if aout is not None and not aout.get("remux"):
                for p in aout["stream"].encode(None):
                    out.mux(p)
            out.close()
    except UserError:
        raise
    except Exception as e:
        raise UserError(f"{src}: video could not be processed ({e.__class__.__name__}: {e})") from None
    finally:
        inp.close()
    return written


def _audio_stream(out, ain, dst: Path) -> dict:
    """Copy the audio track as is when the container takes its codec, else re-encode it."""
    try:
        return {"stream": out.add_stream_from_template(ain), "remux": True}
    except Exception:
        codec = FALLBACK_AUDIO.get(dst.suffix.lower(), "aac")
        stream = out.add_stream(codec, rate=ain.codec_context.sample_rate)
        return {"stream": stream, "remux": False}


def _read_gif(src: Path) -> tuple[list[Image.Image], list[int], int]:
    """An animated GIF's frames (RGB), their durations in ms and its loop count."""
    try:
        im = Image.open(src)
        frames, durations = [], []
        for frame in ImageSequence.Iterator(im):
            durations.append(frame.info.get("duration", im.info.get("duration", 100)))
            frames.append(frame.convert("RGB"))
    except Exception as e:
        raise UserError(f"{src}: not a readable GIF ({e.__class__.__name__})") from None
    return frames, durations, im.info.get("loop", 0)


def stylize_gif(stylizer: Stylizer, src: Path, dst: Path, max_size: int | None, keep_color: bool, strength: float,
                tile: int | None, on_frames=None, blend: TemporalBlend | None = None) -> int:
    frames, durations, loop = _read_gif(src)
    size = fit_max_size(frames[0].size, max_size)
    out = []
    for i, f in enumerate(frames):
        if f.size != size:
            f = f.resize(size, Image.LANCZOS)
        a = pil_to_array(f)
        styled = stylize_array(stylizer, a, tile, keep_color, strength)
        out.append(array_to_pil(blend.blend(a, styled) if blend else styled))
        if on_frames:
            on_frames(i + 1, len(frames))
    with atomic_path(dst) as tmp:
        out[0].save(tmp, format="GIF", save_all=True, append_images=out[1:], duration=durations,
                    loop=loop, optimize=False)
    return len(out)


def read_frames(src: str | Path) -> Iterator[np.ndarray]:
    """The frames of a video, an animated GIF or a folder of images (in name order), each
    3 x H x W float32 in [0, 1]."""
    src = Path(src)
    if src.is_dir():
        files = sorted(p for p in src.iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS and not p.name.startswith("."))
        if not files:
            raise UserError(f"{src}: no images in this folder")
        for path in files:
            yield pil_to_array(open_image(path))
        return
    if src.suffix.lower() == ".gif":
        yield from (pil_to_array(f) for f in _read_gif(src)[0])
        return
    with _open(src) as container:
        try:
            for frame in container.decode(container.streams.video[0]):
                yield frame.to_ndarray(format="rgb24").astype(np.float32).transpose(2, 0, 1) / 255.0
        except Exception as e:
            raise UserError(f"{src}: video could not be decoded ({e.__class__.__name__})") from None


def flicker(src: str | Path, stylized: str | Path, json_path: str | Path | None = None,
            plot_path: str | Path | None = None) -> dict:
    """`fastnst flicker`: the warping error of `stylized` (a video or frame folder) against the input
    `src` it was made from, and the input's own; written to `json_path` and plotted to `plot_path`."""
    import json

    from fastnst.files import check_writable

    for path in (src, stylized):
        if not Path(path).exists():
            raise UserError(f"{path}: no such file or folder")
    for path in (json_path, plot_path):
        if path is not None:
            check_writable(Path(path))
    if plot_path is not None:
        import importlib.util

        if importlib.util.find_spec("matplotlib") is None:
            raise UserError("--plot needs matplotlib: pip install matplotlib")
    try:
        report = measure_flicker(read_frames(src), read_frames(stylized))
    except ValueError as e:
        raise UserError(f"{src} and {stylized}: {e}") from None
    report = {"input": str(src), "stylized": str(stylized), **report}
    if json_path is not None:
        with atomic_path(Path(json_path)) as tmp:
            tmp.write_text(json.dumps(report, indent=2) + "\n")
    if plot_path is not None:
        _plot_flicker(report, Path(plot_path))
    return report


def _plot_flicker(report: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    frames = [p["frame"] for p in report["per_frame"]]
    fig, ax = plt.subplots(figsize=(7, 3.5))
    ax.plot(frames, [p["warping_error"] for p in report["per_frame"]], label=f"stylized ({report['warping_error']:.4g})")
    ax.plot(frames, [p["input_warping_error"] for p in report["per_frame"]],
            label=f"input ({report['input_warping_error']:.4g})")
    ax.set_xlabel("frame")
    ax.set_ylabel("warping error")
    ax.set_title(f"{Path(report['stylized']).name}: flicker against {Path(report['input']).name}")
    ax.legend()
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format=path.suffix.lstrip(".").lower() or "png", dpi=120)
    plt.close(fig)
