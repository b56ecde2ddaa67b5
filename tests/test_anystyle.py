"""Any style at run time: the feature transform, the decoders (training, resume, export) and the commands."""
import json

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import fastnst, one_line_error
from fastnst.anystyle import AnyStyle, average_pool, colouring, parse_pool, whiten_colour
from fastnst.errors import UserError


def covariance(f):
    f = f.reshape(f.shape[0], -1).astype(np.float64)
    return np.cov(f), f.mean(1)


def test_whiten_colour_gives_the_style_mean_and_covariance():
    rng = np.random.default_rng(0)
    mixing = rng.normal(size=(16, 16))
    content = (mixing @ rng.normal(size=(16, 900)) + 3.0).reshape(16, 30, 30).astype(np.float32)
    style = (rng.normal(size=(16, 16)) @ rng.normal(size=(16, 2000)) * 5 - 1.0).astype(np.float32)
    out = whiten_colour(content, colouring(style))
    got_cov, got_mean = covariance(out)
    want_cov, want_mean = covariance(style)
    assert np.allclose(got_mean, want_mean, atol=1e-3 * np.abs(want_mean).max())
    assert np.allclose(got_cov, want_cov, atol=1e-3 * np.abs(want_cov).max())
    assert not np.allclose(covariance(content)[0], want_cov, atol=0.1 * np.abs(want_cov).max())
    # strength 0 is the content, 0.5 halfway
    assert np.allclose(whiten_colour(content, colouring(style), 0.0), content, atol=1e-4)
    half = whiten_colour(content, colouring(style), 0.5)
    assert np.allclose(half, 0.5 * (out + content), atol=1e-3)


def test_style_pool_is_an_average_pooling():
    image = np.arange(2 * 5 * 6, dtype=np.float32).reshape(2, 5, 6)
    pooled = average_pool(image, 2, 2)
    assert pooled.shape == (2, 2, 3)
    assert pooled[1, 1, 2] == image[1, 2:4, 4:6].mean()
    assert average_pool(image, 3, 1).shape == (2, 3, 4)
    assert parse_pool("3,1") == (3, 1) and parse_pool(None) is None
    for bad in ("3", "a,b", "0,1"):
        with pytest.raises(UserError):
            parse_pool(bad)
    with pytest.raises(UserError, match="larger than the style image"):
        average_pool(image, 6, 1)


@pytest.fixture(scope="module")
def decoders(tmp_path_factory, shared_data):
    """Decoders trained for 3 steps on real photos (tiny: width 0.125, 32 px crops), and their export."""
    from fastnst.decoders import train_decoders
    from fastnst.export import export_checked

    d = tmp_path_factory.mktemp("decoders")
    path = train_decoders(data=str(shared_data / "coco"), out=str(d / "run"), steps=3, batch_size=2,
                          image_size=32, width=0.125, checkpoint_every=0, log_every=1, workers=2, device="cpu")
    report = export_checked(path, d / "exported", False, 18, False, None)
    return path, report["path"]


def test_decoders_invert_the_features_of_photos(shared_data, tmp_path):
    """Training lowers every level's reconstruction error; the log says so."""
    from fastnst.decoders import train_decoders

    train_decoders(data=str(shared_data / "coco"), out=str(tmp_path), steps=40, batch_size=2, image_size=32,
                   width=0.125, lr=1e-3, checkpoint_every=0, log_every=10, workers=2, device="cpu")
    log = [json.loads(line) for line in (tmp_path / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log] == [10, 20, 30, 40]
    for level in range(1, 5):
        assert log[-1][f"pixel{level}"] < 0.7 * log[0][f"pixel{level}"], (level, log[0], log[-1])


def test_transferred_features_have_the_next_photos_statistics():
    from fastnst.decoders import transferred

    features = torch.randn(3, 8, 12, 10) * torch.arange(1, 4.0).view(3, 1, 1, 1) + torch.randn(3, 8, 1, 1)
    out = transferred(features)
    for i in range(3):
        got, want = out[i].flatten(1).double(), features[(i + 1) % 3].flatten(1).double()
        assert torch.allclose(got.mean(1), want.mean(1), atol=1e-4)
        assert torch.allclose(torch.cov(got), torch.cov(want), atol=1e-3)


def test_transferred_features_are_the_run_time_transform():
    """Training's batched torch transform and stylize --style's numpy one give the same features, also
    with fewer positions than channels (directions dropped under the eigenvalue floor)."""
    from fastnst.decoders import transferred

    for shape in ((3, 16, 9, 7), (2, 32, 4, 4)):
        features = torch.relu(torch.randn(shape) * 3 + 1)
        out, f = transferred(features).numpy(), features.numpy()
        for i in range(len(f)):
            want = whiten_colour(f[i], colouring(f[(i + 1) % len(f)]))
            assert np.allclose(out[i], want, atol=1e-3 * np.abs(want).max()), (shape, i)


def test_transfer_loss_teaches_decoding_transformed_features(shared_data, tmp_path):
    from fastnst.decoders import train_decoders

    train_decoders(data=str(shared_data / "coco"), out=str(tmp_path), steps=30, batch_size=2, image_size=32,
                   width=0.125, lr=1e-3, transfer_weight=1.0, checkpoint_every=0, log_every=10, workers=2,
                   device="cpu")
    log = [json.loads(line) for line in (tmp_path / "log.jsonl").read_text().splitlines()]
    first, last = (sum(r[f"transfer{k}"] for k in range(1, 5)) for r in (log[0], log[-1]))
    assert last < 0.8 * first, (log[0], log[-1])


def test_decoders_resume_exactly(shared_data, tmp_path):
    from fastnst.decoders import train_decoders

    options = dict(data=str(shared_data / "coco"), batch_size=2, image_size=32, width=0.125, checkpoint_every=2,
                   log_every=1, workers=2, device="cpu")
    whole = train_decoders(out=str(tmp_path / "whole"), steps=4, **options)
    train_decoders(out=str(tmp_path / "half"), steps=2, **options)
    resumed = train_decoders(resume=tmp_path / "half" / "checkpoint.pt", steps=4)
    from safetensors.torch import load_file

    a, b = load_file(str(whole)), load_file(str(resumed))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    with pytest.raises(UserError, match="--width cannot change"):
        train_decoders(resume=tmp_path / "half" / "checkpoint.pt", width=0.5)


def test_decoders_init_from_trained_decoders(decoders, shared_data, tmp_path):
    """A fine-tune (here with the feature loss) starts from the given decoders and records them."""
    from safetensors.torch import load_file

    from fastnst.decoders import read_decoders_metadata, train_decoders

    path, _ = decoders
    options = dict(data=str(shared_data / "coco"), steps=1, batch_size=2, image_size=32, width=0.125, lr=1e-12,
                   checkpoint_every=0, log_every=1, workers=2, device="cpu")
    tuned = train_decoders(out=str(tmp_path / "tuned"), init_from=str(path), feature_weight=1.0, **options)
    before, after = load_file(str(path)), load_file(str(tuned))
    assert all(torch.allclose(before[k].float(), after[k].float(), atol=1e-3) for k in before)
    meta = read_decoders_metadata(tuned)
    assert meta["init_from"]["path"] == str(path) and meta["init_from"]["steps"] == 3
    assert "feature4" in json.loads((tmp_path / "tuned" / "log.jsonl").read_text().splitlines()[0])
    with pytest.raises(UserError, match="width 0.125"):
        train_decoders(out=str(tmp_path / "wide"), init_from=str(path), **{**options, "width": 0.25})


def test_export_writes_every_stage_and_refuses_to_overwrite(decoders, tmp_path):
    path, exported = decoders
    assert sorted(p.name for p in exported.iterdir()) == sorted(
        [f"encoder{k}.onnx" for k in range(1, 5)] + [f"decoder{k}.onnx" for k in range(1, 5)])
    r = fastnst("export", path, "--out", exported)
    assert "already exists" in one_line_error(r)
    r = fastnst("export", path, "--out", tmp_path / "x", "--int8", "--calibration", tmp_path)
    assert "fp32 ONNX only" in one_line_error(r)


def test_onnx_and_pytorch_stylize_alike(decoders, shared_data):
    """The same stages on both; the transform is the same numpy. Judged on a level's features, where
    the whitening has not yet amplified float rounding."""
    path, exported = decoders
    style = shared_data / "styles" / "wave.jpg"
    onnx_run, torch_run = AnyStyle(style, str(exported), "cpu", style_size=64), AnyStyle(style, str(path), "cpu",
                                                                                          style_size=64)
    photo = np.asarray(Image.open(shared_data / "content" / "chicago.jpg").convert("RGB").resize((48, 40)),
                       np.float32).transpose(2, 0, 1) / 255
    for level in range(4):
        a, b = onnx_run.stages.encode(photo, level), torch_run.stages.encode(photo, level)
        assert np.abs(a - b).max() <= 1e-4 * np.abs(b).max()
        assert np.abs(onnx_run.stages.decode(level, b) - torch_run.stages.decode(level, b)).max() < 1e-4
    out = onnx_run.stylize_batch(photo[None])
    assert out.shape == (1, 3, 40, 48) and out.min() >= 0 and out.max() <= 1


def test_stylize_with_any_style_image(decoders, shared_data, tmp_path):
    path, exported = decoders
    photo, style = shared_data / "content" / "chicago.jpg", shared_data / "styles" / "mondrian.jpg"
    for model in (exported, path):
        r = fastnst("stylize", photo, "--style", style, "--model", model, "--max-size", 64, "--style-size", 64,
                    "--style-pool", "2,2", "--style-depth", 2, "--preserve-color",
                    "--out", tmp_path / f"{model.name}.png")
        assert r.returncode == 0, r.stderr
        assert Image.open(tmp_path / f"{model.name}.png").size[0] == 64
        assert "with mondrian" in r.stderr
    # a folder of photos: into a folder named by the style
    (tmp_path / "in").mkdir()
    Image.open(photo).resize((40, 30)).save(tmp_path / "in" / "a.jpg")
    r = fastnst("stylize", tmp_path / "in", "--style", style, "--model", exported, "--style-size", 64)
    assert r.returncode == 0 and (tmp_path / "in_mondrian" / "a.jpg").is_file(), r.stderr


def test_any_style_video_with_temporal_blending(decoders, shared_data, tmp_path):
    import av

    from conftest import make_clip

    path, exported = decoders
    clip = make_clip(tmp_path / "clip.mp4", frames=5)
    r = fastnst("stylize", clip, "--style", shared_data / "styles" / "wave.jpg", "--model", exported,
                "--style-size", 64, "--temporal", 0.5, "--out", tmp_path / "out.mp4")
    assert r.returncode == 0, r.stderr
    with av.open(str(tmp_path / "out.mp4")) as video:
        assert sum(1 for _ in video.decode(video=0)) == 5


def test_python_api(decoders, shared_data):
    import fastnst

    path, exported = decoders
    image = Image.open(shared_data / "content" / "chicago.jpg").convert("RGB").resize((40, 32))
    out = fastnst.AnyStyle(shared_data / "styles" / "wave.jpg", str(exported), style_size=64)(image, strength=0.5)
    assert isinstance(out, Image.Image) and out.size == (40, 32)


def test_any_style_bad_input(decoders, shared_data, tmp_path, style_image):
    path, exported = decoders
    photo = shared_data / "content" / "chicago.jpg"
    (tmp_path / "broken.jpg").write_bytes(b"not an image")
    for style, words in ((tmp_path / "missing.jpg", "no such file"), (tmp_path / "broken.jpg", "broken.jpg")):
        r = fastnst("stylize", photo, "--style", style, "--model", exported, "--out", tmp_path / "o.png")
        assert words in one_line_error(r)
    r = fastnst("stylize", photo, "--style", style_image, "--model", exported, "--style-pool", "3", "--out",
                tmp_path / "o.png")
    assert "--style-pool" in one_line_error(r)
    r = fastnst("stylize", photo, "--style", style_image, "--model", exported, "--style-depth", 5, "--out",
                tmp_path / "o.png")
    assert "--style-depth" in one_line_error(r)
    r = fastnst("stylize", photo, "--style", style_image, "--model", "starry_night", "--out", tmp_path / "o.png")
    assert "per-style model" in one_line_error(r)
    r = fastnst("stylize", photo, "--out", tmp_path / "o.png")
    assert "--style ANY_IMAGE" in one_line_error(r)
    r = fastnst("compare", photo, "--model", exported, "--out", tmp_path / "c")
    assert "--style" in one_line_error(r)
    assert not (tmp_path / "o.png").exists()


def test_compare_scores_any_style_on_the_objective(decoders, shared_data, tmp_path):
    path, exported = decoders
    r = fastnst("compare", shared_data / "content" / "chicago.jpg", "--model", exported, "--style",
                shared_data / "styles" / "wave.jpg", "--sizes", 48, "--iterations", "0,5", "--runs", 1,
                "--style-weight", 3, "--out", tmp_path)
    assert r.returncode == 0, r.stderr
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["loss"]["style_weight"] == 3 and report["style"] == "wave"
    row = report["rows"][0]
    assert row["network_J"] > 0 and set(row["starts"]) == {"noise", "content"}


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the route where there is no GPU")
def test_any_style_on_cuda_runs_the_decoders_file_on_pytorch():
    """`--device cuda` takes the shipped decoders file beside the exported stages (PyTorch, as per-style
    models do), not onnxruntime's CUDA provider: here it is PyTorch that says there is no GPU."""
    from fastnst.anystyle import open_stages

    with pytest.raises(UserError, match="no CUDA GPU is available to PyTorch"):
        open_stages("any-style", "cuda")
    path, _ = open_stages("any-style", "cpu")
    assert path.is_dir()
