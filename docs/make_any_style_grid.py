"""The any-style grid: photos x public-domain style images that no model was trained on, and the
`--style-pool` sweep (average pooling of the style image, kernel K and stride S).

Writes docs/any-style.jpg: a header row of the style images, then one row per photo; below, one photo in
one style at each pooling. The photos are scikit-image's bundled public-domain images (needs
`pip install scikit-image`), the styles from ../shared/data/styles (public domain, see its README).

    python docs/make_any_style_grid.py [--model any-style] [--cell 192]
"""

from __future__ import annotations

import argparse
from pathlib import Path

from PIL import Image, ImageDraw

from fastnst.anystyle import AnyStyle
from fastnst.gallery import skimage_photos

ROOT = Path(__file__).resolve().parents[1]
STYLES = ("vg_houses", "shipwreck_of_the_minotaur", "tahiti_gauguin", "woman_with_hat_matisse")
POOLS = (None, "3,1", "5,1", "4,2", "8,4")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="any-style")
    ap.add_argument("--styles", type=Path, default=ROOT.parent / "shared" / "data" / "styles")
    ap.add_argument("--cell", type=int, default=192)
    ap.add_argument("--work-size", type=int, default=384, help="Long side the photos are stylized at.")
    ap.add_argument("--out", type=Path, default=ROOT / "docs" / "any-style.jpg")
    args = ap.parse_args()
    cell, label_h = args.cell, 18

    def square(im: Image.Image) -> Image.Image:
        s = min(im.size)
        return im.crop(((im.width - s) // 2, (im.height - s) // 2, (im.width + s) // 2, (im.height + s) // 2))

    def thumb(im: Image.Image) -> Image.Image:
        return square(im).resize((cell, cell), Image.LANCZOS)

    photos = [(name, square(im).resize((args.work_size, args.work_size), Image.LANCZOS))
              for name, im in skimage_photos()]
    rows = [[Image.new("RGB", (cell, cell), "white")] + [thumb(Image.open(args.styles / f"{s}.jpg").convert("RGB"))
                                                         for s in STYLES]]
    labels = [["photo \\ style"] + list(STYLES)]
    for name, photo in photos:
        rows.append([thumb(photo)] + [thumb(AnyStyle(args.styles / f"{s}.jpg", args.model)(photo)) for s in STYLES])
        labels.append([name] + [""] * len(STYLES))
    name, photo = photos[0]
    style = STYLES[1]
    rows.append([thumb(photo)] + [thumb(AnyStyle(args.styles / f"{style}.jpg", args.model, style_pool=p)(photo))
                                  for p in POOLS])
    labels.append([f"{name}, {style[:12]}"] + [f"--style-pool {p}" if p else "no pooling" for p in POOLS])

    width = max(len(r) for r in rows) * cell
    grid = Image.new("RGB", (width, len(rows) * (cell + label_h)), "white")
    draw = ImageDraw.Draw(grid)
    for y, (row, row_labels) in enumerate(zip(rows, labels)):
        top = y * (cell + label_h)
        for x, (im, label) in enumerate(zip(row, row_labels)):
            draw.text((x * cell + cell // 2, top + label_h // 2), label[:30], fill="black", anchor="mm")
            grid.paste(im, (x * cell, top + label_h))
    grid.save(args.out, quality=88)
    print(f"wrote {args.out} ({grid.width}x{grid.height})")


if __name__ == "__main__":
    main()
