"""The browser page: `fastnst web` serves it, and a real headless Chromium stylizes with it.

The browser test needs Debian's chromium (or CHROMIUM=path), Playwright from PyPI and a local copy of
onnxruntime-web's dist/ folder (FASTNST_ORT_WEB=path: `npm install onnxruntime-web@1.30.0`). `.ci/run`
provides all three; elsewhere the test is skipped without them, and fails under CI=true.
"""

import json
import os
import shutil
import threading
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import fastnst, one_line_error

ORT_WEB = os.environ.get("FASTNST_ORT_WEB", "")
CHROMIUM = os.environ.get("CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser") or ""
# The page's pixels against onnxruntime in Python, fp32 model, on the 0-255 scale: WebAssembly kernels
# and native ones differ in float rounding only (measured: at most 1, mean under 0.001).
MAX_PIXEL_DIFFERENCE, MEAN_PIXEL_DIFFERENCE = 2, 0.05


@pytest.fixture
def server():
    from fastnst.web import make_server

    srv = make_server(0, "starry_night,starry_night.int8", ORT_WEB or None)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{srv.server_address[1]}/"
    srv.shutdown()
    srv.server_close()


@pytest.fixture
def browser_page(server):
    missing = [what for what, ok in (("FASTNST_ORT_WEB (onnxruntime-web's dist/)", ORT_WEB and Path(ORT_WEB).is_dir()),
                                     ("chromium", CHROMIUM)) if not ok]
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        missing.append("playwright")
    if missing:
        if os.environ.get("CI") == "true":
            pytest.fail(f"the browser test needs {', '.join(missing)}")
        pytest.skip(f"the browser test needs {', '.join(missing)}")
    with sync_playwright() as p:
        # a fake camera (a test pattern) for the webcam mode, allowed without asking
        browser = p.chromium.launch(executable_path=CHROMIUM, args=[
            "--no-sandbox", "--use-fake-device-for-media-stream", "--use-fake-ui-for-media-stream"])
        page = browser.new_page(viewport={"width": 1100, "height": 800})
        page.goto(server)
        page.wait_for_selector("body[data-state=ready]", timeout=60_000)
        yield page
        browser.close()


def test_the_site_serves_the_page_the_models_and_their_list(server):
    with urllib.request.urlopen(server) as r:
        assert b"fastnst" in r.read() and r.headers["Cross-Origin-Opener-Policy"] == "same-origin"
    with urllib.request.urlopen(server + "models.json") as r:
        listing = json.loads(r.read())
    assert [m["name"] for m in listing] == ["starry_night", "starry_night.int8"]
    assert "public domain" in listing[0]["licence"] and listing[1]["precision"] == "int8"
    with urllib.request.urlopen(server + listing[0]["file"]) as r:
        assert len(r.read()) > 1_000_000
    with pytest.raises(urllib.error.HTTPError):
        urllib.request.urlopen(server + "../weights/starry_night.onnx")


def test_web_build_writes_a_static_site_and_refuses_mistakes(tmp_path):
    r = fastnst("web", "--build", tmp_path / "site", "--models", "wave.int8")
    assert r.returncode == 0, r.stderr
    assert sorted(p.name for p in (tmp_path / "site").rglob("*") if p.is_file()) == \
        ["app.js", "index.html", "models.json", "wave.int8.onnx"]
    assert "not a shipped model" in one_line_error(fastnst("web", "--models", "nope", "--port", "0"))
    assert "not empty" in one_line_error(fastnst("web", "--build", tmp_path / "site"))
    assert "ort.all.min.mjs" in one_line_error(fastnst("web", "--build", tmp_path / "x", "--ort", tmp_path))


def test_the_page_stylizes_like_onnxruntime_in_python(browser_page, shared_data, tmp_path):
    from fastnst.inference import Stylizer

    page = browser_page
    photo = tmp_path / "photo.png"  # PNG: both sides decode the same pixels
    Image.open(shared_data / "content" / "chicago.jpg").convert("RGB").resize((160, 120), Image.LANCZOS).save(photo)
    page.select_option("#backend", "wasm")
    page.select_option("#model", "starry_night")
    page.set_input_files("#file", str(photo))
    page.wait_for_selector("body[data-state=done]", timeout=120_000)
    width, height, data = page.evaluate("""() => {
        const c = document.getElementById('output');
        return [c.width, c.height, Array.from(c.getContext('2d').getImageData(0, 0, c.width, c.height).data)];
    }""")
    browser = np.array(data, np.uint8).reshape(height, width, 4)[..., :3].astype(int)
    python = Stylizer("starry_night", "cpu")(np.asarray(Image.open(photo))).astype(int)
    difference = np.abs(browser - python)
    assert (width, height) == (160, 120)
    assert difference.max() <= MAX_PIXEL_DIFFERENCE and difference.mean() <= MEAN_PIXEL_DIFFERENCE, \
        (difference.max(), difference.mean())
    assert page.get_attribute("#download", "href").startswith("blob:")
    page.screenshot(path=str(tmp_path / "page.png"))
    assert Image.open(tmp_path / "page.png").size == (1100, 800)

    (tmp_path / "notes.jpg").write_text("not a photo")
    page.set_input_files("#file", str(tmp_path / "notes.jpg"))
    page.wait_for_selector("body[data-state=error]", timeout=30_000)
    assert "notes.jpg is not an image" in page.inner_text("#error")


def test_the_webcam_mode_stylizes_live_and_shows_its_rate(browser_page):
    page = browser_page
    page.select_option("#backend", "wasm")
    page.fill("#max-size", "128")
    page.click("#webcam")
    page.wait_for_function("() => /frames\\/s/.test(document.getElementById('status').textContent)", timeout=60_000)
    assert page.evaluate("() => document.getElementById('output').width") == 128
    page.click("#webcam")  # stops
    assert page.inner_text("#webcam") == "Webcam" and page.inner_text("#error") == ""


def test_fastnst_web_prints_its_address_serves_and_stops_cleanly(tmp_path):
    import signal
    import subprocess
    import sys

    proc = subprocess.Popen([sys.executable, "-m", "fastnst", "web", "--port", "0", "--models", "wave"], cwd=tmp_path,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})
    try:
        line = proc.stdout.readline()
        assert line.startswith("fastnst web: http://127.0.0.1:"), line
        url = line.split()[2]
        with urllib.request.urlopen(url + "models.json") as r:
            assert json.loads(r.read())[0]["name"] == "wave"
    finally:
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=30)
    assert proc.returncode == 0 and "stopped" in err, (proc.returncode, err)
