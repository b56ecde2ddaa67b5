"""Faults from outside: outputs that cannot be written. Every command answers with one line, the
SPEC's exit status, and leaves no temporary file behind."""
import os
import shutil
import subprocess

import numpy as np
import pytest
from PIL import Image

from conftest import fastnst, make_clip, one_line_error


@pytest.fixture
def make_read_only(request):
    """Makes a folder nothing can be written into, even by root (immutable where chattr works)."""
    def make(folder):
        folder.mkdir(parents=True, exist_ok=True)
        if os.geteuid() == 0:
            if shutil.which("chattr") is None or subprocess.run(["chattr", "+i", folder]).returncode != 0:
                pytest.skip("running as root without chattr +i: no folder is read-only")
            request.addfinalizer(lambda: subprocess.run(["chattr", "-i", folder]))
        else:
            folder.chmod(0o555)
            request.addfinalizer(lambda: folder.chmod(0o755))
        return folder
    return make


@pytest.fixture
def read_only(make_read_only, tmp_path):
    return make_read_only(tmp_path / "read_only")


def _photo(path, size=(40, 30)):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)).save(path)
    return path


def test_every_command_with_an_unwritable_output_gives_one_line(read_only, tiny_model, tiny_onnx, shared_data,
                                                                 coco_folder, tmp_path):
    photo = _photo(tmp_path / "p.jpg")
    style = shared_data / "styles" / "wave.jpg"
    gif = tmp_path / "a.gif"
    frames = [Image.fromarray(np.full((20, 30, 3), 40 * i, np.uint8)) for i in range(3)]
    frames[0].save(gif, save_all=True, append_images=frames[1:], duration=100)
    commands = {
        "train": ["train", "--style", style, "--data", coco_folder, "--out", read_only / "run", "--steps", "1",
                  "--batch-size", "2", "--image-size", "32", "--style-size", "64", "--width", "8", "--blocks", "1",
                  "--device", "cpu"],
        "export": ["export", tiny_model, "--out", read_only / "m.onnx"],
        "optimize": ["optimize", "--content", photo, "--style", style, "--out", read_only / "o.png", "--steps", "1",
                     "--size", "32", "--device", "cpu"],
        "compare": ["compare", photo, "--model", tiny_model, "--out", read_only / "cmp", "--sizes", "32",
                    "--iterations", "0,1", "--runs", "1", "--init", "content", "--device", "cpu"],
        "pack": ["pack", coco_folder, "--out", read_only / "p.pack"],
        "gallery": ["gallery", "--out", read_only / "g.jpg", "--models", tiny_onnx, "--photos", coco_folder,
                    "--tile", "32", "--work-size", "32", "--device", "cpu"],
        "stylize an image": ["stylize", photo, "--model", tiny_onnx, "--out", read_only / "s.jpg"],
        "stylize a GIF": ["stylize", gif, "--model", tiny_onnx, "--out", read_only / "s.gif"],
        "stylize a video": ["stylize", make_clip(tmp_path / "c.mp4", frames=2), "--model", tiny_onnx,
                            "--out", read_only / "s.mp4"],
    }
    for name, args in commands.items():
        line = one_line_error(fastnst(*args))
        assert "read_only" in line, (name, line)
        assert not list(read_only.iterdir()), name


def test_a_gif_that_cannot_be_written_does_not_stop_the_batch(make_read_only, tiny_onnx, tmp_path):
    src = tmp_path / "in"
    (src / "gifs").mkdir(parents=True)
    frames = [Image.fromarray(np.full((20, 30, 3), 40 * i, np.uint8)) for i in range(3)]
    frames[0].save(src / "gifs" / "a.gif", save_all=True, append_images=frames[1:], duration=100)
    _photo(src / "z.png")
    make_read_only(tmp_path / "out" / "gifs")  # where the GIF's output goes
    r = fastnst("stylize", src, "--model", tiny_onnx, "--out", tmp_path / "out")
    assert r.returncode == 1, r.stderr
    [error] = [l for l in r.stderr.splitlines() if l.startswith("fastnst: error:")]
    assert "gifs/a.gif: cannot write here" in error
    assert (tmp_path / "out" / "z.png").is_file()  # the input after it is still written


def test_train_out_an_existing_file_gives_one_line(style_image, coco_folder, tmp_path):
    (tmp_path / "afile").write_text("keep me")
    line = one_line_error(fastnst("train", "--style", style_image, "--data", coco_folder, "--out",
                                  tmp_path / "afile", "--steps", "1", "--device", "cpu"))
    assert "afile: --out must be a folder" in line and (tmp_path / "afile").read_text() == "keep me"


def test_sigterm_during_a_video_leaves_no_temporary_file(tmp_path):
    """A long video killed with SIGTERM (as `timeout` does): exit 130, no hidden partial output."""
    import signal
    import sys
    import time

    src = make_clip(tmp_path / "long.mp4", frames=240, size=(320, 240), audio=False)
    out = tmp_path / "out"
    out.mkdir()
    p = subprocess.Popen([sys.executable, "-m", "fastnst", "stylize", src, "--model", "starry_night",
                          "--out", out / "o.mp4"], stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 60
    while not list(out.iterdir()) and time.time() < deadline:  # until the partial output exists
        time.sleep(0.1)
    time.sleep(0.5)
    p.send_signal(signal.SIGTERM)
    _, err = p.communicate(timeout=60)
    assert p.returncode == 130, err
    assert list(out.iterdir()) == [] and err.strip().splitlines()[-1] == "fastnst: error: interrupted"


def test_model_files_with_bad_metadata_get_one_line(tiny_model, tiny_onnx, tmp_path):
    import json

    import onnx
    from onnx import TensorProto, helper
    from safetensors import safe_open
    from safetensors.torch import save_file

    photo = _photo(tmp_path / "p.png")
    with safe_open(str(tiny_model), "pt") as f:
        tensors, meta = {k: f.get_tensor(k) for k in f.keys()}, json.loads(f.metadata()["fastnst"])
    broken = {
        "not_json.safetensors": "{broken",
        "no_network.safetensors": json.dumps({k: v for k, v in meta.items() if k != "network"}),
        "list.safetensors": json.dumps([1, 2]),
    }
    for name, raw in broken.items():
        save_file(tensors, str(tmp_path / name), metadata={"fastnst": raw})
    model = onnx.load(str(tiny_onnx))
    for p in model.metadata_props:
        if p.key == "fastnst":
            p.value = "not json"
    onnx.save(model, str(tmp_path / "not_json.onnx"))
    gray = helper.make_model(helper.make_graph(
        [helper.make_node("Identity", ["image"], ["stylized"])], "gray",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["n", 1, "h", "w"])],
        [helper.make_tensor_value_info("stylized", TensorProto.FLOAT, ["n", 1, "h", "w"])]),
        opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    gray.metadata_props.add(key="fastnst", value=json.dumps(meta))
    onnx.save(gray, str(tmp_path / "one_channel.onnx"))
    expected = {"not_json.safetensors": "not valid JSON", "no_network.safetensors": "does not describe the network",
                "list.safetensors": "not a JSON object", "not_json.onnx": "not valid JSON",
                "one_channel.onnx": "takes one float32 N x 3 x H x W image"}
    for name, words in expected.items():
        line = one_line_error(fastnst("stylize", photo, "--model", tmp_path / name, "--out", tmp_path / "o.png",
                                      "--device", "cpu"))
        assert name in line and words in line, line


def test_a_failure_inside_the_video_pipeline_is_one_line_and_leaves_no_file(tiny_onnx, tmp_path):
    """An error raised while the frames are on the pipeline's threads comes back as a UserError of one
    line, even when the error it quotes spans several, and no output is left."""
    from fastnst.errors import UserError
    from fastnst.inference import Stylizer
    from fastnst.video import stylize_video

    class Failing(Stylizer):
        def stylize_batch(self, batch):
            raise ValueError("the first line\nthe second line")

    src = make_clip(tmp_path / "clip.mp4")
    with pytest.raises(UserError) as raised:
        stylize_video(src, tmp_path / "out.mp4", Failing(str(tiny_onnx)))
    assert "\n" not in str(raised.value) and "the first line the second line" in str(raised.value)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["clip.mp4"]
