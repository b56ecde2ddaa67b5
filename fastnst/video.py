"""Video and animated GIF stylization.

Videos are decoded and encoded with PyAV (FFmpeg): every frame is stylized (in batches on a GPU)
and re-encoded with its own timestamp, so the output keeps the frame count and frame rate; audio
packets are copied unchanged. Animated GIFs go through Pillow, keeping frame durations and loop.
Outputs are written under a temporary name and renamed when complete.
"""

from __future__ import annotations

import functools
import os
import queue
import threading
from concurrent.futures import Future, ThreadPoolExecutor
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
                  temporal: float = DEFAULT_TEMPORAL, pipelined: bool = True,
                  on_frames: Callable[[int, int | None], None] | None = None) -> int:
    """Stylize every frame of the video or animated GIF `src` into `dst` (same frame count, frame
    rate and audio) with `model`, a Stylizer or a model name or file; returns the number of frames
    written. `temporal` blends each frame with the last along the motion (0: every frame on its
    own; see fastnst.temporal). `on_frames(done, total)` is called as frames are stylized.

    `pipelined`: decoding (with the motion between frames) and encoding run on threads beside the
    network, up to `queue_depth` frames ahead and behind; False does all of it in turn, frame by frame.
    With a PyTorch model on the GPU, frames are converted, stylized and blended there."""
    stylizer = Stylizer(model, device) if isinstance(model, (str, Path)) else model  # or AnyStyle
    src, dst = Path(src), Path(dst)
    if src.suffix.lower() == ".gif":
        return stylize_gif(stylizer, src, dst, max_size, preserve_color, strength, tile, on_frames,
                           TemporalBlend(temporal))
    if dst.suffix.lower() not in VIDEO_CODECS:
        raise UserError(f"{dst}: cannot write video with extension {dst.suffix!r}")

    # the route: uint8 frames kept on the model's GPU, or float frames through numpy
    torch_device = getattr(stylizer, "torch_device", None)
    if torch_device is not None and torch_device.type == "cuda" and not (tile or preserve_color):
        from fastnst.temporal_torch import TorchTemporalBlend

        blend = TorchTemporalBlend(temporal)
        stylize = functools.partial(_stylize_on_device, stylizer, blend=blend, strength=strength)
        motion = _flows  # the rest of each link is computed on the GPU
    else:
        blend = TemporalBlend(temporal)
        stylize = functools.partial(_stylize_on_host, stylizer, blend=blend, strength=strength, tile=tile,
                                    keep_color=preserve_color)
        motion = functools.partial(_link, strength=temporal)

    inp = _open(src)
    try:
        with atomic_path(dst) as tmp:
            vin = inp.streams.video[0]
            if pipelined:
                vin.thread_type = "AUTO"  # frame and slice threads
            ain = inp.streams.audio[0] if inp.streams.audio else None
            size = fit_max_size((vin.codec_context.width, vin.codec_context.height), max_size)
            output = _VideoOutput(tmp, dst, vin, ain, size)
            try:
                decoded = _decode(inp, vin, ain, size, motion if blend.strength else None, threaded=pipelined)
                batch = stylizer.batch_limit if pipelined else 1
                depth = queue_depth(size, batch) if pipelined else 0
                written = _stylize_stream(decoded, stylize, output.write, batch, depth,
                                          lambda done: on_frames and on_frames(done, vin.frames or None))
                output.finish()
            finally:
                output.close()
    except UserError:
        raise
    except Exception as e:
        raise UserError(f"{src}: video could not be processed ({e.__class__.__name__}: {e})") from None
    finally:
        inp.close()
    return written


LINK_THREADS = max(1, min(8, (os.cpu_count() or 2) // 2))  # computing the motion between frames ahead
QUEUE_BYTES = 10 ** 9  # what the frames queued ahead and behind may hold, about


def queue_depth(size: tuple[int, int], batch: int) -> int:
    """How many frames are decoded ahead of the network, and stylized frames wait for the encoder: 16,
    fewer for large frames (a frame ahead holds about 20 bytes a pixel with its motion), a batch at least."""
    return max(batch, min(16, QUEUE_BYTES // (20 * size[0] * size[1])))


def _stylize_stream(decoded: Iterator, stylize: Callable, write: Callable, batch_limit: int, depth: int,
                    on_frames: Callable[[int], object]) -> int:
    """Items of `_decode` in; frames stylized `batch_limit` at a time (each with its motion from the
    frame before); every item written in order. With a queue `depth`, decoding runs up to that many
    items ahead and writing behind, on threads; 0: all in turn. Returns the number of frames."""
    writer = _Behind(write, depth) if depth else None
    put = writer.put if writer else write
    written, pending = 0, []

    def flush():
        nonlocal written
        if pending:
            outputs = stylize(np.stack([rgb for _, _, rgb, _ in pending]), [_result(m) for *_, m in pending])
            for (pts, time_base, _, _), rgb in zip(pending, outputs):
                put(("video", (pts, time_base, rgb)))
            written += len(pending)
            pending.clear()
            on_frames(written)

    try:
        for kind, item in (_ahead(decoded, depth) if depth else decoded):
            if kind == "audio":
                put((kind, item))
            else:
                pending.append(item)
                if len(pending) >= batch_limit:
                    flush()
        flush()
    except BaseException:
        if writer:
            writer.abandon()
        raise
    if writer:
        writer.finish()
    return written


class _VideoOutput:
    """The output file: one video stream with the input's time base and frame rate at `size`, and the
    input's audio, copied when the container takes its codec, else re-encoded. `write` takes the
    items of `_stylize_stream` (from one thread)."""

    def __init__(self, path: Path, dst: Path, vin, ain, size: tuple[int, int]):
        import av

        self.av = av
        self.container = av.open(str(path), mode="w", format=None if dst.suffix.lower() != ".mkv" else "matroska")
        codec = VIDEO_CODECS[dst.suffix.lower()]
        self.video = self.container.add_stream(codec, rate=vin.average_rate or vin.guessed_rate or 24)
        self.video.width, self.video.height = size
        # H.264 takes odd sizes only in 4:4:4 (High 4:4:4: not every hardware player); others in 4:2:0.
        self.video.pix_fmt = "yuv444p" if codec == "libx264" and (size[0] % 2 or size[1] % 2) else "yuv420p"
        self.video.time_base = vin.time_base
        if codec == "libx264":
            self.video.options = {"crf": "18", "preset": "medium"}
        self.audio, self.remux = None, False
        if ain is not None:
            try:
                self.audio, self.remux = self.container.add_stream_from_template(ain), True
            except Exception:  # the container does not take the input's audio codec
                codec = FALLBACK_AUDIO.get(dst.suffix.lower(), "aac")
                self.audio = self.container.add_stream(codec, rate=ain.codec_context.sample_rate)

    def write(self, item: tuple) -> None:
        kind, payload = item
        if kind == "video":
            pts, time_base, rgb = payload
            frame = self.av.VideoFrame.from_ndarray(rgb, format="rgb24")
            frame.pts, frame.time_base = pts, time_base
            self._mux(self.video.encode(frame))
        elif self.remux:
            payload.stream = self.audio
            self.container.mux(payload)
        else:
            for samples in payload.decode():
                self._mux(self.audio.encode(samples))

    def _mux(self, packets) -> None:
        for packet in packets:
            self.container.mux(packet)

    def finish(self) -> None:
        """Flush the encoders."""
        self._mux(self.video.encode(None))
        if self.audio is not None and not self.remux:
            self._mux(self.audio.encode(None))

    def close(self) -> None:
        self.container.close()


def _to_uint8(image: np.ndarray) -> np.ndarray:
    """3 x H x W float in [0, 1] -> H x W x 3 uint8, rounded."""
    return (image.transpose(1, 2, 0) * 255.0 + 0.5).astype(np.uint8)


def _result(value):
    """A frame's motion, waiting for it when it is still being computed."""
    return value.result() if isinstance(value, Future) else value


def _stylize_on_host(stylizer: Stylizer, rgb: np.ndarray, links: list, *, blend: TemporalBlend, strength: float,
                     tile: int | None, keep_color: bool) -> list:
    """A batch of uint8 frames (N x H x W x 3) stylized and blended as float arrays; uint8 out."""
    batch = rgb.astype(np.float32).transpose(0, 3, 1, 2) / 255.0
    if tile or keep_color or strength < 1.0 or len(batch) == 1:
        result = [stylize_array(stylizer, image, tile, keep_color, strength) for image in batch]
    else:
        result = np.clip(stylizer.stylize_batch(batch), 0, 1)
    return [_to_uint8(blend.apply(image, link) if blend.strength else image) for image, link in zip(result, links)]


def _stylize_on_device(stylizer: Stylizer, rgb: np.ndarray, flows: list, *, blend, strength: float) -> list:
    """A batch of uint8 frames stylized, strength-blended and temporally blended (along the `flows` to
    each frame's predecessor) on the model's device; the outputs come back as uint8 H x W x 3."""
    import torch

    x = stylizer.upload(rgb)
    y = stylizer.stylize_tensor(x)
    if strength < 1.0:
        y = strength * y + (1.0 - strength) * x
    y = y.clamp_(0.0, 1.0)
    outputs = [blend.step(frame, image, f) if blend.strength else image for frame, image, f in zip(x, y, flows)]
    batch = torch.stack(outputs).mul_(255.0).add_(0.5).to(torch.uint8).permute(0, 2, 3, 1)
    return list(batch.cpu().numpy())


def _decode(inp, vin, ain, size: tuple[int, int], motion: Callable | None,
            threaded: bool) -> Iterator[tuple[str, object]]:
    """The input's packets in order: ("audio", packet) and ("video", (pts, time_base, rgb uint8
    H x W x 3, moved)), where moved is `motion(previous rgb, rgb)` (None for the first frame or
    with no motion); `threaded`: a Future of it, computed on threads while the network runs."""
    pool = ThreadPoolExecutor(LINK_THREADS) if motion and threaded else None
    previous = None
    try:
        for packet in inp.demux(*([vin] + ([ain] if ain is not None else []))):
            if packet.stream.type == "audio":
                if packet.dts is not None:
                    yield "audio", packet
                continue
            for frame in packet.decode():
                rgb = frame.to_ndarray(format="rgb24", width=size[0], height=size[1])
                moved = None
                if motion and previous is not None:
                    moved = pool.submit(motion, previous, rgb) if pool else motion(previous, rgb)
                previous = rgb
                yield "video", (frame.pts, frame.time_base, rgb, moved)
    except BaseException:  # the consumer stopped or decoding failed: links not started are dropped
        if pool:
            pool.shutdown(wait=False, cancel_futures=True)
        raise
    if pool:
        pool.shutdown(wait=False)  # the last links are still to be read


_thread = threading.local()  # each thread's own optical flow object


def _link(earlier: np.ndarray, later: np.ndarray, strength: float):
    """temporal.link between two uint8 H x W x 3 frames, with this thread's own optical flow."""
    from fastnst.temporal import link

    return link(_float(earlier), _float(later), strength, _thread_flow())


def _flows(earlier: np.ndarray, later: np.ndarray):
    """temporal.flows between two uint8 H x W x 3 frames, with this thread's own optical flow."""
    from fastnst.temporal import flows, gray

    return flows(gray(_float(earlier)), gray(_float(later)), _thread_flow())


def _thread_flow():
    from fastnst.temporal import BLEND_FLOW_PRESET, Flow

    if not hasattr(_thread, "flow"):
        _thread.flow = Flow(BLEND_FLOW_PRESET)
    return _thread.flow


def _float(rgb: np.ndarray) -> np.ndarray:
    """uint8 H x W x 3 -> float32 3 x H x W in [0, 1] (a view of channels-last memory)."""
    return np.divide(rgb, np.float32(255), dtype=np.float32).transpose(2, 0, 1)


_END = object()


def _ahead(items: Iterator, depth: int) -> Iterator:
    """`items`, produced on a thread up to `depth` ahead of the consumer; the producer's exception
    is raised here, and a consumer that stops stops the producer."""
    q: queue.Queue = queue.Queue(depth)
    stop = threading.Event()

    def offer(entry) -> bool:
        while not stop.is_set():
            try:
                q.put(entry, timeout=0.1)
                return True
            except queue.Full:
                pass
        return False

    def produce():
        try:
            for item in items:
                if not offer((item, None)):
                    return
            offer((_END, None))
        except BaseException as e:  # raised again in the consumer
            offer((_END, e))

    thread = threading.Thread(target=produce, daemon=True)
    thread.start()
    try:
        while True:
            item, error = q.get()
            if item is _END:
                if error is not None:
                    raise error
                return
            yield item
    finally:
        stop.set()
        thread.join()


class _Behind:
    """Calls `consume(item)` on a thread for each item `put`, in order, up to `depth` behind;
    `finish()` waits for the last one. The consumer's exception is raised by the next put or finish."""

    def __init__(self, consume: Callable, depth: int):
        self.consume, self.error = consume, None
        self.queue: queue.Queue = queue.Queue(depth)
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while (item := self.queue.get()) is not _END:
            if self.error is None:  # after a failure, items are drained unread so that put never blocks
                try:
                    self.consume(item)
                except BaseException as e:
                    self.error = e

    def put(self, item) -> None:
        if self.error is not None:
            raise self.error
        self.queue.put(item)

    def finish(self) -> None:
        self.queue.put(_END)
        self.thread.join()
        if self.error is not None:
            raise self.error

    def abandon(self) -> None:
        """Stop, dropping what is queued (the caller failed)."""
        self.error = self.error or RuntimeError("abandoned")
        self.queue.put(_END)
        self.thread.join()


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
