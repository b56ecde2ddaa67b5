"""The command line end to end, as a user runs it: a subprocess, its exit status and its output."""
import shutil
import subprocess
import sys

from conftest import ROOT, fastnst, one_line_error
from fastnst.modelfile import read_metadata


TINY = ["--steps", "3", "--batch-size", "2", "--image-size", "32", "--style-size", "64", "--width", "8",
        "--blocks", "1", "--device", "cpu", "--log-every", "1"]


def test_train_end_to_end(style_image, coco_folder, tmp_path):
    out = tmp_path / "run"
    r = fastnst("train", "--style", style_image, "--data", coco_folder, "--out", out, *TINY)
    assert r.returncode == 0, r.stderr
    assert (out / "model.safetensors").exists() and (out / "checkpoint.pt").exists()
    assert (out / "samples" / "step_000003.jpg").exists() and (out / "config.json").exists()
    assert "wrote" in r.stderr and "Traceback" not in r.stderr

    # train.py at the root is the same command
    r = subprocess.run([sys.executable, str(ROOT / "train.py"), "--resume", out / "checkpoint.pt", "--steps", "4"],
                       capture_output=True, text=True, cwd=tmp_path, timeout=600)
    assert r.returncode == 0, r.stderr
    assert "from step 3" in r.stderr


def test_train_several_styles_from_files_and_a_folder(shared_data, coco_folder, tmp_path):
    folder = tmp_path / "styles"
    folder.mkdir()
    for name in ("wave.jpg", "the_scream.jpg"):
        shutil.copy(shared_data / "styles" / name, folder / name)
    out = tmp_path / "run"
    r = fastnst("train", "--style", shared_data / "styles" / "starry_night.jpg", "--style", folder,
                "--style-weight", "1", "--style-weight", "3", "--style-weight", "3", "--data", coco_folder,
                "--out", out, *TINY)
    assert r.returncode == 0, r.stderr
    assert "training starry_night, the_scream, wave on" in r.stderr
    for name, weight in (("starry_night", 1.0), ("the_scream", 3.0), ("wave", 3.0)):
        assert f"wrote {out / name / 'model.safetensors'}" in r.stderr
        assert (out / name / "samples" / "step_000003.jpg").exists() and (out / name / "log.jsonl").exists()
        assert read_metadata(out / name / "model.safetensors")["loss"]["style_weight"] == weight
    line = one_line_error(fastnst("train", "--style", folder, "--style-weight", "1", "--style-weight", "2",
                                   "--style-weight", "3", "--data", coco_folder, "--out", tmp_path / "o", *TINY))
    assert "--style-weight: give one value, or one per style (2), not 3" in line
    empty = tmp_path / "no_styles"
    empty.mkdir()
    assert "no_styles: no style images found" in one_line_error(
        fastnst("train", "--style", empty, "--data", coco_folder, "--out", tmp_path / "o", *TINY))


def test_bad_input_gets_one_line(style_image, coco_folder, tmp_path):
    text = tmp_path / "style.jpg"
    text.write_text("not an image")
    empty = tmp_path / "empty.jpg"
    empty.write_bytes(b"")
    cases = [
        (["--style", tmp_path / "missing.jpg", "--data", coco_folder], "missing.jpg: no such file"),
        (["--style", text, "--data", coco_folder], "style.jpg: not an image file"),
        (["--style", empty, "--data", coco_folder], "empty.jpg: empty file"),
        (["--style", style_image, "--data", tmp_path / "nothing"], "nothing: no such data folder"),
        (["--style", style_image, "--data", coco_folder, "--steps", "0"], "--steps"),
        (["--style", style_image, "--data", coco_folder, "--batch-size", "-1"], "--batch-size"),
        (["--style", style_image, "--data", coco_folder, "--loss-net", "vgg11"], "--loss-net"),
        (["--style", style_image, "--data", coco_folder, "--style-layers", "relu9_1"], "no layer 'relu9_1'"),
        (["--resume", tmp_path / "nope.pt"], "nope.pt: no such checkpoint"),
        (["--resume", text], "not a readable fastnst checkpoint"),
        (["--data", coco_folder], "--style is required"),
    ]
    for args, expected in cases:
        assert not (tmp_path / "o").exists()  # no case gets as far as training
        extra = [] if "--steps" in args else TINY[:2]
        line = one_line_error(fastnst("train", *args, "--out", tmp_path / "o", *extra))
        assert expected in line, (args, line)


def test_help_documents_defaults():
    r = fastnst("train", "--help")
    assert r.returncode == 0
    for option in ("--style", "--data", "--steps", "--epochs", "--batch-size", "--image-size", "--style-size",
                   "--content-weight", "--style-weight", "--tv-weight", "--lr", "--loss-net", "--vgg-weights",
                   "--device", "--checkpoint-every", "--resume", "--seed"):
        assert option in r.stdout, option
    text = " ".join(r.stdout.split())  # the help wraps to the terminal's width
    for default in ("--image-size <int range> Side of the square training crops. [default: 256]",
                    "[default: 4]", "[default: 0.001]", "[default: hf:detection-datasets/coco:train]"):
        assert default in text, default
    assert one_line_error(fastnst("trian")).endswith("Did you mean 'train'?")
