"""Video and animated GIF stylization.

Videos are decoded and encoded with PyAV (FFmpeg): every frame is stylized (in batches on a GPU)
and re-encoded with its own timestamp, so the output keeps the frame count and frame rate; audio
packets are copied unchanged. Animated GIFs go through Pillow, keeping frame durations and loop.
Outputs are written under a temporary name and renamed when complete.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np
from PIL import Image, ImageSequence

from fastnst.errors import UserError
from fastnst.files import atomic_path
from fastnst.images import array_to_pil, fit_max_size
from fastnst.inference import Stylizer, stylize_array

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
                  on_frames: Callable[[int, int | None], None] | None = None) -> int:
    """Stylize every frame of the video or animated GIF `src` into `dst` (same frame count, frame
    rate and audio) with `model`, a Stylizer or a model name or file; returns the number of frames
    written. `on_frames(done, total)` is called as frames are written."""
    stylizer = model if isinstance(model, Stylizer) else Stylizer(model, device)
    src, dst, keep_color = Path(src), Path(dst), preserve_color
    if src.suffix.lower() == ".gif":
        return stylize_gif(stylizer, src, dst, max_size, keep_color, strength, tile, on_frames)
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
                for f, img in zip(pending, result):
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


def stylize_gif(stylizer: Stylizer, src: Path, dst: Path, max_size: int | None, keep_color: bool, strength: float,
                tile: int | None, on_frames=None) -> int:
    try:
        im = Image.open(src)
        frames, durations = [], []
        for frame in ImageSequence.Iterator(im):
            durations.append(frame.info.get("duration", im.info.get("duration", 100)))
            frames.append(frame.convert("RGB"))
    except Exception as e:
        raise UserError(f"{src}: not a readable GIF ({e.__class__.__name__})") from None
    size = fit_max_size(frames[0].size, max_size)
    out = []
    for i, f in enumerate(frames):
        if f.size != size:
            f = f.resize(size, Image.LANCZOS)
        a = np.asarray(f, np.float32).transpose(2, 0, 1) / 255.0
        out.append(array_to_pil(stylize_array(stylizer, a, tile, keep_color, strength)))
        if on_frames:
            on_frames(i + 1, len(frames))
    with atomic_path(dst) as tmp:
        out[0].save(tmp, format="GIF", save_all=True, append_images=out[1:], duration=durations,
                    loop=im.info.get("loop", 0), optimize=False)
    return len(out)
