import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

import pytest
import torch

from fastnst.config import LossConfig
from fastnst.losses import Objective

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = ROOT.parent / "shared" / "data"

torch.set_num_threads(min(2, os.cpu_count() or 1))


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """../shared/data: real photos, styles and videos. Missing data fails under CI, else skips."""
    if not (SHARED_DATA / "coco").is_dir():
        if os.environ.get("CI") == "true":
            pytest.fail(f"{SHARED_DATA} is missing: CI must run with shared/ beside the checkout")
        pytest.skip(f"{SHARED_DATA} not found")
    return SHARED_DATA


@pytest.fixture(scope="session")
def style_image(shared_data) -> Path:
    return shared_data / "styles" / "starry_night.jpg"


@pytest.fixture
def coco_folder(shared_data, tmp_path) -> Path:
    """A small training folder of 8 real COCO photos (copied into the test's temporary folder)."""
    files = sorted((shared_data / "coco").glob("*.jpg"))[:8]
    d = tmp_path / "coco"
    (d / "sub").mkdir(parents=True)
    for i, f in enumerate(files):
        shutil.copy(f, d / ("sub" if i % 2 else "") / f.name)
    return d


def tiny_config(style, data, out, **kw):
    """A training configuration small enough for a CPU test: tiny network, tiny crops."""
    from fastnst.training import TrainConfig

    base = dict(style=style if isinstance(style, list) else str(style), data=str(data), out=str(out), steps=6, batch_size=2, image_size=32,
                style_size=64, width=8, blocks=1, checkpoint_every=0, sample_every=0, log_every=1,
                workers=2, device="cpu", seed=0)
    base.update(kw)
    return TrainConfig(**base)


@pytest.fixture
def packed(coco_folder, tmp_path):
    """A pack file of the 8 COCO photos and one broken file: (path, manifest)."""
    from fastnst.data import FolderSource, write_pack

    (coco_folder / "broken.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    path = tmp_path / "train.pack"
    meta = write_pack(FolderSource(coco_folder), path, 40, workers=2)
    return path, meta


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory, style_image, shared_data) -> Path:
    """A tiny trained model file (2 steps on 8 real photos): cheap to export and run."""
    from fastnst.training import Trainer

    d = tmp_path_factory.mktemp("tiny")
    data = d / "data"
    data.mkdir()
    for f in sorted((shared_data / "coco").glob("*.jpg"))[:8]:
        shutil.copy(f, data / f.name)
    return Trainer(tiny_config(style_image, data, d / "run", steps=2)).run()[0]


@pytest.fixture(scope="session")
def tiny_onnx(tiny_model) -> Path:
    from fastnst.export import export

    return export(tiny_model)["path"]


@pytest.fixture(scope="session")
def objective():
    """The default objective with a random style: for checks that need any objective."""
    o = Objective.from_config(LossConfig())
    torch.manual_seed(0)
    o.set_style(torch.rand(1, 3, 64, 64))
    return o


# -- running the command line and making media ----------------------------------------------------

def fastnst(*args, cwd=None):
    """`fastnst ARGS` in a subprocess, in `cwd` or else a fresh empty folder: never in the checkout,
    where a user's files could change what a test sees."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    with tempfile.TemporaryDirectory() as empty:
        return subprocess.run([sys.executable, "-m", "fastnst", *map(str, args)], capture_output=True, text=True,
                              cwd=cwd or empty, env=env, timeout=600)


def one_line_error(r):
    """The one line of a user's mistake: exit status 2, `fastnst: error: ...` alone on stderr."""
    assert r.returncode == 2, (r.returncode, r.stderr)
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("fastnst: error:"), r.stderr
    return lines[0]


def make_clip(path, frames=12, fps=12, size=(64, 48), audio=True):
    import av

    with av.open(str(path), "w") as c:
        v = c.add_stream("libx264", rate=fps)
        v.width, v.height, v.pix_fmt = size[0], size[1], "yuv420p"
        a = c.add_stream("aac", rate=16000) if audio else None
        for i in range(frames):
            img = np.full((size[1], size[0], 3), (i * 20) % 255, np.uint8)
            for p in v.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                c.mux(p)
        if a is not None:
            n = int(16000 * frames / fps)
            t = np.arange(n) / 16000
            samples = (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)[None]
            frame = av.AudioFrame.from_ndarray(samples, format="fltp", layout="mono")
            frame.sample_rate = 16000
            for p in a.encode(frame):
                c.mux(p)
            for p in a.encode(None):
                c.mux(p)
        for p in v.encode(None):
            c.mux(p)
    return path
