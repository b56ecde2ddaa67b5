"""The browser page's speed: the network alone in headless Chromium (onnxruntime-web, WebAssembly)
against onnxruntime in Python on the same machine, on the same square input (median of --runs after a
warm-up). The baseline is Python's onnxruntime. With --screenshot, also the README's picture of the page
with a stylized photo.

    python benchmarks/web_speed.py --ort node_modules/onnxruntime-web/dist [--chromium /usr/bin/chromium]
        [--models starry_night,starry_night.int8] [--sizes 256,512] [--screenshot docs/web.png]
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import statistics
import sys
import threading
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from fastnst.inference import Stylizer  # noqa: E402
from fastnst.web import make_server  # noqa: E402


def python_ms(model: str, size: int, runs: int) -> float:
    stylizer = Stylizer(model, "cpu")
    x = np.full((1, 3, size, size), 0.5, np.float32)
    stylizer.stylize_batch(x)
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        stylizer.stylize_batch(x)
        times.append((time.perf_counter() - t) * 1000)
    return statistics.median(times)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ort", type=Path, required=True, help="onnxruntime-web's dist/ folder")
    ap.add_argument("--chromium", default=shutil.which("chromium") or "/usr/bin/chromium")
    ap.add_argument("--models", default="starry_night,starry_night.int8")
    ap.add_argument("--sizes", default="256,512")
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--screenshot", type=Path, default=None)
    ap.add_argument("--photo", type=Path, default=ROOT.parent / "shared" / "data" / "content" / "chicago.jpg")
    args = ap.parse_args()
    from playwright.sync_api import sync_playwright

    models = args.models.split(",")
    server = make_server(0, args.models, args.ort)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}/"
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=args.chromium, args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1100, "height": 760})
        page.goto(url)
        page.wait_for_selector("body[data-state=ready]", timeout=60_000)
        page.select_option("#backend", "wasm")
        threads = page.evaluate("() => window.fastnst.state.ort.env.wasm.numThreads")
        print(f"web_speed: CPU {platform.machine()}, {os.cpu_count()} cores; headless Chromium {browser.version}, "
              f"onnxruntime-web WebAssembly with {threads} threads, against onnxruntime (Python) on the CPU; "
              f"median of {args.runs} runs after a warm-up, the network alone")
        print(f"{'model':<22}{'size':>9}{'browser ms':>12}{'Python ms':>11}{'browser / Python':>18}")
        for model in models:
            for size in map(int, args.sizes.split(",")):
                web = page.evaluate("([m, s, r]) => window.fastnst.benchmark(m, s, r)", [model, size, args.runs])
                native = python_ms(model, size, args.runs)
                print(f"{model:<22}{f'{size}x{size}':>9}{web:>12.0f}{native:>11.0f}{web / native:>18.2f}", flush=True)
        if args.screenshot:
            from PIL import Image

            photo = Path(os.environ.get("TMPDIR", "/tmp")) / "fastnst_web_photo.png"
            Image.open(args.photo).convert("RGB").resize((480, 360), Image.LANCZOS).save(photo)
            page.select_option("#model", models[0])
            page.set_input_files("#file", str(photo))
            page.wait_for_selector("body[data-state=done]", timeout=120_000)
            page.screenshot(path=str(args.screenshot), type="jpeg", quality=80) if args.screenshot.suffix == ".jpg" \
                else page.screenshot(path=str(args.screenshot))
            print(f"wrote {args.screenshot}")
        browser.close()
    server.shutdown()


if __name__ == "__main__":
    main()
