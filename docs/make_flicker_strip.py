"""docs/flicker.jpg: four consecutive frames of a clip (top), stylized frame by frame (middle) and
with `--temporal` (bottom), plus each stylized row's change from the frame before along the motion
(the warping error's picture: dark is stable).

    python docs/make_flicker_strip.py [--clip DIR] [--model starry_night] [--temporal 0.5] [--start 20]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from fastnst.images import array_to_pil
from fastnst.inference import Stylizer
from fastnst.temporal import Flow, Motion, TemporalBlend, gray, warp
from fastnst.video import read_frames

ROOT = Path(__file__).resolve().parents[1]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--clip", type=Path, default=ROOT.parent / "shared" / "data" / "video" / "sintel_mountain_2")
    ap.add_argument("--model", default="starry_night")
    ap.add_argument("--temporal", type=float, default=0.5)
    ap.add_argument("--start", type=int, default=20)
    ap.add_argument("--count", type=int, default=4)
    ap.add_argument("--cell", type=int, default=256)
    ap.add_argument("--out", type=Path, default=ROOT / "docs" / "flicker.jpg")
    args = ap.parse_args()
    stylizer = Stylizer(args.model, "cpu")
    blend = TemporalBlend(args.temporal)
    frames, plain, stable = [], [], []
    for i, frame in enumerate(read_frames(args.clip)):
        if i >= args.start + args.count:
            break
        styled = np.clip(stylizer.stylize_batch(frame[None])[0], 0, 1)
        blended = blend.blend(frame, styled)
        if i >= args.start - 1:
            frames.append(frame), plain.append(styled), stable.append(blended)
    flow = Flow("medium")

    def changes(outs):
        maps = []
        for k in range(1, len(frames)):
            motion = Motion.between(gray(frames[k - 1]), gray(frames[k]), flow)
            d = np.sqrt(((outs[k] - warp(outs[k - 1], motion.backward)) ** 2).sum(0)) * motion.mask
            maps.append(np.repeat(np.clip(d * 2, 0, 1)[None], 3, 0))
        return maps

    rows = [("input", frames[1:]), ("frame by frame", plain[1:]), (f"--temporal {args.temporal}", stable[1:]),
            ("change, frame by frame", changes(plain)), (f"change, --temporal {args.temporal}", changes(stable))]
    h, w = frames[0].shape[1:]
    cell_h = round(args.cell * h / w)
    label = 22
    sheet = Image.new("RGB", (args.cell * args.count, len(rows) * (cell_h + label)), "white")
    draw, font = ImageDraw.Draw(sheet), ImageFont.load_default(size=15)
    for r, (name, images) in enumerate(rows):
        y = r * (cell_h + label)
        draw.text((4, y + 3), name, fill="black", font=font)
        for c, im in enumerate(images):
            sheet.paste(array_to_pil(im).resize((args.cell, cell_h), Image.LANCZOS), (c * args.cell, y + label))
    sheet.save(args.out, quality=85)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
