"""Trained-model files: safetensors with the network's weights, the style's Gram matrices
and JSON metadata saying how the model was made. Loading never unpickles anything.

Tensors: `net.<param>` (the TransformerNet state dict) and `style_gram.<layer>` (the style
targets, so a model can be evaluated against its style without the style image).
Metadata (safetensors header, key "fastnst"): a JSON object with at least
  format, fastnst_version, style_name, style_sha256, network, loss_network, loss, config,
  steps, images_seen, final_losses.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from fastnst.errors import UserError
from fastnst.files import atomic_path
from fastnst.network import TransformerNet

FORMAT = "fastnst-model-1"


def save_model(path: str | Path, net: TransformerNet, style_grams: dict[str, torch.Tensor], metadata: dict) -> None:
    from safetensors.torch import save_file

    path = Path(path)
    tensors = {f"net.{k}": v.detach().float().cpu().contiguous() for k, v in net.state_dict().items()}
    tensors.update({f"style_gram.{l}": g.detach().float().cpu().reshape(g.shape[-2:]).contiguous()
                    for l, g in style_grams.items()})
    meta = {"format": FORMAT, "network": net.config(), **metadata}
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata={"fastnst": json.dumps(meta, sort_keys=True)})


def read_metadata(path: str | Path) -> dict:
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
    meta = json.loads(raw)
    if meta.get("format") != FORMAT:
        raise UserError(f"{path}: unsupported fastnst model format {meta.get('format')!r}")
    return meta


def load_model(path: str | Path, device: str | torch.device = "cpu") -> tuple[TransformerNet, dict, dict]:
    """-> (network in eval mode, metadata, style Gram matrices)."""
    from safetensors.torch import load_file

    meta = read_metadata(path)
    tensors = load_file(str(path), device=str(device))
    net = TransformerNet(**meta["network"])
    state = {k[4:]: v for k, v in tensors.items() if k.startswith("net.")}
    try:
        net.load_state_dict(state)
    except RuntimeError as e:
        raise UserError(f"{path}: weights do not fit the network its metadata describes ({str(e).splitlines()[0]})") \
            from None
    grams = {k[len("style_gram."):]: v.unsqueeze(0) for k, v in tensors.items() if k.startswith("style_gram.")}
    return net.to(device).eval(), meta, grams
