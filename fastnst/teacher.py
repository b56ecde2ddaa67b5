"""The Gatys optimizer as a teacher: its outputs on a folder of photos become distillation targets.

`fastnst optimize --content DIR --out TEACHER` writes one target image per photo and a manifest,
TEACHER/teacher.json, naming each photo, its target, the style and the settings. `fastnst train
--teacher TEACHER --teacher-weight W` then adds W x the mean squared pixel error between the
network's output and the target, on random crops cut at the same place from both.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
import torch.nn.functional as F

from fastnst.errors import UserError
from fastnst.files import atomic_path
from fastnst.images import load_image_tensor, load_rgb, to_tensor

MANIFEST = "teacher.json"
FORMAT = "fastnst-teacher-1"


def read_manifest(folder: str | Path) -> dict:
    path = Path(folder) / MANIFEST
    if not path.is_file():
        raise UserError(f"{folder}: not a teacher folder (no {MANIFEST}; make one with "
                        f"`fastnst optimize --content DIR --out {folder}`)")
    try:
        manifest = json.loads(path.read_text())
    except ValueError:
        raise UserError(f"{path}: not valid JSON") from None
    if manifest.get("format") != FORMAT:
        raise UserError(f"{path}: not a fastnst teacher manifest")
    return manifest


def write_manifest(folder: Path, manifest: dict) -> None:
    with atomic_path(folder / MANIFEST) as tmp:
        tmp.write_text(json.dumps(manifest, indent=1) + "\n")


class TeacherPairs:
    """(content, target) image pairs of a teacher folder, in memory at the targets' size."""

    def __init__(self, folder: str | Path, device: torch.device):
        folder = Path(folder)
        self.manifest = read_manifest(folder)
        self.pairs = []
        for item in self.manifest["pairs"]:
            target_path = folder / item["target"]
            if not target_path.is_file():
                raise UserError(f"{target_path}: listed in {folder / MANIFEST} but missing")
            target = to_tensor(load_rgb(target_path))
            content_path = Path(item["content"])
            if not content_path.is_file():
                raise UserError(f"{content_path}: the teacher's content photo is missing")
            content = to_tensor(load_rgb(content_path).resize((target.shape[2], target.shape[1])))
            self.pairs.append((content.to(device), target.to(device)))
        if not self.pairs:
            raise UserError(f"{folder}: the teacher folder has no targets")
        self.style_sha256 = self.manifest["style_sha256"]
        self.device = device

    def __len__(self) -> int:
        return len(self.pairs)

    def batch(self, n: int, size: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """n random (content, target) crops: the same square of each pair, resized to size x size."""
        contents, targets = [], []
        for i in torch.randint(len(self.pairs), (n,), generator=generator).tolist():
            content, target = self.pairs[i]
            h, w = target.shape[1:]
            side = min(h, w)
            y0 = int(torch.randint(h - side + 1, (1,), generator=generator))
            x0 = int(torch.randint(w - side + 1, (1,), generator=generator))
            for src, dst in ((content, contents), (target, targets)):
                crop = src[None, :, y0:y0 + side, x0:x0 + side]
                dst.append(F.interpolate(crop, size=(size, size), mode="bilinear", antialias=True,
                                         align_corners=False) if side != size else crop)
        return torch.cat(contents).clamp(0, 1), torch.cat(targets).clamp(0, 1)


def teacher_loss(output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return F.mse_loss(output.float(), target.float())


def optimize_folder(content_dir: Path, style: Path, out: Path, loss, settings: dict, device: str = "auto",
                    log=None) -> int:
    """Run the Gatys optimizer (objective `loss` with the style image `style`; `settings`: steps,
    optimizer, init, size, style_size, lr, seed) on every photo under `content_dir` and write its
    output to `out/<relative path>.png`, updating the manifest after each one. Rerunning with the
    same settings skips the photos already done (an interrupted run continues); other settings are
    refused rather than mixed. `log` gets a line per photo. Returns how many targets the folder holds."""
    from fastnst.data import list_images
    from fastnst.devices import resolve_device
    from fastnst.files import check_writable, sha256_file
    from fastnst.gatys import gatys, style_objective
    from fastnst.images import save_image_atomic, to_pil

    photos = list_images(content_dir)
    if not photos:
        raise UserError(f"{content_dir}: no images found")
    if out.exists() and not out.is_dir():
        raise UserError(f"{out}: with a --content folder, --out must be a folder")
    check_writable(out / MANIFEST)
    settings = {**settings, **loss.loss_settings()}
    device = resolve_device(device)
    objective = style_objective(loss, style, settings["style_size"], device)
    manifest = {"format": FORMAT, "style": str(style), "style_sha256": sha256_file(style),
                "settings": settings, "pairs": []}
    if (out / MANIFEST).exists():
        old = read_manifest(out)
        if (old["style_sha256"], old["settings"]) != (manifest["style_sha256"], settings):
            raise UserError(f"{out} holds targets made with another style or settings: choose another --out")
        manifest["pairs"] = [p for p in old["pairs"] if (out / p["target"]).is_file()]
    out.mkdir(parents=True, exist_ok=True)
    done = {p["content"] for p in manifest["pairs"]}
    for i, photo in enumerate(photos, 1):
        key = str(photo.resolve())
        if key in done:
            continue
        x = load_image_tensor(photo, settings["size"]).to(device)
        result = gatys(objective, x, settings["steps"], settings["optimizer"], settings["init"], settings["seed"],
                       settings["lr"])
        target = photo.relative_to(content_dir).with_suffix(".png")
        save_image_atomic(to_pil(result.image), out / target)
        last = result.history[-1]
        manifest["pairs"].append({"content": key, "target": str(target), "J": last["J"]})
        write_manifest(out, manifest)
        if log:
            log(f"[{i}/{len(photos)}] {photo.relative_to(content_dir)}: J {last['J']:.4g} after {settings['steps']} "
                f"iterations, {last['seconds']:.1f}s")
    return len(manifest["pairs"])
