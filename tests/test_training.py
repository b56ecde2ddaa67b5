import json
import os
import signal

import pytest
import torch

from conftest import tiny_config
from fastnst.network import TransformerNet
from fastnst.errors import UserError
from fastnst.modelfile import load_model, read_metadata
from fastnst.training import Interrupted, Trainer, TrainingDiverged, load_checkpoint, make_train_step


def _objective_on(trainer, images):
    trainer.styles[0].net.eval()
    with torch.no_grad():
        return trainer.styles[0].objective(trainer.styles[0].net(images), images)["total"].item()


def test_short_run_lowers_the_objective(style_image, coco_folder, tmp_path):
    cfg = tiny_config(style_image, coco_folder, tmp_path / "run", steps=60, image_size=48, lr=1e-3,
                      width=16, blocks=2)
    trainer = Trainer(cfg)
    images = trainer.source.sample_images(4, 48)
    before = _objective_on(trainer, images)
    [model_path] = trainer.run()
    after = _objective_on(trainer, images)
    assert after < 0.8 * before, (before, after)
    assert model_path.exists() and (tmp_path / "run" / "checkpoint.pt").exists()
    assert sorted(p.name for p in (tmp_path / "run" / "samples").iterdir()) == ["step_000060.jpg"]
    log = [json.loads(l) for l in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    assert len(log) == 60 and log[-1]["step"] == 60


def test_model_file_round_trip(style_image, coco_folder, tmp_path):
    trainer = Trainer(tiny_config(style_image, coco_folder, tmp_path / "run", steps=2))
    [path] = trainer.run()
    net, meta, grams = load_model(path)
    assert meta["style_name"] == "starry_night" and meta["steps"] == 2 and meta["images_seen"] == 4
    assert len(meta["style_sha256"]) == 64 and meta["loss_network"]["arch"] == "vgg19"
    assert meta["config"]["width"] == 8 and set(meta["final_losses"]) == {"content", "style", "tv", "total"}
    assert meta["fastnst_version"] and read_metadata(path) == meta
    assert set(grams) == set(trainer.config.style_layers)
    x = torch.rand(1, 3, 21, 19)
    trainer.styles[0].net.eval()
    torch.testing.assert_close(net(x), trainer.styles[0].net(x))


def test_stop_and_resume_equals_uninterrupted(style_image, coco_folder, tmp_path):
    full = Trainer(tiny_config(style_image, coco_folder, tmp_path / "full", steps=8))
    full.run()

    first = Trainer(tiny_config(style_image, coco_folder, tmp_path / "split", steps=3))
    first.run()
    ckpt = tmp_path / "split" / "checkpoint.pt"
    assert load_checkpoint(ckpt)["step"] == 3
    second = Trainer(resume=str(ckpt), overrides={"steps": 8})
    assert second.step == 3
    second.run()

    a, b = full.styles[0].net.state_dict(), second.styles[0].net.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a), "resumed weights differ from the uninterrupted run"
    assert full.styles[0].history[-1]["total"] == second.styles[0].history[-1]["total"]


def test_resume_refuses_to_change_the_recipe(style_image, coco_folder, tmp_path):
    Trainer(tiny_config(style_image, coco_folder, tmp_path / "run", steps=1)).run()
    with pytest.raises(UserError, match="--lr cannot change"):
        Trainer(resume=str(tmp_path / "run" / "checkpoint.pt"), overrides={"lr": 0.5})


def test_existing_run_is_not_overwritten(style_image, coco_folder, tmp_path):
    Trainer(tiny_config(style_image, coco_folder, tmp_path / "run", steps=1)).run()
    with pytest.raises(UserError, match="exists: resume with --resume"):
        Trainer(tiny_config(style_image, coco_folder, tmp_path / "run", steps=1))


def test_nan_stops_and_keeps_the_last_good_checkpoint(style_image, coco_folder, tmp_path):
    trainer = Trainer(tiny_config(style_image, coco_folder, tmp_path / "run", steps=10, checkpoint_every=2))
    objective = trainer.styles[0].objective
    real_terms = objective.terms

    def poisoned(*args):
        terms = real_terms(*args)
        if trainer.step >= 5:
            terms["total"] = terms["total"] * float("nan")
        return terms

    objective.terms = poisoned
    with pytest.raises(TrainingDiverged, match="became nan by step 6"):
        trainer.run()
    ckpt = load_checkpoint(tmp_path / "run" / "checkpoint.pt")
    assert ckpt["step"] == 4
    assert all(torch.isfinite(v).all() for v in ckpt["styles"][0]["network"].values())
    assert not (tmp_path / "run" / "model.safetensors").exists()


class SignalAt:
    """A progress reporter that sends the process SIGTERM at a given step."""

    def __init__(self, step):
        self.step = step

    def update(self, step, records, names):
        if step == self.step:
            os.kill(os.getpid(), signal.SIGTERM)

    def warn(self, message):
        pass


def test_sigterm_writes_a_checkpoint_then_resume_finishes(style_image, coco_folder, tmp_path):
    trainer = Trainer(tiny_config(style_image, coco_folder, tmp_path / "run", steps=10))
    with pytest.raises(Interrupted, match="interrupted at step 3"):
        trainer.run(SignalAt(3))
    assert load_checkpoint(tmp_path / "run" / "checkpoint.pt")["step"] == 3
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # handlers restored
    resumed = Trainer(resume=str(tmp_path / "run" / "checkpoint.pt"))
    resumed.run()
    assert resumed.step == 10 and (tmp_path / "run" / "model.safetensors").exists()


def test_bad_training_images_are_counted(style_image, coco_folder, tmp_path):
    (coco_folder / "notes.jpg").write_text("a text file named .jpg")
    good = sorted(coco_folder.glob("*.jpg"))[0]
    (coco_folder / "cut.jpg").write_bytes(good.read_bytes()[:500])
    trainer = Trainer(tiny_config(style_image, coco_folder, tmp_path / "run", steps=6, batch_size=4))
    trainer.run()
    assert sorted(os.path.basename(k) for k in trainer.bad_examples) == ["cut.jpg", "notes.jpg"]


def test_epochs_end_the_run(style_image, coco_folder, tmp_path):
    trainer = Trainer(tiny_config(style_image, coco_folder, tmp_path / "run", steps=None, epochs=1, batch_size=3))
    assert trainer.total_steps() == 3
    trainer.run()
    assert trainer.position.epoch == 1 and trainer.step == 3


def test_lr_decay_falls_linearly_over_the_last_steps_and_resumes_exactly(style_image, coco_folder, tmp_path):
    full = Trainer(tiny_config(style_image, coco_folder, tmp_path / "full", steps=8, lr_decay=0.5))
    full.run()
    lrs = [r["lr"] for r in full.styles[0].history]
    assert lrs == pytest.approx([1e-3] * 5 + [0.75e-3, 0.5e-3, 0.25e-3])
    assert full.styles[0].optimizer.param_groups[0]["lr"] == pytest.approx(0.25e-3)

    # stopped at step 3 (the schedule is over the run's length, so the run is stopped, not shortened)
    first = Trainer(tiny_config(style_image, coco_folder, tmp_path / "split", steps=8, lr_decay=0.5))
    with pytest.raises(Interrupted):
        first.run(SignalAt(3))
    second = Trainer(resume=str(tmp_path / "split" / "checkpoint.pt"))
    second.run()
    assert [r["lr"] for r in second.styles[0].history] == pytest.approx(lrs)
    a, b = full.styles[0].net.state_dict(), second.styles[0].net.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_constant_lr_by_default(style_image, coco_folder, tmp_path):
    trainer = Trainer(tiny_config(style_image, coco_folder, tmp_path / "run", steps=3))
    trainer.run()
    assert [r["lr"] for r in trainer.styles[0].history] == [1e-3] * 3


def test_init_from_a_model_starts_from_its_network(style_image, coco_folder, tmp_path, tiny_model):
    trainer = Trainer(tiny_config(style_image, coco_folder, tmp_path / "run", steps=2, init_from=str(tiny_model)))
    start = load_model(tiny_model)[0].state_dict()
    assert all(torch.equal(trainer.styles[0].net.state_dict()[k], start[k]) for k in start)
    trainer.run()
    meta = read_metadata(tmp_path / "run" / "model.safetensors")
    assert meta["init_from"]["model"] == str(tiny_model) and meta["init_from"]["images_seen"] == 4
    assert meta["images_seen"] == 4 and len(meta["init_from"]["sha256"]) == 64
    from fastnst.card import model_card

    card = model_card(tmp_path / "run" / "model.safetensors", "t", "s", "public domain")
    assert f"started from: the starry_night model `{tiny_model.name}`" in card
    # a resumed run keeps the record; a network of another shape is refused with one line
    resumed = Trainer(resume=str(tmp_path / "run" / "checkpoint.pt"), overrides={"steps": 3})
    resumed.run()
    assert read_metadata(tmp_path / "run" / "model.safetensors")["init_from"] == meta["init_from"]
    with pytest.raises(UserError, match="give --width 8 --blocks 1"):
        Trainer(tiny_config(style_image, coco_folder, tmp_path / "other", width=16, init_from=str(tiny_model)))


# -- several styles in one run -------------------------------------------------------------------

@pytest.fixture
def two_styles(shared_data):
    return [str(shared_data / "styles" / "starry_night.jpg"), str(shared_data / "styles" / "wave.jpg")]


def test_several_styles_train_the_networks_of_each_style_alone(two_styles, coco_folder, tmp_path):
    """One data stream, one loss-network batch, one network per style: each network is the one a
    run of that style alone computes with the same seed (different style weights included)."""
    together = Trainer(tiny_config(two_styles, coco_folder, tmp_path / "both", steps=4, style_weight=[1.0, 3.0]))
    paths = together.run()
    assert paths == [tmp_path / "both" / "starry_night" / "model.safetensors",
                     tmp_path / "both" / "wave" / "model.safetensors"]
    for style, weight, path, run in zip(two_styles, (1.0, 3.0), paths, together.styles):
        alone = Trainer(tiny_config(style, coco_folder, tmp_path / f"alone_{run.name}", steps=4, style_weight=weight))
        [alone_path] = alone.run()
        a, b = alone.styles[0].net.state_dict(), run.net.state_dict()
        for k in a:
            torch.testing.assert_close(a[k], b[k], rtol=1e-4, atol=1e-5, msg=k)
        assert [r["total"] for r in run.history] == pytest.approx([r["total"] for r in alone.styles[0].history],
                                                                   rel=1e-4)
        # the model file records how it was made, as a run of its style alone would, and the run
        meta, alone_meta = read_metadata(path), read_metadata(alone_path)
        assert meta["config"] == {**alone_meta["config"], "out": str(tmp_path / "both")}
        assert meta["loss"] == alone_meta["loss"] and meta["loss"]["style_weight"] == weight
        assert meta["trained_with"] == ["starry_night", "wave"] and alone_meta["trained_with"] is None
        log = (path.parent / "log.jsonl").read_text().splitlines()
        assert len(log) == 4 and (path.parent / "samples" / "step_000004.jpg").is_file()
    assert (tmp_path / "both" / "checkpoint.pt").is_file() and (tmp_path / "both" / "config.json").is_file()


def test_several_styles_stop_and_resume_exactly(two_styles, coco_folder, tmp_path):
    full = Trainer(tiny_config(two_styles, coco_folder, tmp_path / "full", steps=6))
    full.run()
    first = Trainer(tiny_config(two_styles, coco_folder, tmp_path / "split", steps=6))
    with pytest.raises(Interrupted):
        first.run(SignalAt(2))
    second = Trainer(resume=str(tmp_path / "split" / "checkpoint.pt"))
    second.run()
    for a, b in zip(full.styles, second.styles):
        assert all(torch.equal(a.net.state_dict()[k], b.net.state_dict()[k]) for k in a.net.state_dict())
        assert [r["total"] for r in a.history] == [r["total"] for r in b.history]


def test_several_styles_mistakes_get_one_line(two_styles, coco_folder, tmp_path):
    with pytest.raises(UserError, match=r"--style-weight: give one value, or one per style \(2\), not 3"):
        Trainer(tiny_config(two_styles, coco_folder, tmp_path / "a", style_weight=[1.0, 2.0, 3.0]))
    with pytest.raises(UserError, match="two style images are named 'wave'"):
        Trainer(tiny_config([two_styles[1], str(tmp_path / "x" / "wave.jpg")], coco_folder, tmp_path / "b"))
    with pytest.raises(UserError, match="--teacher works with one --style"):
        Trainer(tiny_config(two_styles, coco_folder, tmp_path / "c", teacher=str(tmp_path), teacher_weight=1.0))


# -- the training step and pack files ---------------------------------------------------------------

def _two_steps(objective, compile):
    torch.manual_seed(3)
    net = TransformerNet(8, 1)
    opt = torch.optim.Adam(net.parameters(), 1e-3)
    step = make_train_step(net, objective, opt, torch.device("cpu"), compile=compile, compile_backend="aot_eager")
    torch.manual_seed(4)
    losses = [step(torch.rand(2, 3, 32, 32))["total"].item() for _ in range(2)]
    return losses, net.state_dict()


def test_compiled_step_trains_like_the_eager_step(objective):
    torch._dynamo.reset()
    eager_losses, eager_state = _two_steps(objective, compile=False)
    compiled_losses, compiled_state = _two_steps(objective, compile=True)
    assert eager_losses == pytest.approx(compiled_losses, rel=1e-5)
    for k in eager_state:
        assert torch.allclose(eager_state[k], compiled_state[k], atol=1e-6), k


def test_training_from_a_pack_file_resumes_exactly(style_image, packed, tmp_path):
    path, _ = packed
    full = Trainer(tiny_config(style_image, path, tmp_path / "full", steps=6, image_size=32))
    full.run()
    first = Trainer(tiny_config(style_image, path, tmp_path / "part", steps=3, image_size=32))
    first.run()
    second = Trainer(resume=str(tmp_path / "part" / "checkpoint.pt"), overrides={"steps": 6})
    assert "pack" in second.source.description and len(second.bad_examples) == 1
    second.run()
    a, b = full.styles[0].net.state_dict(), second.styles[0].net.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert load_checkpoint(tmp_path / "part" / "checkpoint.pt")["position"] == [1, 4]  # 4 batches per epoch


def test_epochs_over_a_pack_file_take_whole_batches(style_image, packed, tmp_path):
    path, _ = packed
    trainer = Trainer(tiny_config(style_image, path, tmp_path / "run", steps=None, epochs=2, batch_size=3))
    assert trainer.total_steps() == 4  # 8 images: two batches of 3 per epoch, the last 2 dropped
    trainer.run()
    assert trainer.step == 4 and trainer.images_seen == 12



def test_resume_after_a_crash_drops_the_log_lines_after_the_checkpoint(style_image, coco_folder, tmp_path):
    class CrashAt(SignalAt):
        def update(self, step, records, names):
            if step == self.step:
                raise RuntimeError("the machine went away")

    trainer = Trainer(tiny_config(style_image, coco_folder, tmp_path / "run", steps=8, checkpoint_every=4))
    with pytest.raises(RuntimeError):
        trainer.run(CrashAt(6))
    log = tmp_path / "run" / "log.jsonl"
    assert [json.loads(l)["step"] for l in log.read_text().splitlines()] == [1, 2, 3, 4, 5, 6]
    Trainer(resume=str(tmp_path / "run" / "checkpoint.pt")).run()
    assert [json.loads(l)["step"] for l in log.read_text().splitlines()] == list(range(1, 9))


def test_the_stability_term_is_zero_for_a_network_that_moves_with_its_input():
    from fastnst.losses import random_motion, stability_loss

    x = torch.rand(2, 3, 64, 64)
    theta, noise = random_motion(2, 64, torch.Generator().manual_seed(0))
    pointwise = torch.nn.Conv2d(3, 3, 1)  # commutes with any motion of the image
    assert stability_loss(pointwise, x, pointwise(x), theta, noise * 0).item() < 1e-10
    pattern = torch.rand(1, 3, 64, 64)
    fixed = lambda t: 0.5 * t + pattern  # noqa: E731  strokes that stay put while the image moves
    assert stability_loss(fixed, x, fixed(x), theta, noise * 0).item() > 1e-3
    assert stability_loss(pointwise, x, pointwise(x), theta, noise).item() > 0  # the noise counts
    again = random_motion(2, 64, torch.Generator().manual_seed(0))
    assert torch.equal(again[0], theta) and torch.equal(again[1], noise)


def test_training_with_the_stability_term_logs_it_and_resumes_exactly(style_image, coco_folder, tmp_path):
    full = Trainer(tiny_config(style_image, coco_folder, tmp_path / "full", steps=4, temporal_weight=10.0))
    full.run()
    assert all("temporal" in h and h["temporal"] > 0 for h in full.styles[0].history)
    first = Trainer(tiny_config(style_image, coco_folder, tmp_path / "split", steps=2, temporal_weight=10.0))
    first.run()
    second = Trainer(resume=str(tmp_path / "split" / "checkpoint.pt"), overrides={"steps": 4})
    second.run()
    a, b = full.styles[0].net.state_dict(), second.styles[0].net.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    plain = Trainer(tiny_config(style_image, coco_folder, tmp_path / "plain", steps=4))
    plain.run()
    p = plain.styles[0].net.state_dict()
    assert any(not torch.equal(p[k], a[k]) for k in a)  # the term changes training
    meta = read_metadata(tmp_path / "full" / "model.safetensors")
    assert meta["config"]["temporal_weight"] == 10.0
    final = meta["final_losses"]
    assert final["total"] == pytest.approx(final["content"] + final["style"] + final["tv"])  # J, not the extra term
