"""Model cards: the Markdown page that ships beside each model in weights/, made from its metadata."""

from __future__ import annotations

import json
from pathlib import Path

from fastnst.modelfile import read_metadata


def model_card(model_path: str | Path, title: str, style_source: str, licence: str, notes: str = "",
               training_time: str = "") -> str:
    meta = read_metadata(model_path)
    cfg, loss = meta["config"], meta["loss"]
    final = meta.get("final_losses") or {}
    lines = [
        f"# {title}",
        "",
        f"- style: {style_source}",
        f"- licence: {licence}",
        f"- style image sha256: `{meta['style_sha256']}`",
        f"- data: {meta['data']}",
        f"- training: {meta['steps']} steps, batch {cfg['batch_size']}, {meta['images_seen']} images seen, "
        f"{cfg['image_size']}px crops, style image at {cfg['style_size']}px, Adam lr {cfg['lr']}, seed {cfg['seed']}",
        *([f"- started from: the {init['style_name']} model `{Path(init['model']).name}` (sha256 "
           f"`{init['sha256'][:16]}…`, {init['images_seen']} images seen), continued with a fresh Adam state"]
          if (init := meta.get("init_from")) else []),
        f"- device: {meta['device']}" + (f", {training_time}" if training_time else ""),
        f"- network: Johnson 2016 with instance norm, width {meta['network']['width']}, "
        f"{meta['network']['blocks']} residual blocks",
        f"- loss network: {meta['loss_network']['arch']} ({meta['loss_network']['weights']} weights)",
        f"- loss weights: content {loss['content_weight']}, style {loss['style_weight']}, tv {loss['tv_weight']}; "
        f"content layers {json.dumps(loss['content_layers'])}; style layers {json.dumps(loss['style_layers'])}",
        f"- final training objective J (mean of the last {cfg['log_every']} steps): {final.get('total', float('nan')):.4g} "
        f"(content {final.get('content', float('nan')):.4g}, style {final.get('style', float('nan')):.4g}, "
        f"tv {final.get('tv', float('nan')):.4g})",
        f"- fastnst {meta['fastnst_version']}, torch {meta.get('torch_version', '?')}",
    ]
    if notes:
        lines += ["", notes]
    return "\n".join(lines) + "\n"
