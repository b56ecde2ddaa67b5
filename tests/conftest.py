import os
import shutil
from pathlib import Path

import pytest
import torch

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
