"""Any style image at run time: universal style transfer with feature transforms (Li et al. 2017).

No network is trained for a style. The photo is encoded by the loss network to relu4_1; its features
are whitened (their covariance made the identity) and re-coloured with the style image's feature mean
and covariance, then decoded back to an image; the same again at relu3_1, relu2_1 and relu1_1 on the
result, coarse to fine. The Gram statistics that the objective J scores are what this matches.

The transform is numpy, between the encoder stages and decoders: exported to ONNX (a folder of
encoder<k>.onnx and decoder<k>.onnx) it runs in the light install; a decoders .safetensors file runs on
PyTorch. `AnyStyle` stylizes like `Stylizer`, so images, folders, videos, tiles, --preserve-color and
--temporal work the same.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path

import numpy as np

from fastnst.config import ANY_STYLE_LEVELS, DEFAULT_STYLE_DEPTH, DEFAULT_STYLE_STRENGTH, EIGEN_FLOOR
from fastnst.errors import UserError, require_training_install
from fastnst.images import load_rgb, pil_to_array, resize_long_side

MULTIPLE = 8  # three poolings to relu4_1: sides are padded to a multiple of 8, then cropped back
ONNX_FILES = [f"encoder{k + 1}.onnx" for k in range(len(ANY_STYLE_LEVELS))] + \
             [f"decoder{k + 1}.onnx" for k in range(len(ANY_STYLE_LEVELS))]


# -- the feature transform -----------------------------------------------------------------------------

def _eigen(features: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(mean, eigenvalues, eigenvectors) of the covariance of C x N features, in float64, without the
    directions whose eigenvalues are under EIGEN_FLOOR of the largest."""
    f = features.reshape(features.shape[0], -1)
    n = f.shape[1]
    mean = f.mean(1, keepdims=True).astype(np.float64)
    cov = ((f @ f.T).astype(np.float64) - n * mean @ mean.T) / max(n - 1, 1)
    values, vectors = np.linalg.eigh(cov)
    keep = values > max(values[-1], 1e-12) * EIGEN_FLOOR
    return mean, values[keep], vectors[:, keep]


def colouring(style_features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A style level's (mean, colouring matrix): the matrix gives whitened features the style's covariance."""
    mean, values, vectors = _eigen(style_features)
    return mean, (vectors * np.sqrt(values)) @ vectors.T


def whiten_colour(content: np.ndarray, style: tuple[np.ndarray, np.ndarray], strength: float = 1.0) -> np.ndarray:
    """C x H x W content features -> the same whitened and re-coloured with the style's (mean, colouring),
    blended with the content features by `strength` (Li et al.'s alpha). One matrix product: the
    blend, whitening and colouring fold into a C x C matrix and a bias."""
    c = content.reshape(content.shape[0], -1)
    mean, values, vectors = _eigen(c)
    transform = style[1] @ (vectors / np.sqrt(values)) @ vectors.T
    bias = style[0] - transform @ mean  # centring the content, then the style's mean
    transform, bias = strength * transform + (1.0 - strength) * np.eye(len(c)), strength * bias
    out = transform.astype(np.float32) @ c + bias.astype(np.float32)
    return out.reshape(content.shape)


# -- encoder stages and decoders ---------------------------------------------------------------------------

class OnnxStages:
    """The exported stages (a folder of ONNX files) on onnxruntime."""

    def __init__(self, folder: Path, device: str = "auto"):
        import onnxruntime as ort

        from fastnst.inference import onnx_providers

        missing = [name for name in ONNX_FILES if not (folder / name).is_file()]
        if missing:
            raise UserError(f"{folder}: not an exported any-style model (no {missing[0]})")
        providers = onnx_providers(device)
        try:
            self.sessions = {name: ort.InferenceSession(str(folder / name), providers=providers)
                             for name in ONNX_FILES}
        except Exception as e:
            raise UserError(f"{folder}: not loadable ONNX stages ({e.__class__.__name__})") from None
        props = self.sessions["decoder1.onnx"].get_modelmeta().custom_metadata_map
        self.metadata = json.loads(props.get("fastnst", "{}"))
        self.backend = f"onnxruntime ({self.sessions['decoder1.onnx'].get_providers()[0]})"

    def _run(self, name: str, x: np.ndarray) -> np.ndarray:
        session = self.sessions[name]
        return session.run(None, {session.get_inputs()[0].name: x})[0]

    def encode(self, image: np.ndarray, level: int) -> np.ndarray:
        x = image[None]
        for k in range(level + 1):
            x = self._run(f"encoder{k + 1}.onnx", x)
        return x[0]

    def decode(self, level: int, features: np.ndarray) -> np.ndarray:
        return self._run(f"decoder{level + 1}.onnx", features[None])[0]


def is_any_style(model: str) -> bool:
    """Whether `model` names any-style decoders (shipped, exported or a decoders file), not a per-style model."""
    from fastnst.modelfile import ANY_STYLE

    path = Path(model)
    if model == ANY_STYLE or (path.is_dir() and (path / "decoder1.onnx").is_file()):
        return True
    if path.suffix == ".safetensors" and path.is_file():
        require_training_install(f"{path}: a PyTorch model file (use its .onnx export, or)")
        from fastnst.decoders import read_decoders_metadata

        return read_decoders_metadata(path) is not None
    return False


def open_stages(model: str, device: str = "auto"):
    """A shipped name (any-style), a folder of exported stages, or a decoders .safetensors file (PyTorch):
    (its path, its stages), loaded once per process. On `device` cuda, the decoders file beside the
    exported folder runs on PyTorch (the training install)."""
    from fastnst.inference import torch_installed
    from fastnst.modelfile import model_sibling, resolve_any_style

    path = resolve_any_style(model)
    if path.is_dir() and device.startswith("cuda") and torch_installed():  # as Stylizer: PyTorch on a GPU
        twin = model_sibling(path, ".safetensors")
        path = twin if twin.is_file() else path
    return path, _load_stages(path.resolve(), device)


@functools.lru_cache(maxsize=4)
def _load_stages(path: Path, device: str):
    if path.is_dir():
        return OnnxStages(path, device)
    require_training_install(f"{path}: a PyTorch decoders file (use its ONNX export, or)")
    from fastnst.decoders import TorchStages

    return TorchStages(path, device)


# -- the style image and the transfer ---------------------------------------------------------------------

def parse_pool(spec: str | None) -> tuple[int, int] | None:
    """'K,S' -> (kernel, stride) of the average pooling applied to the style image."""
    if not spec:
        return None
    try:
        kernel, stride = (int(v) for v in spec.split(","))
    except ValueError:
        raise UserError(f"--style-pool {spec!r}: give a kernel and a stride, like 3,1") from None
    if kernel < 1 or stride < 1:
        raise UserError(f"--style-pool {spec!r}: the kernel and the stride must be at least 1")
    return kernel, stride


def average_pool(image: np.ndarray, kernel: int, stride: int) -> np.ndarray:
    """3 x H x W -> average-pooled with a kernel x kernel window every `stride` pixels (no padding)."""
    if kernel > min(image.shape[1:]):
        raise UserError(f"--style-pool: the kernel ({kernel}) is larger than the style image "
                        f"({image.shape[2]}x{image.shape[1]})")
    windows = np.lib.stride_tricks.sliding_window_view(image, (kernel, kernel), axis=(1, 2))
    return windows[:, ::stride, ::stride].mean(axis=(-2, -1)).astype(np.float32)


def pad_to_multiple(image: np.ndarray) -> np.ndarray:
    h, w = image.shape[1:]
    ph, pw = -h % MULTIPLE, -w % MULTIPLE
    return np.pad(image, ((0, 0), (0, ph), (0, pw)), mode="symmetric") if ph or pw else image


class AnyStyle:
    """`AnyStyle("wave.jpg")(image)`: stylize with any style image; the same calls as `Stylizer`.

    `model` is the shipped `any-style`, a folder of exported stages or a decoders .safetensors file;
    `style_strength` blends whitened-and-coloured features with the photo's (0: the photo, 1: the
    style); `style_size` is the style image's long side; `style_pool` average-pools it ("K,S");
    `style_depth` is the deepest level transformed (1: relu1_1 only, fine texture and colour; 4: from
    relu4_1, larger strokes)."""

    def __init__(self, style: str | Path, model: str = "any-style", device: str = "auto",
                 style_strength: float = DEFAULT_STYLE_STRENGTH, style_size: int = 512, style_pool: str | None = None,
                 style_depth: int = DEFAULT_STYLE_DEPTH):
        if not 0.0 <= style_strength <= 1.0:
            raise UserError(f"--style-strength must be in [0, 1], got {style_strength}")
        if not 1 <= style_depth <= len(ANY_STYLE_LEVELS):
            raise UserError(f"--style-depth must be 1 to {len(ANY_STYLE_LEVELS)}, got {style_depth}")
        self.path, self.stages = open_stages(model, device)
        self.metadata, self.backend = self.stages.metadata, self.stages.backend
        self.name, self.net, self.batch_limit = Path(style).stem, None, 1
        self.strength, self.depth = style_strength, style_depth
        self.style = cached_style_statistics(self.stages, style, style_size, parse_pool(style_pool), style_depth)

    def stylize_batch(self, batch: np.ndarray) -> np.ndarray:
        """float32 N x 3 x H x W in [0, 1] -> the stylized batch, same shape."""
        return np.stack([self.stylize_one(np.asarray(image, np.float32)) for image in batch])

    def stylize_one(self, image: np.ndarray) -> np.ndarray:
        h, w = image.shape[1:]
        x = pad_to_multiple(image)
        for level in reversed(range(self.depth)):  # coarse to fine
            features = whiten_colour(self.stages.encode(x, level), self.style[level], self.strength)
            x = np.clip(self.stages.decode(level, features), 0.0, 1.0)
        return x[:, :h, :w]

    def __call__(self, image, **options):
        from fastnst.inference import Stylizer

        return Stylizer.__call__(self, image, **options)


def style_statistics(stages, style: str | Path, size: int, pool: tuple[int, int] | None = None,
                     depth: int = len(ANY_STYLE_LEVELS)) -> list:
    """The (mean, colouring) of a style image at long side `size`, average-pooled by `pool`, at each of
    the `depth` first levels."""
    image = pil_to_array(resize_long_side(load_rgb(style), size))
    if pool:
        image = average_pool(image, *pool)
    x = pad_to_multiple(image)
    return [colouring(stages.encode(x, level)) for level in range(depth)]


def cached_style_statistics(stages, style: str | Path, size: int, pool: tuple[int, int] | None = None,
                            depth: int = len(ANY_STYLE_LEVELS)) -> list:
    """style_statistics, computed once per style image (and its modification time), size, pooling and depth."""
    path = Path(style).resolve()
    return _cached(stages, str(path), path.stat().st_mtime if path.exists() else 0.0, size, pool, depth)


@functools.lru_cache(maxsize=16)
def _cached(stages, style: str, _mtime: float, size: int, pool: tuple[int, int] | None, depth: int) -> list:
    return style_statistics(stages, style, size, pool, depth)
