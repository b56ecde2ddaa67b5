"""Model files: finding them (shipped names in weights/, .onnx and .safetensors paths), their
metadata, and the PyTorch model file itself. Loading never unpickles anything.

A PyTorch model file is safetensors: `net.<param>` (the TransformerNet state dict) and
`style_gram.<layer>` (the style targets, so a model can be evaluated against its style without
the style image). Its metadata (safetensors header, key "fastnst") is a JSON object with at least
  format, fastnst_version, style_name, style_sha256, network, loss_network, loss, config,
  steps, images_seen, final_losses.
An exported ONNX model carries the same JSON in its `metadata_props` (key "fastnst").

Finding models and reading ONNX metadata need only onnxruntime (the light install); the PyTorch
model file needs torch and safetensors (the training install).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TYPE_CHECKING

from fastnst.errors import UserError, require_training_install

if TYPE_CHECKING:
    import torch

    from fastnst.network import TransformerNet

FORMAT = "fastnst-model-1"


def _weights_dir() -> Path:
    """FASTNST_WEIGHTS if set; else weights/ of the checkout (an editable install), else the copy an
    installed fastnst carries (share/fastnst/weights under its prefix)."""
    import sys

    if "FASTNST_WEIGHTS" in os.environ:
        return Path(os.environ["FASTNST_WEIGHTS"])
    checkout = Path(__file__).resolve().parents[1] / "weights"
    installed = Path(sys.prefix) / "share" / "fastnst" / "weights"
    return checkout if checkout.is_dir() or not installed.is_dir() else installed


WEIGHTS_DIR = _weights_dir()


# -- finding models ------------------------------------------------------------------------------

def shipped_models() -> dict[str, Path]:
    """Shipped model names -> their ONNX files in weights/ (`NAME.onnx`, variants `NAME.int8.onnx`)."""
    if not WEIGHTS_DIR.is_dir():
        return {}
    return {p.name[: -len(".onnx")]: p for p in sorted(WEIGHTS_DIR.glob("*.onnx"))}


def model_sibling(path: Path, suffix: str) -> Path:
    """A file shipped beside a model: weights/NAME.int8.onnx -> weights/NAME.safetensors, NAME.md."""
    return path.with_name(path.name.split(".")[0] + suffix)


def resolve_model(model: str) -> Path:
    """A shipped name, an .onnx file or a .safetensors model file -> its path."""
    path = Path(model)
    if path.suffix in (".onnx", ".safetensors"):
        if not path.is_file():
            raise UserError(f"{path}: no such model file")
        return path
    names = shipped_models()
    if model in names:
        return names[model]
    if path.is_file():
        raise UserError(f"{path}: a model must be an .onnx file, a .safetensors model file or a shipped name")
    known = ", ".join(n for n in names if "." not in n) or "none installed"
    raise UserError(f"unknown model {model!r}: give a shipped name ({known}), an .onnx file or a .safetensors file")


ANY_STYLE = "any-style"  # the shipped decoders of `stylize --style ANY_IMAGE`: weights/any-style/


def resolve_any_style(model: str) -> Path:
    """`any-style`, a folder of exported any-style stages, or a decoders .safetensors file -> its path."""
    path = Path(model)
    if model == ANY_STYLE and not path.exists():
        path = WEIGHTS_DIR / ANY_STYLE
        if not path.is_dir():
            raise UserError(f"no shipped any-style model in {WEIGHTS_DIR}: give a decoders file or its export")
    if path.is_dir() or (path.suffix == ".safetensors" and path.is_file()):
        return path
    if path.suffix == ".safetensors":
        raise UserError(f"{path}: no such decoders file")
    raise UserError(f"--model {model!r} with --style: give {ANY_STYLE}, a folder exported from a decoders file, "
                    "or a decoders .safetensors file (a per-style model has its style built in)")


VALUE_RANGE = "float32 NCHW RGB in [0, 1]"  # the ONNX models' input and output


def write_onnx_metadata(model, meta: dict, precision: str) -> None:
    """Put a model's metadata into an ONNX model's metadata_props (replacing what was there)."""
    import fastnst

    props = {"fastnst": json.dumps({**meta, "onnx_precision": precision}, sort_keys=True),
             "fastnst_version": fastnst.__version__, "style_name": str(meta.get("style_name", "")),
             "value_range": VALUE_RANGE, "precision": precision}
    del model.metadata_props[:]
    for k, v in props.items():
        entry = model.metadata_props.add()
        entry.key, entry.value = k, v


def read_onnx_metadata(session, path: Path) -> dict:
    """The fastnst metadata of a loaded onnxruntime session (of the file `path`)."""
    props = session.get_modelmeta().custom_metadata_map
    if "fastnst" not in props:
        raise UserError(f"{path}: an ONNX model, but not a fastnst model (no fastnst metadata)")
    meta = _parse_metadata(props["fastnst"], path)
    inputs = session.get_inputs()
    shape = inputs[0].shape if len(inputs) == 1 else None
    if shape is None or len(shape) != 4 or shape[1] != 3 or inputs[0].type != "tensor(float)":
        found = "several inputs" if shape is None else f"{inputs[0].type} of shape {shape}"
        raise UserError(f"{path}: a fastnst model takes one float32 N x 3 x H x W image; this one takes {found}")
    return meta


def _parse_metadata(raw: str, path: Path) -> dict:
    """The fastnst JSON of a model file, checked for what loading and reporting need."""
    try:
        meta = json.loads(raw)
    except ValueError:
        raise UserError(f"{path}: its fastnst metadata is not valid JSON") from None
    if not isinstance(meta, dict):
        raise UserError(f"{path}: its fastnst metadata is not a JSON object")
    return meta


def card_licence(path: Path) -> str:
    """The style's licence, from the `- licence:` line of the model card shipped beside a model."""
    card = model_sibling(path, ".md")
    if card.is_file():
        for line in card.read_text().splitlines():
            if line.lower().startswith(("- licence", "- license")):
                return line.split(":", 1)[-1].strip()
    return ""


def list_models() -> list[dict]:
    """The shipped models: name, style, precision, file, size, how each was trained, licence."""
    import onnxruntime as ort

    models = []
    for name, path in shipped_models().items():
        try:
            session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        except Exception as e:
            raise UserError(f"{path}: not a loadable ONNX model ({e.__class__.__name__})") from None
        meta = read_onnx_metadata(session, path)
        cfg, final = meta.get("config", {}), meta.get("final_losses") or {}
        models.append({
            "name": name, "style": meta.get("style_name", "?"), "precision": meta.get("onnx_precision", "fp32"), "path": path,
            "megabytes": path.stat().st_size / 1e6, "licence": card_licence(path),
            "training": f"{meta.get('steps', '?')} steps x {cfg.get('batch_size', '?')} at "
                        f"{cfg.get('image_size', '?')}px on {meta.get('device', '?')}, final J "
                        f"{final.get('total', float('nan')):.3g}",
        })
    folder = WEIGHTS_DIR / ANY_STYLE
    if (folder / "decoder1.onnx").is_file():
        session = ort.InferenceSession(str(folder / "decoder1.onnx"), providers=["CPUExecutionProvider"])
        meta = _parse_metadata(session.get_modelmeta().custom_metadata_map.get("fastnst", "{}"), folder)
        cfg = meta.get("config", {})
        models.append({
            "name": ANY_STYLE, "style": "any (--style IMAGE)", "precision": "fp32", "path": folder,
            "megabytes": sum(f.stat().st_size for f in folder.iterdir()) / 1e6, "licence": card_licence(folder),
            "training": f"decoders, {meta.get('steps', '?')} steps x {cfg.get('batch_size', '?')} photos at "
                        f"{cfg.get('image_size', '?')}px on {meta.get('device', '?')}",
        })
    return models


def models_table() -> list[str]:
    """`fastnst models`: a header and one line per shipped model."""
    found = list_models()
    if not found:
        return [f"no shipped models in {WEIGHTS_DIR}"]
    return [f"{'name':<26}{'style':<22}{'precision':<10}{'MB':>6}  training"] + [
        f"{m['name']:<26}{m['style']:<22}{m['precision']:<10}{m['megabytes']:>6.1f}  {m['training']}"
        + (f"; style {m['licence']}" if m["licence"] else "") for m in found]


# -- the PyTorch model file ------------------------------------------------------------------------

def save_model(path: str | Path, net: TransformerNet, style_grams: dict[str, torch.Tensor], metadata: dict) -> None:
    from safetensors.torch import save_file

    from fastnst.files import atomic_path

    path = Path(path)
    tensors = {f"net.{k}": v.detach().float().cpu().contiguous() for k, v in net.state_dict().items()}
    tensors.update({f"style_gram.{l}": g.detach().float().cpu().reshape(g.shape[-2:]).contiguous()
                    for l, g in style_grams.items()})
    meta = {"format": FORMAT, "network": net.config(), **metadata}
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata={"fastnst": json.dumps(meta, sort_keys=True)})


def read_metadata(path: str | Path) -> dict:
    require_training_install(f"{path}: a PyTorch model file", ("torch", "safetensors"))
    from safetensors import safe_open

    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: no such model file")
    try:
        with safe_open(str(path), framework="pt") as f:
            raw = (f.metadata() or {}).get("fastnst")
    except Exception:
        raise UserError(f"{path}: not a fastnst model file (not readable as safetensors)") from None
    if raw is None:
        raise UserError(f"{path}: a safetensors file, but not a fastnst model (no fastnst metadata)")
    meta = _parse_metadata(raw, path)
    if meta.get("format") != FORMAT:
        raise UserError(f"{path}: unsupported fastnst model format {meta.get('format')!r}")
    network = meta.get("network")
    if not isinstance(network, dict) or not all(isinstance(network.get(k), int) for k in ("width", "blocks")):
        raise UserError(f"{path}: its metadata does not describe the network (network.width, network.blocks)")
    return meta


def load_model(path: str | Path, device: str | torch.device = "cpu") -> tuple[TransformerNet, dict, dict]:
    """-> (network in eval mode, metadata, style Gram matrices)."""
    meta = read_metadata(path)
    from safetensors.torch import load_file

    from fastnst.network import TransformerNet

    tensors = load_file(str(path), device=str(device))
    net = TransformerNet(meta["network"]["width"], meta["network"]["blocks"])
    state = {k[4:]: v for k, v in tensors.items() if k.startswith("net.")}
    try:
        net.load_state_dict(state)
    except RuntimeError as e:
        raise UserError(f"{path}: weights do not fit the network its metadata describes ({str(e).splitlines()[0]})") \
            from None
    grams = {k[len("style_gram."):]: v.unsqueeze(0) for k, v in tensors.items() if k.startswith("style_gram.")}
    return net.to(device).eval(), meta, grams
