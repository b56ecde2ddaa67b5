"""The shipped models and the README's main job, as a new user runs them."""
import re
import shlex

import numpy as np
from PIL import Image

from conftest import ROOT
from fastnst.inference import shipped_models
from test_cli import fastnst


def test_every_shipped_model_has_a_card_and_loads():
    models = shipped_models()
    assert "starry_night" in models
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


def test_readme_main_job_command_works_as_written(shared_data):
    readme = (ROOT / "README.md").read_text()
    block = re.search(r"## Stylize\s+```bash\n(.+?)\n```", readme, re.S).group(1)
    args = shlex.split(block.strip())
    assert args[:2] == ["fastnst", "stylize"] and "--model" in args
    out = ROOT / args[args.index("--out") + 1]
    assert not out.exists()
    try:
        r = fastnst(*args[1:], cwd=ROOT)
        assert r.returncode == 0, r.stderr
        assert Image.open(out).size == Image.open(ROOT / args[2]).size
    finally:
        out.unlink(missing_ok=True)
