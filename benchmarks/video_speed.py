"""Video throughput: the pipelined video path against the frame-by-frame one, in one run.

The shared Big Buck Bunny clip (640x360, 24 fps, audio) is scaled to --size (1920x1080 by default)
and written to a temporary file; then frames per second are measured

- for the network alone (with the copies to and from the device): the baseline, one fp32 frame at
  a time from float frames on the host, against the video path's batches of uint8 frames converted
  on the device (fp16, channels-last on a GPU; and compiled);
- each CPU stage alone (decoding, the motion between frames for the temporal blend, encoding), to
  see which one bounds the end-to-end rate;
- end to end (`stylize_video`: decode, stylize, temporal blend, encode, audio copied; file to
  file), `pipelined=False` with the baseline network against the default path.

Every ratio is against the baseline measured in the same run. cuDNN autotuning and TF32 stay at
PyTorch's defaults throughout.

    python benchmarks/video_speed.py [--device cuda] [--size 1920x1080] [--frames 240] [--compile]
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from fastnst.config import DEFAULT_TEMPORAL  # noqa: E402
from fastnst.inference import Stylizer  # noqa: E402
from fastnst.video import probe, stylize_video  # noqa: E402

CLIP = ROOT.parent / "shared" / "data" / "video" / "big_buck_bunny_640x360.mp4"


def scaled_clip(src: Path, dst: Path, size: tuple[int, int], frames: int) -> Path:
    """The first `frames` frames of `src` scaled to `size` (H.264, near lossless), its audio copied."""
    import av

    with av.open(str(src)) as inp, av.open(str(dst), "w") as out:
        vin = inp.streams.video[0]
        vout = out.add_stream("libx264", rate=vin.average_rate)
        vout.width, vout.height, vout.pix_fmt = size[0], size[1], "yuv420p"
        vout.time_base = vin.time_base
        vout.options = {"crf": "12", "preset": "ultrafast"}
        ain = inp.streams.audio[0] if inp.streams.audio else None
        aout = out.add_stream_from_template(ain) if ain is not None else None
        n, end = 0, None
        for packet in inp.demux(*[s for s in (vin, ain) if s is not None]):
            if packet.stream.type == "audio":
                if packet.dts is not None and (end is None or packet.pts * packet.time_base < end):
                    packet.stream = aout
                    out.mux(packet)
                continue
            for frame in packet.decode():
                if n == frames:
                    end = end or frame.pts * frame.time_base
                    continue
                scaled = frame.reformat(width=size[0], height=size[1], format="yuv420p")
                scaled.pts, scaled.time_base = frame.pts, frame.time_base
                for p in vout.encode(scaled):
                    out.mux(p)
                n += 1
        for p in vout.encode(None):
            out.mux(p)
    return dst


def frames_per_second(run, frames: int) -> float:
    t = time.perf_counter()
    run()
    return frames / (time.perf_counter() - t)


def network_alone(stylizer: Stylizer, rgb: np.ndarray, batched: bool) -> float:
    """Frames per second of the network with its copies: the baseline takes float frames one at a
    time on the host; the video path takes uint8 batches and converts them on the device."""
    if not batched or stylizer.net is None:
        batch = rgb.astype(np.float32).transpose(0, 3, 1, 2) / 255.0
        run = lambda: [stylizer.stylize_batch(batch[i:i + 1]) for i in range(len(batch))]  # noqa: E731
    else:
        import torch

        def run():
            for i in range(0, len(rgb), stylizer.batch_limit):
                y = stylizer.stylize_tensor(stylizer.upload(rgb[i:i + stylizer.batch_limit])).clamp_(0, 1)
                y.mul(255).add_(0.5).to(torch.uint8).cpu()
    run()  # warm-up (and compiling)
    return frames_per_second(run, len(rgb))


def stages_alone(clip: Path, rgb: np.ndarray) -> dict[str, float]:
    """Frames per second of each stage of the video path on its own, on this machine's CPU: decoding
    to RGB (with FFmpeg's threads), the motion between frames (one thread, and the path's pool; the
    GPU route computes only the optical flows on the CPU), encoding (H.264 as stylize_video writes it)."""
    from concurrent.futures import ThreadPoolExecutor

    import av

    from fastnst.video import LINK_THREADS, _flows, _link

    def decode():
        with av.open(str(clip)) as c:
            c.streams.video[0].thread_type = "AUTO"
            for _, f in zip(range(len(rgb)), c.decode(video=0)):
                f.to_ndarray(format="rgb24")

    def links(threads, motion=lambda a, b: _link(a, b, DEFAULT_TEMPORAL)):
        with ThreadPoolExecutor(threads) as pool:
            list(pool.map(lambda i: motion(rgb[i - 1], rgb[i]), range(1, len(rgb))))

    def encode():
        with av.open(os.devnull, "w", format="mp4") as out:
            v = out.add_stream("libx264", rate=24)
            v.width, v.height, v.pix_fmt = rgb.shape[2], rgb.shape[1], "yuv420p"
            v.options = {"crf": "18", "preset": "medium"}
            for i, frame in enumerate(rgb):
                f = av.VideoFrame.from_ndarray(frame, format="rgb24")
                f.pts = i
                for packet in v.encode(f):
                    out.mux(packet)
            for packet in v.encode(None):
                out.mux(packet)

    return {"decode to RGB": frames_per_second(decode, len(rgb)),
            "motion (CPU route: flows and link), 1 thread": frames_per_second(lambda: links(1), len(rgb) - 1),
            f"motion (CPU route), {LINK_THREADS} threads": frames_per_second(lambda: links(LINK_THREADS),
                                                                               len(rgb) - 1),
            f"motion (GPU route: flows only), {LINK_THREADS} threads":
                frames_per_second(lambda: links(LINK_THREADS, _flows), len(rgb) - 1),
            "encode H.264 (crf 18, medium)": frames_per_second(encode, len(rgb))}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="starry_night", help="a shipped name or model file")
    ap.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    ap.add_argument("--size", default="1920x1080", help="WxH the clip is scaled to")
    ap.add_argument("--frames", type=int, default=240, help="frames of the clip (at most 240)")
    ap.add_argument("--network-frames", type=int, default=64, help="frames for the network-alone rows")
    ap.add_argument("--temporal", type=float, default=DEFAULT_TEMPORAL)
    ap.add_argument("--compile", action="store_true", help="also measure the compiled network (CUDA)")
    args = ap.parse_args()
    size = tuple(int(v) for v in args.size.lower().split("x"))
    tmp = Path(tempfile.mkdtemp())
    clip = scaled_clip(CLIP, tmp / "clip.mp4", size, args.frames)
    info = probe(clip)

    import torch

    cuda = args.device == "cuda" or (args.device == "auto" and torch.cuda.is_available())
    device = "cuda" if cuda else "cpu"
    baseline = Stylizer(args.model, device, fp16=False)
    fast = {"video path": Stylizer(args.model, device)}
    if args.compile and cuda:
        fast["video path, compiled"] = Stylizer(args.model, device, compile=True)
    machine = torch.cuda.get_device_name() if cuda else \
        f"CPU {platform.processor() or platform.machine()}, {os.cpu_count()} cores"
    print(f"video_speed: {machine}; torch {torch.__version__}; model {args.model}; clip {info['width']}x"
          f"{info['height']}, {info['frames']} frames, audio {'copied' if info['audio'] else 'none'}; "
          f"temporal {args.temporal}")

    import av

    with av.open(str(clip)) as c:
        rgb = np.stack([f.to_ndarray(format="rgb24") for _, f in zip(range(args.network_frames), c.decode(video=0))])
    for name, fps in stages_alone(clip, rgb).items():
        print(f"stage alone, {name}: {fps:8.2f} frames/s")
    base = network_alone(baseline, rgb, batched=False)
    print(f"network alone, baseline ({baseline.backend}, 1 frame at a time): {base:8.2f} frames/s")
    for name, stylizer in fast.items():
        if stylizer.net is None:
            continue  # ONNX: the same frame-at-a-time call as the baseline
        fps = network_alone(stylizer, rgb, batched=True)
        print(f"network alone, {name} ({stylizer.backend}, batch {stylizer.batch_limit}): {fps:8.2f} frames/s "
              f"({fps / base:.2f}x)")

    n = info["frames"]
    base = frames_per_second(lambda: stylize_video(clip, tmp / "base.mp4", baseline, temporal=args.temporal,
                                                   pipelined=False), n)
    print(f"end to end, baseline (frame by frame, {baseline.backend}): {base:8.2f} frames/s")
    for name, stylizer in fast.items():
        fps = frames_per_second(lambda: stylize_video(clip, tmp / "out.mp4", stylizer, temporal=args.temporal), n)
        print(f"end to end, {name} (pipelined, {stylizer.backend}): {fps:8.2f} frames/s ({fps / base:.2f}x)")
    if args.temporal:
        stylizer = fast["video path"]
        fps = frames_per_second(lambda: stylize_video(clip, tmp / "still.mp4", stylizer, temporal=0.0), n)
        print(f"end to end, video path without the temporal blend: {fps:8.2f} frames/s ({fps / base:.2f}x)")


if __name__ == "__main__":
    main()
