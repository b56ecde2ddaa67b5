"""The gallery: a grid of photos (rows) times models (columns), each column labelled with its style.

The default photos are scikit-image's bundled public-domain test images, so anyone can rebuild the
README's gallery with `fastnst gallery --out gallery.jpg` and nothing else.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from fastnst.data import center_crop
from fastnst.errors import UserError
from fastnst.files import atomic_path, check_writable

SKIMAGE_PHOTOS = ("astronaut", "coffee", "chelsea", "rocket")
LABEL_HEIGHT = 28


def skimage_photos(names=SKIMAGE_PHOTOS) -> list[tuple[str, Image.Image]]:
    try:
        import skimage.data
    except ImportError:
        raise UserError("the default gallery photos come with scikit-image: pip install scikit-image "
                        "(or give --photos)") from None
    out = []
    for name in names:
        loader = getattr(skimage.data, name, None)
        if loader is None:
            raise UserError(f"scikit-image has no bundled photo {name!r}")
        out.append((name, Image.fromarray(np.asarray(loader())).convert("RGB")))
    return out


def square(im: Image.Image, size: int) -> Image.Image:
    """The centred square of `im`, resized to size x size."""
    return Image.fromarray(center_crop(im, size, Image.LANCZOS))


def folder_photos(folder: Path) -> list[tuple[str, Image.Image]]:
    """(name, image) of every photo in a folder, for --photos."""
    from fastnst.data import list_images
    from fastnst.images import load_rgb

    if not folder.is_dir():
        raise UserError(f"{folder}: no such folder")
    files = list_images(folder)
    if not files:
        raise UserError(f"{folder}: no images found")
    return [(f.stem, load_rgb(f)) for f in files]


def make_gallery(models: list[str], photos: list[tuple[str, Image.Image]], out: str | Path, tile: int = 192,
                 work_size: int = 512, device: str = "cpu") -> Path:
    """Stylize every photo (centre square at `work_size` px) with every model and write a grid:
    a column of the photos, then one column per model, labels on top. Returns the path."""
    from fastnst.inference import Stylizer, stylize_image

    check_writable(out)
    stylizers = [(name, Stylizer(name, device)) for name in models]
    columns = [("photo", [square(p, tile) for _, p in photos])]
    for name, stylizer in stylizers:
        styled = [stylize_image(stylizer, square(p, work_size)).resize((tile, tile), Image.LANCZOS)
                  for _, p in photos]
        columns.append((Path(name).stem.replace(".int8", ""), styled))
    grid = Image.new("RGB", (tile * len(columns), LABEL_HEIGHT + tile * len(photos)), "white")
    draw = ImageDraw.Draw(grid)
    font = ImageFont.load_default(size=16)
    for c, (label, images) in enumerate(columns):
        draw.text((c * tile + tile // 2, LABEL_HEIGHT // 2), label, fill="black", font=font, anchor="mm")
        for r, im in enumerate(images):
            grid.paste(im, (c * tile, LABEL_HEIGHT + r * tile))
    out = Path(out)
    with atomic_path(out) as tmp:
        grid.save(tmp, format="PNG" if out.suffix.lower() == ".png" else "JPEG", quality=90)
    return out


def gallery(out: str | Path, models: str | None = None, photos: str | Path | None = None, tile: int = 192,
            work_size: int = 512, device: str = "cpu") -> str:
    """`fastnst gallery`: `models` (comma-separated; default every shipped fp32 model) times
    `photos` (a folder; default scikit-image's). Returns a one-line summary."""
    from fastnst.modelfile import shipped_models

    names = [m.strip() for m in models.split(",") if m.strip()] if models else \
        [n for n in shipped_models() if "." not in n]
    if not names:
        raise UserError("no models: give --models or ship some in weights/")
    chosen = folder_photos(Path(photos)) if photos is not None else skimage_photos()
    path = make_gallery(names, chosen, out, tile, work_size, device)
    return f"wrote {path}: {len(chosen)} photos x {len(names)} models ({', '.join(names)})"
