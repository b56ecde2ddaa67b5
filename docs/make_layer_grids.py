"""The two classic experiments of Gatys et al., one `fastnst optimize` command each, per VGG layer:

- content reconstruction: from white noise, only the content term at one layer (style and TV weight 0);
- texture synthesis: from white noise, only the style term over the layers up to one (content weight 0).

Writes docs/layers.jpg: per row the target (the photo, the style), then one column per layer (for
texture synthesis, the style layers up to that one). The photo is
scikit-image's public-domain `coffee` (needs `pip install scikit-image`), the style Starry Night.

    python docs/make_layer_grids.py [--style PATH] [--size 128] [--steps 200]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

from PIL import Image, ImageDraw

ROOT = Path(__file__).resolve().parents[1]
LAYERS = ["relu1_1", "relu2_1", "relu3_1", "relu4_1", "relu5_1"]
# The default layer weights (fastnst.config.DEFAULT_LAYERS["vgg19"]["style"]), used for both experiments.
WEIGHTS = {"relu1_1": 1.5e-3, "relu2_1": 1.5e-5, "relu3_1": 3e-5, "relu4_1": 8e-7, "relu5_1": 8e-3}


def optimize(photo: Path, style: Path, out: Path, args, *options: str) -> Image.Image:
    cmd = [sys.executable, "-m", "fastnst", "optimize", "--content", str(photo), "--style", str(style),
           "--out", str(out), "--init", "noise", "--steps", str(args.steps), "--size", str(args.size),
           "--style-size", str(2 * args.size), "--device", "cpu", *options]
    subprocess.run(cmd, check=True, capture_output=True, text=True)
    return Image.open(out).convert("RGB")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--style", type=Path, default=ROOT.parent / "shared" / "data" / "styles" / "starry_night.jpg")
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--out", type=Path, default=ROOT / "docs" / "layers.jpg")
    args = ap.parse_args()
    import skimage.data

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        photo = tmp / "coffee.png"
        Image.fromarray(skimage.data.coffee()).save(photo)
        rows = {"content reconstruction": [], "texture synthesis": []}
        for i, layer in enumerate(LAYERS):
            rows["content reconstruction"].append(optimize(
                photo, args.style, tmp / f"c_{layer}.png", args, "--style-weight", "0", "--tv-weight", "0",
                "--content-layers", f"{layer}:1e-5"))
            upto = ",".join(f"{l}:{WEIGHTS[l]}" for l in LAYERS[:i + 1])
            rows["texture synthesis"].append(optimize(
                photo, args.style, tmp / f"s_{layer}.png", args, "--content-weight", "0", "--tv-weight", "0",
                "--style-layers", upto))
            print(f"{layer} done", flush=True)
        first = rows["content reconstruction"][0]
        w, h = first.size
        label_w, header = 150, 18
        style = Image.open(args.style).convert("RGB")
        style = style.resize((round(style.width * h / style.height), h))
        sources = [Image.open(photo).convert("RGB").resize((w, h)), style.crop((0, 0, w, h))]
        grid = Image.new("RGB", (label_w + w * (1 + len(LAYERS)), header + h * 2), "white")
        draw = ImageDraw.Draw(grid)
        for k, name in enumerate(["target"] + LAYERS):
            draw.text((label_w + k * w + w // 2, header // 2), name, fill="black", anchor="mm")
        for r, (name, images) in enumerate(rows.items()):
            y = header + r * h
            draw.text((6, y + h // 2), name, fill="black", anchor="lm")
            grid.paste(sources[r], (label_w, y))
            for k, im in enumerate(images):
                grid.paste(im, (label_w + (1 + k) * w, y))
        grid.save(args.out, quality=90)
        print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
