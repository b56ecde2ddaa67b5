"""The shipped models and the README's main job, as a new user runs them."""
import re
import shlex

import numpy as np
from PIL import Image

from conftest import ROOT, fastnst, one_line_error
from fastnst.modelfile import shipped_models


def test_every_shipped_model_has_a_card_and_loads():
    models = shipped_models()
    for style in ("starry_night", "the_scream", "wave", "composition_vii"):
        assert style in models and f"{style}.int8" in models
    for name, path in models.items():
        assert path.stat().st_size <= 10 * 2**20, f"{path} is over 10 MB"
        card = path.with_name(name.split(".")[0] + ".md")
        assert card.exists(), f"{name} has no model card"
        assert "licence: public domain" in card.read_text()
    r = fastnst("models")
    assert r.returncode == 0 and "starry_night" in r.stdout and "public domain" in r.stdout


def test_stylize_with_a_shipped_name(tmp_path):
    a = np.random.default_rng(0).integers(0, 255, (40, 50, 3), dtype=np.uint8)
    Image.fromarray(a).save(tmp_path / "p.png")
    for model in ("starry_night", "starry_night.int8"):
        r = fastnst("stylize", tmp_path / "p.png", "--model", model, "--out", tmp_path / f"{model}.png")
        assert r.returncode == 0, r.stderr
        assert Image.open(tmp_path / f"{model}.png").size == (50, 40)


def test_readme_main_job_command_works_as_written(shared_data, tmp_path):
    """The README's stylize command, run as written from a checkout with shared/ beside it: here a
    fresh folder with its own ../shared, so that no file a user left in the checkout matters."""
    readme = (ROOT / "README.md").read_text()
    block = re.search(r"## Stylize\s+```bash\n(.+?)\n```", readme, re.S).group(1)
    args = shlex.split(block.strip())
    assert args[:2] == ["fastnst", "stylize"] and "--model" in args
    checkout = tmp_path / "checkout"
    checkout.mkdir()
    (tmp_path / "shared").symlink_to(shared_data.parent)
    r = fastnst(*args[1:], cwd=checkout)
    assert r.returncode == 0, r.stderr
    out = checkout / args[args.index("--out") + 1]
    assert Image.open(out).size == Image.open(checkout / args[2]).size


def test_gallery_is_a_labelled_grid_of_photos_times_models(tmp_path):
    out = tmp_path / "gallery.png"
    r = fastnst("gallery", "--out", out, "--models", "starry_night,wave", "--tile", "48", "--work-size", "64",
                "--device", "cpu")
    assert r.returncode == 0, r.stderr
    grid = np.asarray(Image.open(out).convert("RGB")).astype(int)
    assert grid.shape == (28 + 4 * 48, 3 * 48, 3)  # label row + 4 photos; photo column + 2 models
    cells = [grid[28 + 48:28 + 96, c * 48:(c + 1) * 48] for c in range(3)]  # the coffee row
    assert min(np.abs(cells[0] - cells[1]).mean(), np.abs(cells[1] - cells[2]).mean()) > 5  # stylized, and differently
    assert (grid[:28] < 128).any()  # the labels


def test_gallery_bad_input(tmp_path):
    assert "no such folder" in one_line_error(fastnst("gallery", "--out", tmp_path / "g.jpg",
                                                        "--photos", tmp_path / "missing"))
    assert not (tmp_path / "g.jpg").exists()


def test_the_shipped_any_style_decoders(shared_data, tmp_path):
    """weights/any-style/ (ONNX stages) and any-style.safetensors: small files, a card, listed, working."""
    from fastnst.modelfile import WEIGHTS_DIR

    folder = WEIGHTS_DIR / "any-style"
    files = [*folder.iterdir(), WEIGHTS_DIR / "any-style.safetensors"]
    assert len(files) == 9 and all(f.stat().st_size <= 16 * 2**20 for f in files)
    assert "decoders" in (WEIGHTS_DIR / "any-style.md").read_text()
    r = fastnst("models")
    assert r.returncode == 0 and re.search(r"^any-style\s+any \(--style IMAGE\)", r.stdout, re.M), r.stdout
    r = fastnst("stylize", shared_data / "content" / "amber.jpg", "--style", shared_data / "styles" / "udnie.jpg",
                "--max-size", 96, "--out", tmp_path / "amber_udnie.png")
    assert r.returncode == 0 and "any-style" not in r.stderr and "udnie" in r.stderr, r.stderr
    assert max(Image.open(tmp_path / "amber_udnie.png").size) == 96
