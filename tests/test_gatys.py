"""The Gatys optimizer and `fastnst optimize`, on the objective training uses."""
import pytest
import torch

from conftest import fastnst, one_line_error
from fastnst.config import LossConfig
from fastnst.gatys import gatys
from fastnst.images import load_image_tensor
from fastnst.losses import Objective


@pytest.fixture(scope="module")
def small_objective(shared_data):
    obj = Objective.from_config(LossConfig())
    obj.set_style(load_image_tensor(shared_data / "styles" / "starry_night.jpg", 64))
    content = load_image_tensor(shared_data / "content" / "chicago.jpg", 64)
    return obj, content


@pytest.mark.parametrize("method", ["lbfgs", "adam"])
def test_optimizer_lowers_j(small_objective, method):
    obj, content = small_objective
    result = gatys(obj, content, 8, method, "content", record_at={0, 8})
    j = {h["iteration"]: h["J"] for h in result.history}
    assert j[8] < 0.7 * j[0], j
    assert result.image.min() >= 0 and result.image.max() <= 1


def test_optimizer_is_deterministic_with_a_seed(small_objective):
    obj, content = small_objective
    a = gatys(obj, content, 3, "adam", "noise", seed=4).image
    b = gatys(obj, content, 3, "adam", "noise", seed=4).image
    assert torch.equal(a, b)


def test_one_objective_for_training_optimizer_and_compare(small_objective):
    """Training's Objective.forward and the optimizer's forward_with_targets are one function."""
    obj, content = small_objective
    y = torch.rand_like(content)
    torch.testing.assert_close(obj(y, content)["total"],
                               obj.forward_with_targets(y, obj.content_targets(content))["total"])


def test_optimize_cli_writes_image_and_snapshots(shared_data, tmp_path):
    r = fastnst("optimize", "--content", shared_data / "content" / "chicago.jpg", "--style",
                shared_data / "styles" / "wave.jpg", "--out", tmp_path / "o.png", "--steps", "4", "--size", "48",
                "--snapshot-every", "2", "--pooling", "avg", "--preserve-color", "--device", "cpu")
    assert r.returncode == 0, r.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["o.png", "o_0002.png"]
    for args, expected in [(["--content", tmp_path / "none.jpg"], "none.jpg: no such file"),
                           (["--content", shared_data / "content" / "chicago.jpg", "--steps", "0"], "--steps")]:
        line = one_line_error(fastnst("optimize", "--style", shared_data / "styles" / "wave.jpg", "--out",
                                       tmp_path / "x.png", *args))
        assert expected in line


def test_lbfgs_takes_back_a_step_that_leaves_the_finite_numbers(small_objective):
    """Without a line search nothing bounds an L-BFGS step: one that yields NaN is undone and
    L-BFGS starts afresh, and the optimisation goes on."""
    obj, content = small_objective
    calls = {"n": 0}
    real = obj.forward_with_targets

    def poisoned(output, feats):
        terms = real(output, feats)
        if output.requires_grad:
            calls["n"] += 1
            if calls["n"] == 3:  # a gradient of NaN: the step lands on NaN
                terms = {**terms, "total": terms["total"] * float("nan")}
        return terms

    obj.forward_with_targets = poisoned
    try:
        result = gatys(obj, content, 8, "lbfgs", "content", record_at={0, 8})
    finally:
        del obj.forward_with_targets
    j = {h["iteration"]: h["J"] for h in result.history}
    assert calls["n"] == 8 and torch.isfinite(result.image).all()
    assert j[8] < 0.8 * j[0], j



def test_optimize_keeps_the_photos_colours_only_when_asked(shared_data, tmp_path):
    from PIL import Image
    import numpy as np

    from fastnst.gatys import optimize_image

    args = (shared_data / "content" / "chicago.jpg", shared_data / "styles" / "starry_night.jpg")
    for keep in (False, True):
        optimize_image(*args, tmp_path / f"{keep}.png", LossConfig(), steps=3, size=48, device="cpu",
                       preserve_color=keep)
    plain, kept = (np.asarray(Image.open(tmp_path / f"{k}.png"), np.float32) for k in (False, True))
    assert np.abs(plain - kept).mean() > 1.0
