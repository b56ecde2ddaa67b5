import numpy as np
import pytest
import torch
from PIL import Image

from fastnst.data import BatchStream, FolderSource, HFSource, Position, list_images
from fastnst.errors import UserError


def _batches(stream, n):
    it = iter(stream)
    return [next(it) for _ in range(n)]


def test_folder_is_recursive_and_batches_have_the_crop_size(coco_folder):
    src = FolderSource(coco_folder)
    assert len(src) == 8 and any(p.parent.name == "sub" for p in src.files)
    b = _batches(BatchStream(src, batch_size=3, image_size=40, seed=0, workers=2), 1)[0]
    assert b.images.shape == (3, 3, 40, 40) and b.images.dtype == torch.uint8


def test_stream_is_deterministic_and_resumable(coco_folder):
    src = FolderSource(coco_folder)
    full = _batches(BatchStream(src, 3, 32, seed=5, workers=2), 5)  # crosses an epoch boundary
    again = _batches(BatchStream(src, 3, 32, seed=5, workers=1), 5)
    assert all(torch.equal(a.images, b.images) for a, b in zip(full, again))
    resumed = _batches(BatchStream(src, 3, 32, seed=5, position=full[1].position, workers=2), 3)
    assert all(torch.equal(a.images, b.images) for a, b in zip(full[2:], resumed))
    assert full[-1].position.epoch == 1
    other_seed = _batches(BatchStream(src, 3, 32, seed=6, workers=2), 1)[0]
    assert not torch.equal(other_seed.images, full[0].images)


def test_bad_files_are_skipped_and_reported(coco_folder):
    (coco_folder / "text.jpg").write_text("this is not a jpeg")
    (coco_folder / "empty.png").write_bytes(b"")
    good = sorted(coco_folder.glob("*.jpg"))[0]
    (coco_folder / "truncated.jpg").write_bytes(good.read_bytes()[:300])
    src = FolderSource(coco_folder)
    assert len(src) == 11
    batches = _batches(BatchStream(src, 4, 32, seed=0, workers=2), 2)  # 8 good images = one epoch
    bad = {name for b in batches for name, _ in b.bad}
    assert {p.split("/")[-1] for p in bad} == {"text.jpg", "empty.png", "truncated.jpg"}
    assert all(b.images.shape[0] == 4 for b in batches)


def test_folder_errors(tmp_path):
    with pytest.raises(UserError, match="no such data folder"):
        FolderSource(tmp_path / "missing")
    with pytest.raises(UserError, match="no images found"):
        FolderSource(tmp_path)
    (tmp_path / "only.jpg").write_text("text")
    with pytest.raises(UserError, match="unreadable"):
        next(iter(BatchStream(FolderSource(tmp_path), 2, 16, seed=0, workers=1)))


def test_image_modes_in_training_data(tmp_path):
    rgb = np.random.default_rng(0).integers(0, 255, (40, 50, 3), dtype=np.uint8)
    Image.fromarray(rgb[..., 0], "L").save(tmp_path / "g.png")
    Image.fromarray(rgb).convert("RGBA").save(tmp_path / "a.png")
    Image.fromarray(rgb).convert("P").save(tmp_path / "p.bmp")
    Image.fromarray(rgb).convert("CMYK").save(tmp_path / "c.tiff")
    Image.fromarray(rgb[..., 0].astype(np.uint16) * 257).save(tmp_path / "h.png")
    Image.fromarray(rgb).save(tmp_path / "w.webp")
    src = FolderSource(tmp_path)
    assert len(src) == 6 and len(list_images(tmp_path)) == 6
    b = next(iter(BatchStream(src, 6, 24, seed=0, workers=2)))
    assert b.images.shape == (6, 3, 24, 24) and not b.bad


def test_hugging_face_dataset_from_local_files(tmp_path, coco_folder, monkeypatch):
    datasets = pytest.importorskip("datasets")
    # datasets sleeps 5 s at the end of every shuffled stream (an Arrow workaround); this tiny
    # set ends an epoch every few examples.
    monkeypatch.setattr(datasets.config, "SLEEP_TIME_ON_THREADS_SHUTDOWN", 0, raising=False)
    files = sorted(coco_folder.rglob("*.jpg"))[:5]
    records = {"image": [{"bytes": f.read_bytes(), "path": f.name} for f in files] +
                        [{"bytes": b"garbage", "path": "broken.jpg"}],
               "caption": [f"c{i}" for i in range(6)]}
    ds = datasets.Dataset.from_dict(records).cast_column("image", datasets.Image())
    (tmp_path / "hf" / "data").mkdir(parents=True)
    ds.to_parquet(str(tmp_path / "hf" / "data" / "train-00000-of-00001.parquet"))
    src = HFSource(str(tmp_path / "hf"))
    assert src.column == "image"
    batches = _batches(BatchStream(src, 5, 32, seed=0, workers=2), 2)
    assert batches[0].images.shape == (5, 3, 32, 32)
    assert any("broken.jpg" in name for b in batches for name, _ in b.bad)
    again = _batches(BatchStream(src, 5, 32, seed=0, position=Position(0, 0), workers=1), 2)
    assert all(torch.equal(a.images, b.images) for a, b in zip(batches, again))


def test_hugging_face_errors(tmp_path):
    pytest.importorskip("datasets")
    with pytest.raises(UserError, match="needs a data set name"):
        HFSource("")
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="could not open"):
        HFSource(str(tmp_path / "empty"))
