"""`fastnst stylize` as a user meets it: files, folders, globs, videos, GIFs and bad input."""
from fractions import Fraction

import numpy as np
import onnx
import pytest
from PIL import Image

from conftest import fastnst, make_clip, one_line_error
from fastnst.images import preserve_color
from fastnst.inference import Stylizer, stylize_array, stylize_image


def _photo(path, size=(37, 23), mode="RGB", seed=0):
    a = np.random.default_rng(seed).integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)
    im = Image.fromarray(a)
    if mode == "RGBA":
        im.putalpha(Image.fromarray(a[..., 0]))
    elif mode != "RGB":
        im = im.convert(mode)
    path.parent.mkdir(parents=True, exist_ok=True)
    im.save(path)
    return path


@pytest.mark.parametrize("name,mode,size", [("a.jpg", "RGB", (37, 23)), ("b.png", "RGB", (64, 48)),
                                            ("g.png", "L", (31, 17)), ("t.png", "RGBA", (20, 30)),
                                            ("one.png", "RGB", (1, 1)), ("p.png", "P", (9, 5))])
def test_images_keep_their_size(tiny_onnx, tmp_path, name, mode, size):
    src = _photo(tmp_path / name, size, mode)
    r = fastnst("stylize", src, "--model", tiny_onnx, "--out", tmp_path / "out" / name)
    assert r.returncode == 0, r.stderr
    out = Image.open(tmp_path / "out" / name)
    assert out.size == size
    assert out.mode == ("RGBA" if mode == "RGBA" else "RGB")
    if mode == "RGBA":  # alpha kept as it was
        assert np.array_equal(np.asarray(out)[..., 3], np.asarray(Image.open(src))[..., 3])


def test_default_output_name_and_max_size(tiny_onnx, tmp_path):
    src = _photo(tmp_path / "photo.jpg", (120, 80))
    r = fastnst("stylize", src, "--model", tiny_onnx, "--max-size", "60")
    assert r.returncode == 0, r.stderr
    assert Image.open(tmp_path / "photo_starry_night.jpg").size == (60, 40)


def test_folders_are_mirrored_and_globs_expanded(tiny_onnx, tmp_path):
    for rel in ["a.jpg", "sub/b.png", "sub/deeper/c.webp"]:
        _photo(tmp_path / "in" / rel)
    (tmp_path / "in" / "notes.txt").write_text("ignored")
    r = fastnst("stylize", tmp_path / "in", "--model", tiny_onnx, "--out", tmp_path / "out")
    assert r.returncode == 0, r.stderr
    got = sorted(str(p.relative_to(tmp_path / "out")) for p in (tmp_path / "out").rglob("*") if p.is_file())
    assert got == ["a.jpg", "sub/b.png", "sub/deeper/c.webp"]
    r = fastnst("stylize", str(tmp_path / "in" / "**" / "*.png"), "--model", tiny_onnx, "--out", tmp_path / "g")
    assert r.returncode == 0, r.stderr
    assert sorted(p.name for p in (tmp_path / "g").iterdir()) == ["b.png"]


def test_strength_and_preserve_color(tiny_onnx, tmp_path):
    stylizer = Stylizer(str(tiny_onnx))
    im = Image.open(_photo(tmp_path / "x.png", (40, 30))).convert("RGB")
    same = stylize_image(stylizer, im, strength=0.0)
    assert np.abs(np.asarray(same, int) - np.asarray(im, int)).max() <= 1
    content = np.asarray(im, np.float32).transpose(2, 0, 1) / 255
    styl = np.random.default_rng(3).random(content.shape, dtype=np.float32)
    merged = preserve_color(styl, content)
    # chroma from the content, luma from the stylized image
    to_ycc = lambda a: np.asarray(Image.fromarray((a.transpose(1, 2, 0) * 255).round().astype(np.uint8)).convert("YCbCr"), float)  # noqa: E731
    ycc_m, ycc_c, ycc_s = to_ycc(merged), to_ycc(content), to_ycc(styl)
    inside = (merged > 0.02).all(0) & (merged < 0.98).all(0)  # away from clipping
    assert np.abs(ycc_m[..., 1:] - ycc_c[..., 1:])[inside].mean() < 2
    assert np.abs(ycc_m[..., 0] - ycc_s[..., 0])[inside].mean() < 2


def test_video_round_trip_keeps_frames_fps_and_audio(tiny_onnx, tmp_path):
    from fastnst.video import probe

    src = make_clip(tmp_path / "clip.mp4")
    r = fastnst("stylize", src, "--model", tiny_onnx, "--out", tmp_path / "out.mp4")
    assert r.returncode == 0, r.stderr
    before, after = probe(src), probe(tmp_path / "out.mp4")
    assert after == before, (before, after)
    assert before["frames"] == 12 and before["fps"] == Fraction(12) and before["audio"]
    r = fastnst("stylize", src, "--model", tiny_onnx, "--out", tmp_path / "small.mp4", "--max-size", "32")
    assert r.returncode == 0, r.stderr
    assert (probe(tmp_path / "small.mp4")["width"], probe(tmp_path / "small.mp4")["height"]) == (32, 24)
    for ext in (".webm", ".mkv"):  # WebM takes no AAC: the audio is re-encoded (Opus); Matroska copies it
        r = fastnst("stylize", src, "--model", tiny_onnx, "--out", tmp_path / f"out{ext}")
        assert r.returncode == 0, r.stderr
        assert probe(tmp_path / f"out{ext}")["audio"] and probe(tmp_path / f"out{ext}")["frames"] == 12, ext


def test_animated_gif_in_gif_out(tiny_onnx, tmp_path):
    rng = np.random.default_rng(0)
    frames = [Image.fromarray(rng.integers(0, 255, (20, 30, 3), dtype=np.uint8)) for i in range(4)]
    frames[0].save(tmp_path / "a.gif", save_all=True, append_images=frames[1:], duration=[50, 60, 70, 80], loop=0)
    r = fastnst("stylize", tmp_path / "a.gif", "--model", tiny_onnx, "--out", tmp_path / "b.gif")
    assert r.returncode == 0, r.stderr
    out = Image.open(tmp_path / "b.gif")
    assert out.n_frames == 4 and out.size == (30, 20)
    durations = []
    for i in range(4):
        out.seek(i)
        durations.append(out.info["duration"])
    assert durations == [50, 60, 70, 80]


def test_single_bad_inputs_get_one_line_and_exit_2(tiny_onnx, tmp_path):
    text = tmp_path / "text.jpg"
    text.write_text("I am text")
    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")
    good = _photo(tmp_path / "good.jpg", (64, 64))
    cut = tmp_path / "cut.jpg"
    cut.write_bytes(good.read_bytes()[:200])
    bad_video = tmp_path / "v.mp4"
    bad_video.write_text("not a video")
    foreign = tmp_path / "foreign.onnx"
    node = onnx.helper.make_node("Identity", ["x"], ["y"])
    vi = lambda n: onnx.helper.make_tensor_value_info(n, onnx.TensorProto.FLOAT, [1])  # noqa: E731
    graph = onnx.helper.make_graph([node], "g", [vi("x")], [vi("y")])
    # An opset and IR version every supported onnxruntime loads (onnx's defaults may be newer).
    onnx.save(onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", 17)], ir_version=8), foreign)
    cases = [
        ([tmp_path / "missing.jpg", "--model", tiny_onnx], "missing.jpg: no such file"),
        ([text, "--model", tiny_onnx], "text.jpg: not an image file"),
        ([empty, "--model", tiny_onnx], "empty.png: empty file"),
        ([cut, "--model", tiny_onnx], "cut.jpg: corrupt or truncated"),
        ([bad_video, "--model", tiny_onnx], "v.mp4: not a readable video"),
        ([good, "--model", "no_such_style"], "unknown model 'no_such_style'"),
        ([good, "--model", foreign], "not a fastnst model"),
        ([good, "--model", tiny_onnx, "--out", good], "would overwrite an input"),
        ([good, "--model", tiny_onnx, "--strength", "1.5"], "--strength"),
        ([good, "--model", tiny_onnx, "--tile", "3"], "--tile"),
    ]
    for args, expected in cases:
        line = one_line_error(fastnst("stylize", *args))
        assert expected in line, (args, line)
    leftovers = [p.name for p in tmp_path.iterdir() if p.name.startswith(".")]
    assert not leftovers and good.read_bytes()[:200] == cut.read_bytes()


def test_batch_skips_bad_inputs_writes_good_ones_and_exits_1(tiny_onnx, tmp_path):
    _photo(tmp_path / "in" / "ok1.jpg")
    (tmp_path / "in" / "broken.jpg").write_text("nope")
    _photo(tmp_path / "in" / "ok2.png")
    r = fastnst("stylize", tmp_path / "in", "--model", tiny_onnx, "--out", tmp_path / "out")
    assert r.returncode == 1
    assert "broken.jpg" in r.stderr and "Traceback" not in r.stderr
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["ok1.jpg", "ok2.png"]


def test_pytorch_model_file_works_too(tiny_model, tmp_path):
    src = _photo(tmp_path / "x.png", (33, 21))
    r = fastnst("stylize", src, "--model", tiny_model, "--out", tmp_path / "y.png", "--device", "cpu")
    assert r.returncode == 0, r.stderr
    assert Image.open(tmp_path / "y.png").size == (33, 21)


def test_tiling_matches_untiled_output(shared_data):
    """Tiles normalised with whole-image statistics match the untiled output, and do far better
    than tiles normalised one by one (the ONNX fallback)."""
    import torch

    from fastnst.images import load_rgb, resize_long_side
    from fastnst.images import pil_to_array
    from fastnst.network import TransformerNet
    from fastnst.tiling import stylize_tiled, stylize_tiled_global

    torch.manual_seed(0)
    net = TransformerNet(width=16, blocks=2).eval()
    image = pil_to_array(resize_long_side(load_rgb(shared_data / "content" / "tubingen.jpg"), 400))
    with torch.no_grad():
        full = net(torch.from_numpy(image)[None])[0].numpy()
    tiled = stylize_tiled_global(net, image, tile=160, proxy_side=200)
    d = np.abs(tiled - full) * 255
    assert d.mean() < 2.0 and np.percentile(d, 99) < 12, (d.mean(), np.percentile(d, 99))

    class PerTile:  # a stylizer without access to the network's normalisation
        net, batch_limit = None, 1

        def stylize_batch(self, b):
            with torch.no_grad():
                return net(torch.from_numpy(b)).numpy()

    naive = np.abs(stylize_tiled(PerTile(), image, 160) - full) * 255
    assert naive.mean() > 2 * d.mean()


def test_huge_image_with_tiles_through_the_cli(tiny_model, shared_data, tmp_path):
    src = shared_data / "content" / "figures.jpg"  # 5184 x 3456
    r = fastnst("stylize", src, "--model", tiny_model, "--tile", "512", "--out", tmp_path / "f.jpg",
                "--device", "cpu")
    assert r.returncode == 0, r.stderr
    assert Image.open(tmp_path / "f.jpg").size == Image.open(src).size
    import resource

    peak_gib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 2**20  # the largest child so far
    assert peak_gib < 3, f"peak memory {peak_gib:.1f} GiB"


def test_an_input_that_gives_nothing_beside_good_ones_is_reported_and_skipped(tiny_onnx, tmp_path):
    good = _photo(tmp_path / "good.jpg")
    (tmp_path / "empty").mkdir()
    r = fastnst("stylize", good, tmp_path / "empty", str(tmp_path / "none_*.png"), "--model", tiny_onnx,
                "--out", tmp_path / "out")
    assert r.returncode == 1, r.stderr
    assert (tmp_path / "out" / "good.jpg").is_file()
    errors = [l for l in r.stderr.splitlines() if l.startswith("fastnst: error:")]
    assert len(errors) == 2 and "empty: no images or videos" in errors[0] and "none_*.png: no image" in errors[1]
    # alone, the same input is the command's one-line error (exit 2)
    assert "no images or videos in this folder" in one_line_error(
        fastnst("stylize", tmp_path / "empty", "--model", tiny_onnx))


def test_a_batch_error_line_stays_one_line_in_a_log(tiny_onnx, tmp_path):
    folder = tmp_path / ("a_folder_with_a_long_name_" * 4)
    good = _photo(folder / "ok.jpg")
    (folder / "truncated_photo_with_a_long_name.jpg").write_bytes(good.read_bytes()[:300])
    r = fastnst("stylize", folder, "--model", tiny_onnx, "--out", tmp_path / "out")
    assert r.returncode == 1
    [error] = [l for l in r.stderr.splitlines() if "truncated_photo" in l]
    assert error.startswith("fastnst: error:") and "corrupt or truncated" in error and len(error) > 120


def test_a_one_frame_video_reports_its_frames_not_a_rate(tiny_onnx, tmp_path):
    src = make_clip(tmp_path / "one.mp4", frames=1, audio=False)
    r = fastnst("stylize", src, "--model", tiny_onnx, "--out", tmp_path / "o.mp4")
    assert r.returncode == 0, r.stderr
    assert f"{tmp_path / 'o.mp4'}: 1 frame" in r.stderr and "frames/s" not in r.stderr


def test_every_still_format_pillow_reads_and_writes_is_accepted(tiny_onnx, tmp_path):
    """Netpbm video frames (.ppm, .pgm) among them, one by one and as a folder of frames."""
    frames = tmp_path / "frames"
    frames.mkdir()
    for i, ext in enumerate((".ppm", ".pgm", ".tga", ".qoi")):
        im = Image.fromarray(np.random.default_rng(i).integers(0, 255, (20, 30, 3), dtype=np.uint8))
        (im.convert("L") if ext == ".pgm" else im).save(frames / f"f{i}{ext}")
    r = fastnst("stylize", frames, "--model", tiny_onnx, "--out", tmp_path / "out")
    assert r.returncode == 0, r.stderr
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["f0.ppm", "f1.pgm", "f2.tga", "f3.qoi"]
    assert Image.open(tmp_path / "out" / "f0.ppm").size == (30, 20)


def test_a_video_of_odd_size_keeps_its_size(tiny_onnx, tmp_path):
    """65 x 49: H.264 output in 4:4:4 (4:2:0 needs even sides), WebM and AVI in 4:2:0."""
    import av

    from fastnst.video import probe

    src = tmp_path / "odd.webm"
    with av.open(str(src), "w") as c:
        v = c.add_stream("libvpx-vp9", rate=12)
        v.width, v.height, v.pix_fmt = 65, 49, "yuv420p"
        for i in range(4):
            for p in v.encode(av.VideoFrame.from_ndarray(np.full((49, 65, 3), 50 * i, np.uint8), format="rgb24")):
                c.mux(p)
        for p in v.encode(None):
            c.mux(p)
    for ext in (".mp4", ".webm", ".avi"):
        r = fastnst("stylize", src, "--model", tiny_onnx, "--out", tmp_path / f"out{ext}")
        assert r.returncode == 0, r.stderr
        info = probe(tmp_path / f"out{ext}")
        assert (info["width"], info["height"], info["frames"]) == (65, 49, 4), ext


def _panning_clip(path, frames=8, size=(96, 64)):
    """A clip of a smooth texture panning right 3 px a frame: motion the blend follows."""
    import av

    rng = np.random.default_rng(0)
    w, h = size
    small = rng.integers(0, 255, (h // 8, (w + 3 * frames) // 8, 3), dtype=np.uint8)
    scene = np.asarray(Image.fromarray(small).resize((w + 3 * frames, h), Image.BICUBIC))
    with av.open(str(path), "w") as c:
        v = c.add_stream("libx264", rate=12)
        v.width, v.height, v.pix_fmt = w, h, "yuv420p"
        v.options = {"crf": "10"}
        for i in range(frames):
            img = np.ascontiguousarray(scene[:, 3 * (frames - i):3 * (frames - i) + w])
            for p in v.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                c.mux(p)
        for p in v.encode(None):
            c.mux(p)
    return path


def _frames(path):
    import av

    with av.open(str(path)) as c:
        return np.stack([f.to_ndarray(format="rgb24") for f in c.decode(video=0)]).astype(int)


def test_pipelined_video_is_the_frame_by_frame_video(tiny_onnx, tmp_path):
    """Decoding, motion and encoding on threads beside the network change nothing in the output
    (written as MPEG-4 Part 2: libx264 here does not give the same bytes twice)."""
    from fastnst.video import stylize_video

    src = _panning_clip(tmp_path / "pan.mp4")
    stylizer = Stylizer(str(tiny_onnx))
    seen = []
    for pipelined in (False, True):
        n = stylize_video(src, tmp_path / f"{pipelined}.avi", stylizer, temporal=0.5, pipelined=pipelined,
                          on_frames=lambda done, total: seen.append(done))
        assert n == 8
    assert seen[-1] == 8
    a, b = _frames(tmp_path / "False.avi"), _frames(tmp_path / "True.avi")
    assert a.shape == (8, 64, 96, 3) and np.array_equal(a, b)
    alone = stylize_video(src, tmp_path / "alone.avi", stylizer, temporal=0.0)
    assert alone == 8 and np.abs(_frames(tmp_path / "alone.avi") - b).mean() > 0.5  # the blend was on


def test_frames_stylized_on_the_device_are_the_numpy_frames(tiny_model):
    """The GPU route (uint8 frames uploaded, stylized, strength- and temporally blended as tensors,
    only the flows from the CPU), run here on the CPU, against the numpy route the CPU takes."""
    from fastnst.temporal import TemporalBlend
    from fastnst.temporal_torch import TorchTemporalBlend
    from fastnst.video import _flows, _link, _stylize_on_device, _to_uint8

    stylizer = Stylizer(str(tiny_model), "cpu")
    rng = np.random.default_rng(2)
    small = rng.integers(0, 255, (8, 14, 3), dtype=np.uint8)
    scene = np.asarray(Image.fromarray(small).resize((112, 64), Image.BICUBIC))
    rgb = np.stack([np.ascontiguousarray(scene[:, 12 - 4 * i:12 - 4 * i + 96]) for i in range(3)])
    links = [None] + [_link(rgb[i - 1], rgb[i], 0.5) for i in (1, 2)]
    assert all(link is not None for link in links[1:])
    blend = TorchTemporalBlend(0.5)
    got = _stylize_on_device(stylizer, rgb[:2], [None, _flows(rgb[0], rgb[1])], blend=blend, strength=0.7)
    got += _stylize_on_device(stylizer, rgb[2:], [_flows(rgb[1], rgb[2])], blend=blend, strength=0.7)  # next batch
    numpy_blend = TemporalBlend(0.5)
    expected = [_to_uint8(numpy_blend.apply(stylize_array(stylizer, f.astype(np.float32).transpose(2, 0, 1) / 255,
                                                          None, False, 0.7), link)) for f, link in zip(rgb, links)]
    assert blend.cuts == numpy_blend.cuts == 0
    assert np.abs(np.stack(got).astype(int) - np.stack(expected)).max() <= 2


def test_video_threads_raise_in_the_caller_and_stop():
    from fastnst.video import _ahead, _Behind

    def failing():
        yield 1
        raise ValueError("bad frame")

    with pytest.raises(ValueError, match="bad frame"):
        list(_ahead(failing(), 2))
    produced = []

    def endless():
        for i in range(10 ** 6):
            produced.append(i)
            yield i

    for i in _ahead(endless(), 2):
        if i == 3:
            break  # the producer stops too, a few items ahead at most
    assert len(produced) <= 8
    written = []

    def write(item):
        if item == 2:
            raise OSError("disk full")
        written.append(item)

    behind = _Behind(write, 2)
    with pytest.raises(OSError, match="disk full"):
        for i in range(100):
            behind.put(i)
        behind.finish()
    assert written == [0, 1]


def test_a_compiled_model_gets_full_batches_with_the_same_outputs(tiny_model):
    """A compiled model (CUDA) pads a short last batch to its batch size, so that it compiles once;
    the padding does not change the frames' outputs (instance norm is per image)."""
    import torch

    stylizer = Stylizer(str(tiny_model), "cpu")
    x = torch.rand(3, 3, 40, 56)
    expected = stylizer.stylize_tensor(x)
    seen = []
    stylizer.compiled, stylizer.batch_limit = True, 8  # as Stylizer(..., "cuda", compile=True) sets them
    stylizer.forward = lambda batch: seen.append(batch.shape[0]) or stylizer.net(batch)
    got = stylizer.stylize_tensor(x)
    assert seen == [8] and got.shape == expected.shape
    assert torch.allclose(got, expected, atol=1e-5)


def test_the_video_queues_shrink_for_large_frames():
    """About 1 GB queued at most: 16 frames up to 1080p, fewer at 4K and 8K, never less than a batch."""
    from fastnst.video import queue_depth

    assert queue_depth((640, 360), 1) == queue_depth((1920, 1080), 8) == 16
    assert queue_depth((3840, 2160), 1) == 6 and queue_depth((3840, 2160), 8) == 8
    assert queue_depth((7680, 4320), 1) == 1
