"""Flicker: the warping error, the temporal blend of `stylize --temporal`, and `fastnst flicker`."""

import json
from fractions import Fraction

import numpy as np
import pytest
from PIL import Image

from conftest import fastnst, make_clip, one_line_error
from fastnst.temporal import TemporalBlend, measure_flicker


def textured(h=96, w=128, seed=0) -> np.ndarray:
    """A smooth random texture (3 x H x W in [0, 1]) that optical flow can follow."""
    rng = np.random.default_rng(seed)
    small = rng.random((3, h // 8, w // 8)).astype(np.float32)
    return np.stack([np.asarray(Image.fromarray(c, "F").resize((w, h), Image.BICUBIC)) for c in small]).clip(0, 1)


def shifted_frames(n=4, shift=3, h=96, w=128):
    """`n` frames of one scene panning right by `shift` pixels a frame."""
    scene = textured(h, w + shift * n)
    return [scene[:, :, shift * (n - i):shift * (n - i) + w].copy() for i in range(n)]


def test_warping_error_is_zero_for_a_stylizer_that_moves_with_the_scene():
    frames = shifted_frames()
    commuting = [1.0 - f[[2, 0, 1]] for f in frames]  # a pointwise colour map: moves with the scene
    rng = np.random.default_rng(1)
    pattern = rng.random(frames[0].shape).astype(np.float32)
    fixed = [0.5 * f + 0.5 * pattern for f in frames]  # strokes that stay put while the scene moves
    still = measure_flicker(frames, commuting)
    moving = measure_flicker(frames, fixed)
    assert still["frames"] == 4 and len(still["per_frame"]) == 3
    assert still["warping_error"] < 2e-3 and still["input_warping_error"] < 2e-3, still
    assert moving["warping_error"] > 20 * still["warping_error"] and moving["warping_error"] > 0.02, moving
    assert all(p["visible_fraction"] > 0.8 for p in still["per_frame"])


def test_blending_lowers_flicker_and_a_scene_cut_starts_afresh():
    frames = shifted_frames(6)
    rng = np.random.default_rng(2)
    flickering = [(0.7 * f + 0.3 * rng.random(f.shape)).astype(np.float32) for f in frames]
    blend = TemporalBlend(0.6)
    blended = [blend.blend(f, s) for f, s in zip(frames, flickering)]
    before, after = measure_flicker(frames, flickering), measure_flicker(frames, blended)
    assert after["warping_error"] < 0.6 * before["warping_error"], (before["warping_error"], after["warping_error"])
    assert blend.cuts == 0
    np.testing.assert_array_equal(blended[0], flickering[0])  # the first frame is its own

    cut = textured(seed=9)  # another shot
    styled_cut = (0.7 * cut + 0.3 * rng.random(cut.shape)).astype(np.float32)
    np.testing.assert_array_equal(blend.blend(cut, styled_cut), styled_cut)  # no ghost of the last shot
    assert blend.cuts == 1
    assert not np.array_equal(blend.blend(cut, styled_cut[:, :, ::-1].copy()), styled_cut[:, :, ::-1])


def test_no_blending_at_zero():
    frames = shifted_frames(3)
    blend = TemporalBlend(0.0)
    for f in frames:
        assert blend.blend(f, 1 - f) is not None
        np.testing.assert_array_equal(blend.blend(f, 1 - f), 1 - f)
    with pytest.raises(ValueError):
        TemporalBlend(1.5)


def test_temporal_video_keeps_frames_rate_and_audio_and_flicker_reads_it(tiny_onnx, tmp_path):
    from fastnst.video import probe

    src = make_clip(tmp_path / "clip.mp4")
    for name, strength in (("plain.mp4", "0"), ("stable.mp4", "0.8")):
        r = fastnst("stylize", src, "--model", tiny_onnx, "--out", tmp_path / name, "--temporal", strength)
        assert r.returncode == 0, r.stderr
        assert probe(tmp_path / name) == probe(src)
    assert probe(src)["frames"] == 12 and probe(src)["fps"] == Fraction(12) and probe(src)["audio"]

    r = fastnst("flicker", src, tmp_path / "stable.mp4", "--json", tmp_path / "f.json", "--plot", tmp_path / "f.png")
    assert r.returncode == 0, r.stderr
    assert "warping error" in r.stdout
    report = json.loads((tmp_path / "f.json").read_text())
    assert report["frames"] == 12 and len(report["per_frame"]) == 11
    assert {"warping_error", "input_warping_error", "frames", "per_frame"} <= set(report)
    assert Image.open(tmp_path / "f.png").size[0] > 100


def test_temporal_blends_the_frames_of_a_folder_and_a_gif(tiny_onnx, tmp_path):
    frames = shifted_frames(4, h=48, w=64)
    folder = tmp_path / "frames"
    folder.mkdir()
    pil = [Image.fromarray((f.transpose(1, 2, 0) * 255).astype(np.uint8)) for f in frames]
    for i, im in enumerate(pil):
        im.save(folder / f"f_{i:03d}.png")
    pil[0].save(tmp_path / "a.gif", save_all=True, append_images=pil[1:], duration=80, loop=0)
    for args in (("--temporal", "0"), ("--temporal", "0.9")):
        out = tmp_path / f"out{args[1]}"
        r = fastnst("stylize", folder, tmp_path / "a.gif", "--model", tiny_onnx, "--out", out, *args)
        assert r.returncode == 0, r.stderr
        assert sorted(p.name for p in (out / "frames").iterdir()) == [f"f_{i:03d}.png" for i in range(4)]
        assert Image.open(out / "a.gif").n_frames == 4
    plain = np.asarray(Image.open(tmp_path / "out0/frames/f_002.png"), np.float32)
    blended = np.asarray(Image.open(tmp_path / "out0.9/frames/f_002.png"), np.float32)
    first = [np.asarray(Image.open(tmp_path / f"out{s}/frames/f_000.png")) for s in ("0", "0.9")]
    np.testing.assert_array_equal(*first)  # the first frame is stylized alone
    assert np.abs(plain - blended).mean() > 0.1  # later frames are blended


def test_flicker_refuses_what_it_cannot_compare(tmp_path):
    a = make_clip(tmp_path / "a.mp4", frames=6, audio=False)
    assert one_line_error(fastnst("flicker", a, make_clip(tmp_path / "b.mp4", frames=5, audio=False)))
    assert one_line_error(fastnst("flicker", a, make_clip(tmp_path / "c.mp4", frames=6, size=(32, 24),
                                                          audio=False)))
    one = make_clip(tmp_path / "one.mp4", frames=1, audio=False)
    assert "at least two" in one_line_error(fastnst("flicker", one, one))
    (tmp_path / "text.mp4").write_text("not a video")
    assert one_line_error(fastnst("flicker", a, tmp_path / "text.mp4"))
    assert one_line_error(fastnst("flicker", a, tmp_path / "missing.mp4"))
    (tmp_path / "empty").mkdir()
    assert one_line_error(fastnst("flicker", tmp_path / "empty", a))


def test_colour_matching_gives_the_reference_mean_and_covariance():
    from fastnst.temporal import match_colours

    rng = np.random.default_rng(3)
    image = (0.5 + 0.05 * rng.standard_normal((3, 40, 50))).astype(np.float32)
    mix = np.array([[1.0, 0.3, 0.0], [0.0, 1.0, 0.5], [0.2, 0.0, 1.0]])
    reference = (0.4 + 0.06 * np.einsum("ij,jhw->ihw", mix, rng.standard_normal((3, 40, 50)))).astype(np.float32)
    out = match_colours(image, reference)
    np.testing.assert_allclose(out.mean((1, 2)), reference.mean((1, 2)), atol=1e-4)
    np.testing.assert_allclose(np.cov(out.reshape(3, -1)), np.cov(reference.reshape(3, -1)), atol=1e-5)


def test_the_torch_blend_step_is_the_numpy_one(shared_data):
    """temporal_torch.follow (frames on the GPU) against temporal.follow (numpy, OpenCV) on two
    Sintel frames: same warp, blurs and colour map."""
    import torch

    from fastnst import temporal, temporal_torch
    from fastnst.images import open_image, pil_to_array

    files = sorted((shared_data / "video" / "sintel_mountain_2").glob("*.png"))[:2]
    earlier, later = (pil_to_array(open_image(f).resize((256, 109))) for f in files)
    link = temporal.link(earlier, later, 0.5, temporal.Flow("fast"))
    assert link is not None and 0.2 < link.weight.mean() <= 0.5
    rng = np.random.default_rng(0)
    previous = np.clip(earlier + 0.2 * rng.standard_normal(earlier.shape, dtype=np.float32), 0, 1)
    stylized = np.clip(later[::-1] * 0.8 + 0.2 * rng.standard_normal(later.shape, dtype=np.float32), 0, 1)
    expected = temporal.follow(previous, stylized, link)
    got = temporal_torch.follow(torch.from_numpy(previous), torch.from_numpy(stylized), link).numpy()
    assert np.abs(got - expected).max() < 1e-3
    assert np.abs(expected - stylized).mean() > 0.01  # the blend did something


def test_the_torch_link_is_the_numpy_link(shared_data):
    """temporal_torch.link_along (on the GPU, given the CPU's flows) against temporal.link_along: the
    same visible pixels and weights but at a few pixels on the edge of a threshold, and the same cuts."""
    import torch

    from fastnst import temporal, temporal_torch
    from fastnst.images import open_image, pil_to_array

    files = sorted((shared_data / "video" / "sintel_mountain_2").glob("*.png"))[:2]
    earlier, later = (pil_to_array(open_image(f).resize((256, 109))) for f in files)
    def flows(a, b):
        return temporal.flows(temporal.gray(a), temporal.gray(b), temporal.Flow("fast"))

    expected = temporal.link_along(earlier, later, *flows(earlier, later), 0.5)
    got = temporal_torch.link_along(torch.from_numpy(earlier), torch.from_numpy(later), *flows(earlier, later), 0.5)
    assert expected is not None and got is not None
    assert np.mean(got.weight.numpy() != expected.weight) < 0.005
    np.testing.assert_array_equal(got.backward.numpy(), expected.backward)
    other = textured(109, 256, seed=5)  # a new shot
    assert temporal.link_along(earlier, other, *flows(earlier, other), 0.5) is None
    assert temporal_torch.link_along(torch.from_numpy(earlier), torch.from_numpy(other),
                                     *flows(earlier, other), 0.5) is None
