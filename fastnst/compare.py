"""`fastnst compare`: a feed-forward model against the Gatys optimizer, on the one objective J.

Johnson et al. 2016 compare the two by J (Figure 5: how many L-BFGS iterations the optimizer
needs to reach the network's J) and by time (Table 1: the network's one pass against 100, 300
and 500 iterations). This reproduces both on the user's images and hardware. Both sides are
scored by the same `Objective`, rebuilt from the model's metadata and the style Gram matrices it
carries (or from --style).

The optimizer runs from each start in `inits`: "noise" is Johnson et al.'s protocol (white
noise, uniform in [0, 1], seeded), "content" the stronger start from the photo itself.
"""

from __future__ import annotations

import csv
import json
import statistics
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from fastnst.anystyle import AnyStyle, is_any_style
from fastnst.config import LossConfig, TrainConfig
from fastnst.devices import describe, resolve_device
from fastnst.errors import UserError
from fastnst.files import atomic_path, check_writable
from fastnst.gatys import gatys
from fastnst.images import load_image_tensor, load_rgb, resize_long_side, to_pil, to_tensor
from fastnst.inference import Stylizer
from fastnst.losses import Objective
from fastnst.modelfile import load_model, model_sibling

SPEEDUP_AT = (100, 300, 500)
INITS = ("noise", "content")  # Johnson 2016's start first


def objective_for(stylizer, style: Path | None, device: torch.device, style_weight: float | None = None) -> Objective:
    """The objective a model was trained with: its loss network, layers, weights and style (any-style:
    the default objective on its loss network, with --style at the default style size); `style_weight`
    replaces the style loss's weight."""
    meta = stylizer.metadata
    if isinstance(stylizer, AnyStyle):
        loss = LossConfig(loss_net=meta["loss_network"], vgg_weights=meta.get("vgg_weights", "bundled"))
        meta = {"loss": loss.loss_settings(), "config": {"style_size": TrainConfig.style_size}}
    if style_weight is not None:
        meta = {**meta, "loss": {**meta.get("loss", {}), "style_weight": style_weight}}
    if not isinstance(meta.get("loss"), dict) or not isinstance(meta.get("config"), dict):
        raise UserError(f"{stylizer.path}: its metadata lacks the loss settings (loss, config) that compare needs")
    objective = Objective.from_config(LossConfig.from_metadata(meta)).to(device)
    if style is not None:
        objective.set_style(load_image_tensor(style, meta["config"]["style_size"]))
        return objective
    twin = model_sibling(stylizer.path, ".safetensors")
    if not twin.is_file():
        raise UserError(f"{stylizer.path}: the style's Gram matrices are in its .safetensors model file, "
                        f"not found beside it; give --style IMAGE")
    objective.set_style_grams(load_model(twin)[2])
    return objective


def time_network(stylizer: Stylizer, x: np.ndarray, runs: int = 5) -> tuple[np.ndarray, float]:
    out = stylizer.stylize_batch(x)  # warm-up
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        out = stylizer.stylize_batch(x)
        times.append(time.perf_counter() - t)
    return out, statistics.median(times)


def parse_list(text: str | tuple, name: str, low: int | None = None) -> tuple:
    """A comma-separated option (`--sizes 256,512`) as a tuple: whole numbers of at least `low`,
    or words when `low` is None; given as a tuple already, it is checked the same way."""
    values = tuple(v.strip() if isinstance(v, str) else v for v in
                   (text.split(",") if isinstance(text, str) else text))
    values = tuple(dict.fromkeys(v for v in values if v != ""))
    if low is None:
        return values
    try:
        values = tuple(int(v) for v in values)
    except ValueError:
        raise UserError(f"--{name}: expected comma-separated whole numbers, got {text!r}") from None
    if not values or min(values) < low:
        raise UserError(f"--{name}: values must be at least {low}")
    return values


def compare(contents: list[Path], model: str, out_dir: Path, style: Path | None = None,
            sizes: str | tuple[int, ...] = (256, 512), iterations: str | tuple[int, ...] = (0, 10, 50, 100, 300, 500),
            device: str = "auto", runs: int = 5, table=None, inits: str | tuple[str, ...] = INITS,
            seed: int = 0, style_weight: float | None = None) -> dict:
    """Johnson 2016's comparison (Figure 5, Table 1) of `model` with L-BFGS on one objective, for
    each content image and size; writes report.json, report.csv, the plot and the grid into
    `out_dir` and returns the report. `table` (print, say) gets the terminal table as it grows."""
    sizes, iterations = parse_list(sizes, "sizes", 16), parse_list(iterations, "iterations", 0)
    inits = parse_list(inits, "init")
    bad = [i for i in inits if i not in INITS]
    if bad or not inits:
        raise UserError(f"--init {','.join(inits)!r}: choose noise, content or noise,content")
    for path in contents:
        if not Path(path).is_file():
            raise UserError(f"{path}: no such file")
    check_writable(Path(out_dir) / "report.json")
    torch_device = resolve_device(device)
    if is_any_style(model):
        if style is None:
            raise UserError(f"--model {model}: give --style IMAGE, the style to compare in")
        stylizer = AnyStyle(style, model, device)
    else:
        stylizer = Stylizer(model, device)
    objective = objective_for(stylizer, style, torch_device, style_weight)
    iterations = tuple(sorted(set(iterations)))
    rows, images = [], []
    for content_path in contents:
        photo = load_rgb(content_path)
        for size in sizes:
            content = to_tensor(resize_long_side(photo, size)).unsqueeze(0)
            net_out, net_seconds = time_network(stylizer, content.numpy(), runs)
            net_out = torch.from_numpy(net_out).to(torch_device)
            with torch.no_grad():
                net_terms = objective(net_out, content.to(torch_device))
            j_net = float(net_terms["total"])
            row = {
                "content": str(content_path), "size": size, "height": content.shape[2], "width": content.shape[3],
                "network_J": j_net, "network_seconds": net_seconds,
                "network_terms": {k: float(v) for k, v in net_terms.items() if k != "total"},
                "starts": {},
            }
            snapshots = {}
            for init in inits:
                result = gatys(objective, content.to(torch_device), max(iterations), "lbfgs", init, seed=seed,
                               record_at=set(iterations), record_all=True)
                row["starts"][init] = _optimizer_record(result, iterations, j_net, net_seconds)
                snapshots[init] = {i: result.snapshots[i].cpu() for i in iterations}
            rows.append(row)
            images.append((content, net_out.cpu(), snapshots))
            if table:  # the header comes with the first row, after the checks
                table("\n".join(([table_header(iterations)] if len(rows) == 1 else []) + table_lines(row, iterations)))
    report = {"model": str(stylizer.path), "backend": stylizer.backend, "style": stylizer.name,
              "device": str(torch_device), "machine": describe(torch_device), "iterations": list(iterations),
              "inits": list(inits), "seed": seed, "loss": objective.config.loss_settings(),
              "optimizer": "lbfgs (torch, no line search: one evaluation per iteration, history 50); "
                           "init noise: uniform [0, 1] white noise from the seed, init content: the photo; "
                           "J of the clamped image",
              "network_timing": f"median of {runs} runs after a warm-up", "rows": rows}
    out_dir.mkdir(parents=True, exist_ok=True)
    _write_json(report, out_dir / "report.json")
    _write_csv(rows, iterations, out_dir / "report.csv")
    _plot(rows, out_dir / "loss_vs_iterations.png")
    _grid(images, style, iterations, out_dir / "grid.png")
    return report


def _optimizer_record(result, iterations, j_net: float, net_seconds: float) -> dict:
    """One start's numbers for a row: J and time at the recorded iterations, Figure 5's matched
    iteration (the first iteration, any, at or below the network's J) and Table 1's speedups."""
    opt = {h["iteration"]: h for h in result.history}
    return {
        "optimizer_J": {str(i): opt[i]["J"] for i in iterations},
        "optimizer_seconds": {str(i): opt[i]["seconds"] for i in iterations},
        "first_iteration_at_or_below_network": next((h["iteration"] for h in result.history if h["J"] <= j_net),
                                                    None),
        "optimizer_J_every_iteration": [h["J"] for h in result.history],
        "speedup": {str(n): opt[n]["seconds"] / net_seconds for n in SPEEDUP_AT if n in opt},
    }


def table_header(iterations) -> str:
    """The terminal table's header: one line per content image, size and start follows."""
    return (f"{'content':<18}{'size':>6}{'init':>9}{'J network':>12}" + "".join(f"{'J@' + str(i):>11}" for i in iterations)
            + f"{'matched':>9}" + "".join(f"{'x' + str(n):>10}" for n in SPEEDUP_AT))


def table_lines(row: dict, iterations) -> list[str]:
    lines = []
    for start, o in row["starts"].items():
        matched = o["first_iteration_at_or_below_network"]
        lines.append(f"{Path(row['content']).stem[:17]:<18}{row['size']:>6}{start:>9}{row['network_J']:>12.4g}"
                     + "".join(f"{o['optimizer_J'][str(i)]:>11.4g}" for i in iterations)
                     + f"{'>' + str(max(iterations)) if matched is None else matched:>9}"
                     + "".join(f"{o['speedup'][str(n)]:>10.0f}" if str(n) in o["speedup"] else f"{'-':>10}"
                               for n in SPEEDUP_AT))
    return lines


def _write_json(report: dict, path: Path) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(report, indent=2) + "\n")


def _write_csv(rows: list[dict], iterations, path: Path) -> None:
    """One line per content image, size and start."""
    header = ["content", "size", "init", "network_J", "network_seconds", "first_iteration_at_or_below_network"] + \
             [f"optimizer_J_{i}" for i in iterations] + [f"optimizer_seconds_{i}" for i in iterations] + \
             [f"speedup_over_{n}" for n in SPEEDUP_AT]
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(header)
        for r in rows:
            for init, o in r["starts"].items():
                w.writerow([r["content"], r["size"], init, r["network_J"], r["network_seconds"],
                            o["first_iteration_at_or_below_network"]] +
                           [o["optimizer_J"][str(i)] for i in iterations] +
                           [o["optimizer_seconds"][str(i)] for i in iterations] +
                           [o["speedup"].get(str(n), "") for n in SPEEDUP_AT])


def _plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    styles = {"noise": ":", "content": "-"}
    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=120)
    for k, r in enumerate(rows):
        color = f"C{k % 10}"
        label = f"{Path(r['content']).stem} {r['size']}px"
        for init, o in r["starts"].items():
            every = o["optimizer_J_every_iteration"]
            ax.plot(range(len(every)), every, styles[init], color=color, label=f"optimizer from {init}, {label}")
        ax.axhline(r["network_J"], color=color, linestyle="--", label=f"network, {label}")
    ax.set_xlabel("L-BFGS iterations")
    ax.set_ylabel("objective J")
    ax.set_yscale("log")
    ax.set_title("Gatys optimizer against the feed-forward network")
    ax.legend(fontsize=6)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)


def _grid(images, style: Path | None, iterations, path: Path, cell: int = 160) -> None:
    """A header row of labels, then one row per image and size: content, style, network output,
    then the optimizer at each iteration from each start. Without --style the model carries only the style's Gram matrices,
    so the style cell says so instead of showing the image."""
    from PIL import ImageDraw

    def thumb(im: Image.Image) -> Image.Image:
        return im.resize((max(1, round(im.width * cell / im.height)), cell), Image.LANCZOS)

    if style is not None:
        style_cell = thumb(load_rgb(style))
    else:
        style_cell = Image.new("RGB", (cell, cell), (230, 230, 230))
        ImageDraw.Draw(style_cell).multiline_text((cell // 2, cell // 2), "style image\nnot given\n(--style)",
                                                  fill="black", anchor="mm", align="center")
    inits = list(images[0][2])
    labels = ["content", "style", "network"] + [f"{init} @{i}" for init in inits for i in iterations]
    rows = [[thumb(to_pil(c)), style_cell, thumb(to_pil(n))] +
            [thumb(to_pil(snaps[init][i])) for init in inits for i in iterations]
            for c, n, snaps in images]
    widths = [max(r[k].width for r in rows) for k in range(len(labels))]
    header = 20
    grid = Image.new("RGB", (sum(widths), header + cell * len(rows)), "white")
    draw = ImageDraw.Draw(grid)
    x = 0
    for k, label in enumerate(labels):
        draw.text((x + widths[k] // 2, header // 2), label, fill="black", anchor="mm")
        for y, r in enumerate(rows):
            grid.paste(r[k], (x, header + y * cell))
        x += widths[k]
    with atomic_path(path) as tmp:
        grid.save(tmp, format="PNG")
