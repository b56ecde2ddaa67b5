"""Reading and writing images, whatever their mode, and the tensor conversions.

Every image becomes an RGB float tensor in [0, 1] (alpha is returned separately), with its
EXIF orientation applied. Grayscale, palette, CMYK, 16-bit and float images are accepted.
"""

from __future__ import annotations

from pathlib import Path

from typing import TYPE_CHECKING

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from fastnst.errors import UserError
from fastnst.files import atomic_path

if TYPE_CHECKING:  # the light install (stylizing with ONNX models) has no torch
    import torch

# Every still-image format Pillow both reads and writes (an output keeps its input's format), but for
# GIF and APNG (animations: stylized as videos) and those that need outside programs or plugins.
Image.init()
NOT_STILL_OR_NEEDS_PLUGINS = {".gif", ".apng", ".eps", ".ps", ".bufr", ".grib", ".h5", ".hdf", ".emf", ".wmf"}
IMAGE_EXTENSIONS = {ext for ext, fmt in Image.registered_extensions().items()
                    if fmt in Image.OPEN and fmt in Image.SAVE} - NOT_STILL_OR_NEEDS_PLUGINS

# Decompression-bomb protection stays on, but at a limit that lets real high-resolution
# photos (and --tile on huge ones) through.
Image.MAX_IMAGE_PIXELS = 1 << 31


def open_image(path: str | Path) -> Image.Image:
    """Open and fully decode an image, upright, as PIL RGB or RGBA.

    Raises UserError with a one-line reason for a missing, empty, truncated or non-image file.
    """
    path = Path(path)
    if not path.exists():
        raise UserError(f"{path}: no such file")
    if path.is_dir():
        raise UserError(f"{path}: is a folder, not an image")
    try:
        if path.stat().st_size == 0:
            raise UserError(f"{path}: empty file (0 bytes)")
        with Image.open(path) as im:
            im.load()  # decode now, so truncation is found here and not later
            im = ImageOps.exif_transpose(im)
            return to_rgb_or_rgba(im)
    except UserError:
        raise
    except UnidentifiedImageError:
        raise UserError(f"{path}: not an image file (unrecognised format)") from None
    except PermissionError:
        raise UserError(f"{path}: permission denied") from None
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
        raise UserError(f"{path}: corrupt or truncated image ({e})") from None


def to_rgb_or_rgba(im: Image.Image) -> Image.Image:
    """Convert any PIL mode to RGB, or RGBA when the image carries transparency."""
    if im.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        # 16-bit, 32-bit and float grayscale, scaled to 8 bits by the bit depth (not by the values
        # found: a dark 16-bit image stays dark). Pillow opens 16-bit PNGs as I;16 (or I).
        a = np.asarray(im, dtype=np.float64)
        if im.mode == "F":
            hi = 1.0 if a.max() <= 1.0 else 255.0
        else:
            hi = 65535.0 if im.mode.startswith("I;16") or a.max() <= 65535 else 2.0**32 - 1
        a = np.clip(a / hi * 255.0 + 0.5, 0, 255).astype(np.uint8)
        return Image.fromarray(a, "L").convert("RGB")
    has_alpha = im.mode in ("RGBA", "LA", "PA") or (im.mode == "P" and "transparency" in im.info)
    if has_alpha:
        return im.convert("RGBA")
    return im.convert("RGB")


def load_rgb(path: str | Path) -> Image.Image:
    """Open an image as PIL RGB (alpha dropped)."""
    return open_image(path).convert("RGB")


def to_tensor(im: Image.Image) -> torch.Tensor:
    """PIL RGB image -> float tensor 3xHxW in [0, 1]."""
    import torch

    a = np.asarray(im.convert("RGB"), dtype=np.uint8)
    return torch.from_numpy(a.copy()).permute(2, 0, 1).contiguous().float().div_(255.0)


def to_pil(t: torch.Tensor) -> Image.Image:
    """Float tensor 3xHxW (or 1x3xHxW) in [0, 1] -> PIL RGB image."""
    import torch

    if t.dim() == 4:
        t = t[0]
    a = t.detach().float().clamp(0, 1).mul(255.0).round().to(torch.uint8).permute(1, 2, 0).cpu().numpy()
    return Image.fromarray(a, "RGB")


def load_image_tensor(path: str | Path, long_side: int) -> torch.Tensor:
    """An image file as a 1 x 3 x H x W float tensor in [0, 1], resized so its long side is `long_side`."""
    return to_tensor(resize_long_side(load_rgb(path), long_side)).unsqueeze(0)


def pil_to_array(im: Image.Image) -> np.ndarray:
    """PIL image -> float32 3 x H x W in [0, 1] (RGB)."""
    return np.asarray(im.convert("RGB"), np.float32).transpose(2, 0, 1) / 255.0


def array_to_pil(a: np.ndarray) -> Image.Image:
    """float 3 x H x W in [0, 1] -> PIL RGB image."""
    return Image.fromarray((np.clip(a, 0, 1) * 255.0 + 0.5).astype(np.uint8).transpose(1, 2, 0), "RGB")


def fit_max_size(size: tuple[int, int], max_size: int | None) -> tuple[int, int]:
    """(w, h) scaled down so the long side is at most max_size (never up)."""
    w, h = size
    if max_size and max(w, h) > max_size:
        s = max_size / max(w, h)
        w, h = max(1, round(w * s)), max(1, round(h * s))
    return w, h


def preserve_color(stylized: np.ndarray, content: np.ndarray) -> np.ndarray:
    """Luminance-only transfer: the stylized image's luma (BT.601) with the content's chroma."""
    m = np.array([[0.299, 0.587, 0.114], [-0.168736, -0.331264, 0.5], [0.5, -0.418688, -0.081312]], np.float32)
    inv = np.linalg.inv(m).astype(np.float32)
    ys = np.tensordot(m, stylized, axes=1)
    yc = np.tensordot(m, content, axes=1)
    merged = np.concatenate([ys[:1], yc[1:]], axis=0)
    return np.clip(np.tensordot(inv, merged, axes=1), 0.0, 1.0)


def resize_long_side(im: Image.Image, size: int) -> Image.Image:
    """Resize so that the longer side is `size` pixels, keeping the aspect ratio."""
    w, h = im.size
    scale = size / max(w, h)
    return im.resize((max(1, round(w * scale)), max(1, round(h * scale))), Image.LANCZOS)


def save_image_atomic(im: Image.Image, path: str | Path, **save_kwargs) -> None:
    """Write an image under a temporary name in the same folder, then rename: whole or not at all."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fmt = Image.registered_extensions().get(path.suffix.lower())
    if fmt is None:
        raise UserError(f"{path}: unknown image extension {path.suffix!r}")
    if fmt == "JPEG" and im.mode not in ("RGB", "L"):
        im = im.convert("RGB")
    if fmt == "JPEG":
        save_kwargs.setdefault("quality", 95)
    with atomic_path(path) as tmp:
        im.save(tmp, format=fmt, **save_kwargs)
