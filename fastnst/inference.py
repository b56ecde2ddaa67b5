"""Stylizing images with a trained model: onnxruntime for ONNX models, PyTorch for model files.

`Stylizer` resolves a model (a shipped name, an .onnx file or a .safetensors model file) and maps
float32 NCHW RGB batches in [0, 1] to stylized batches of the same shape. `stylize_image` adds
what a user asks of one image: --max-size, --tile (memory bounded by the tile size; seamless
with a PyTorch model, see fastnst.tiling), --preserve-color and --strength, with alpha kept.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

from fastnst.errors import UserError, require_training_install
from fastnst.images import array_to_pil, fit_max_size, pil_to_array, preserve_color
from fastnst.modelfile import model_sibling, read_onnx_metadata, resolve_model

def onnx_providers(device: str) -> list[str]:
    import onnxruntime as ort

    available = ort.get_available_providers()
    if device == "cuda":
        if "CUDAExecutionProvider" not in available:
            raise UserError("--device cuda: this onnxruntime has no CUDA provider (pip install onnxruntime-gpu), "
                            "or use a .safetensors model to run on PyTorch")
        return ["CUDAExecutionProvider", "CPUExecutionProvider"]
    if device == "auto" and "CUDAExecutionProvider" in available:
        return ["CUDAExecutionProvider", "CPUExecutionProvider"]
    return ["CPUExecutionProvider"]


class Stylizer:
    """A loaded model: `Stylizer("starry_night")(image)` stylizes a PIL image or a numpy array.

    The model is a shipped name, an .onnx file (onnxruntime) or a .safetensors model file
    (PyTorch, the training install). `stylize_batch` maps float32 N x 3 x H x W batches in [0, 1].
    """

    def __init__(self, model: str, device: str = "auto", tiling: bool = False, compile: bool = False,
                 fp16: bool = True):
        """tiling: prefer the PyTorch model file next to an ONNX model (NAME.safetensors beside
        NAME.onnx), whose tiles can share whole-image normalisation statistics (when torch is
        installed). On `device` cuda that file is preferred too: PyTorch runs it in `fp16` (autocast,
        channels-last; False: plain fp32) and `compile`d if asked (torch.compile: a minute to start)."""
        self.path = resolve_model(model)
        self.device = device
        if (tiling or device.startswith("cuda")) and self.path.suffix == ".onnx" and torch_installed():
            twin = model_sibling(self.path, ".safetensors")
            if twin.is_file():
                self.path = twin
        if self.path.suffix == ".onnx":
            self._load_onnx()
        else:
            self._load_torch(compile, fp16)
        self.name = self.metadata.get("style_name") or self.path.stem

    def _load_onnx(self) -> None:
        import onnxruntime as ort

        try:
            self.session = ort.InferenceSession(str(self.path), providers=onnx_providers(self.device))
        except UserError:
            raise
        except Exception as e:
            raise UserError(f"{self.path}: not a loadable ONNX model ({e.__class__.__name__})") from None
        self.metadata = read_onnx_metadata(self.session, self.path)
        self.input_name = self.session.get_inputs()[0].name
        self.output_name = self.session.get_outputs()[0].name
        self.backend = f"onnxruntime ({self.session.get_providers()[0]})"
        self.net = None
        self.batch_limit = 8 if "CUDA" in self.session.get_providers()[0] else 1

    def _load_torch(self, compile: bool = False, fp16: bool = True) -> None:
        require_training_install(f"{self.path}: a PyTorch model file (use its .onnx export, or)")
        import torch

        from fastnst.devices import resolve_device
        from fastnst.modelfile import load_model

        self.torch_device = resolve_device(self.device)
        self.net, self.metadata, _ = load_model(self.path, self.torch_device)
        self.session = None
        self.net.requires_grad_(False)
        on_gpu = self.torch_device.type == "cuda"
        self.channels_last = on_gpu and fp16
        if self.channels_last:
            self.net.to(memory_format=torch.channels_last)
        self.compiled = compile and on_gpu
        self.forward = torch.compile(self.net) if self.compiled else self.net
        self.autocast = torch.autocast("cuda", dtype=torch.float16, enabled=on_gpu and fp16)
        details = (", fp16" if on_gpu and fp16 else "") + (", compiled" if self.compiled else "")
        self.backend = f"PyTorch ({self.torch_device}{details})"
        self.batch_limit = 8 if on_gpu else 1
        self._torch = torch

    def stylize_batch(self, batch: np.ndarray) -> np.ndarray:
        """float32 N x 3 x H x W in [0, 1] -> the stylized batch, same shape."""
        batch = np.ascontiguousarray(batch, dtype=np.float32)
        if self.session is not None:
            return self.session.run([self.output_name], {self.input_name: batch})[0]
        return self.stylize_tensor(self._torch.from_numpy(batch).to(self.torch_device)).cpu().numpy()

    def upload(self, frames: np.ndarray):
        """uint8 N x H x W x 3 RGB frames -> float32 N x 3 x H x W in [0, 1] on the model's device
        (PyTorch models): the conversion runs there."""
        x = self._torch.from_numpy(frames).to(self.torch_device, non_blocking=True)
        return x.permute(0, 3, 1, 2).float().div_(255.0)

    def stylize_tensor(self, x):
        """A float32 N x 3 x H x W tensor in [0, 1] on the model's device -> the stylized batch,
        float32 there, not clipped (PyTorch models)."""
        torch = self._torch
        n = len(x)
        if self.compiled and n < self.batch_limit:  # one batch shape: a short last batch would recompile
            x = torch.cat([x, x[-1:].expand(self.batch_limit - n, -1, -1, -1)])
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.no_grad(), self.autocast:
            y = self.forward(x)
        return y[:n].float().contiguous()

    def __call__(self, image, *, strength: float = 1.0, preserve_color: bool = False, max_size: int | None = None,
                 tile: int | None = None):
        """Stylize one image and return the same type: a PIL image (RGB or RGBA: alpha kept), a
        uint8 array H x W x 3 or 4, or a float array H x W x 3 in [0, 1]. `strength` blends with
        the input (0 = the input, 1 = the full style), `preserve_color` keeps the input's colours,
        `max_size` scales the long side down, `tile` stylizes in tiles of that size."""
        if not 0.0 <= strength <= 1.0:
            raise ValueError(f"strength must be in [0, 1], got {strength}")
        if isinstance(image, Image.Image):
            from fastnst.images import to_rgb_or_rgba

            return stylize_image(self, to_rgb_or_rgba(image), max_size, tile, preserve_color, strength)
        a = np.asarray(image)
        if a.ndim != 3 or a.shape[2] not in (3, 4) or (a.shape[2] == 4 and a.dtype != np.uint8):
            raise ValueError(f"expected an H x W x 3 array (or H x W x 4 uint8), got shape {a.shape} {a.dtype}")
        if a.dtype == np.uint8:
            out = stylize_image(self, Image.fromarray(a, "RGBA" if a.shape[2] == 4 else "RGB"), max_size, tile,
                                preserve_color, strength)
            return np.asarray(out)
        chw = np.ascontiguousarray(a.transpose(2, 0, 1), dtype=np.float32)
        if max_size and max(chw.shape[1:]) > max_size:
            w, h = fit_max_size((chw.shape[2], chw.shape[1]), max_size)
            chw = np.stack([np.asarray(Image.fromarray(c, "F").resize((w, h), Image.LANCZOS)) for c in chw])
        return stylize_array(self, chw, tile, preserve_color, strength).transpose(1, 2, 0)


def torch_installed() -> bool:
    import importlib.util

    try:
        return importlib.util.find_spec("torch") is not None
    except ImportError:
        return False


def stylize_array(stylizer: Stylizer, image: np.ndarray, tile: int | None = None, keep_color: bool = False,
                  strength: float = 1.0) -> np.ndarray:
    """3 x H x W float32 in [0, 1] -> stylized, same shape."""
    if tile and max(image.shape[1:]) > tile:
        from fastnst.tiling import stylize_tiled

        out = stylize_tiled(stylizer, image, tile)
    else:
        out = stylizer.stylize_batch(image[None])[0]
    if keep_color:
        out = preserve_color(out, image)
    if strength < 1.0:
        out = strength * out + (1.0 - strength) * image
    return np.clip(out, 0.0, 1.0)


def stylize_image(stylizer: Stylizer, im: Image.Image, max_size: int | None = None, tile: int | None = None,
                  keep_color: bool = False, strength: float = 1.0, blend=None) -> Image.Image:
    """A PIL image (RGB or RGBA) -> its stylized version, RGBA keeping its alpha. `blend(image,
    stylized)`, given, makes the final output of the two arrays (a frame's temporal blending)."""
    size = fit_max_size(im.size, max_size)
    if size != im.size:
        im = im.resize(size, Image.LANCZOS)
    alpha = im.getchannel("A") if im.mode == "RGBA" else None
    image = pil_to_array(im)
    out = stylize_array(stylizer, image, tile, keep_color, strength)
    out = array_to_pil(blend(image, out) if blend else out)
    if alpha is not None:
        out.putalpha(alpha)
    return out
