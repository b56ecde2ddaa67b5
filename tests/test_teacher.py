"""The Gatys optimizer as a teacher: targets for a folder, and training towards them."""
import json
import shutil

import pytest

from fastnst.errors import UserError
from fastnst.training import Trainer
from conftest import fastnst, one_line_error, tiny_config


@pytest.fixture
def teacher(shared_data, style_image, tmp_path):
    photos = tmp_path / "photos"
    photos.mkdir()
    for f in sorted((shared_data / "coco").glob("*.jpg"))[:2]:
        shutil.copy(f, photos / f.name)
    out = tmp_path / "teacher"
    args = ["optimize", "--content", photos, "--style", style_image, "--out", out, "--steps", "3",
            "--size", "40", "--style-size", "64", "--device", "cpu"]
    r = fastnst(*args)
    assert r.returncode == 0, r.stderr
    return photos, out, args


def test_optimize_over_a_folder_writes_targets_and_a_manifest(teacher):
    photos, out, args = teacher
    manifest = json.loads((out / "teacher.json").read_text())
    assert manifest["format"] == "fastnst-teacher-1" and manifest["settings"]["steps"] == 3
    assert sorted(p["target"] for p in manifest["pairs"]) == sorted(f.stem + ".png" for f in photos.iterdir())
    assert all((out / p["target"]).is_file() and p["J"] > 0 for p in manifest["pairs"])
    # Rerunning with the same settings keeps what is done; other settings are refused, nothing lost.
    before = {p: (out / p).stat().st_mtime_ns for p in (p["target"] for p in manifest["pairs"])}
    assert fastnst(*args).returncode == 0
    assert before == {p: (out / p).stat().st_mtime_ns for p in before}
    other = [*args]
    other[other.index("--steps") + 1] = "5"
    assert "another style or settings" in one_line_error(fastnst(*other))
    assert json.loads((out / "teacher.json").read_text()) == manifest


def test_training_with_a_teacher_adds_its_term(teacher, style_image, coco_folder, tmp_path):
    _, out, _ = teacher
    trainer = Trainer(tiny_config(style_image, coco_folder, tmp_path / "run", steps=3, style_size=64,
                                  teacher=str(out), teacher_weight=10.0))
    trainer.run()
    last = trainer.styles[0].history[-1]
    assert last["teacher"] > 0
    assert last["total"] == pytest.approx(last["content"] + last["style"] + last["tv"] + last["teacher"], rel=1e-5)


def test_teacher_mistakes_are_refused(teacher, shared_data, coco_folder, tmp_path):
    _, out, _ = teacher
    other_style = shared_data / "styles" / "wave.jpg"
    with pytest.raises(UserError, match="another style"):
        Trainer(tiny_config(other_style, coco_folder, tmp_path / "a", teacher=str(out), teacher_weight=1.0))
    with pytest.raises(UserError, match="needs --teacher"):
        Trainer(tiny_config(other_style, coco_folder, tmp_path / "b", teacher_weight=1.0))
    with pytest.raises(UserError, match="not a teacher folder"):
        Trainer(tiny_config(other_style, coco_folder, tmp_path / "c", teacher=str(tmp_path), teacher_weight=1.0))
