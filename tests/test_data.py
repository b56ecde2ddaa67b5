import numpy as np
import pytest
import torch
from PIL import Image

from fastnst.data import (BatchStream, DeviceBatchStream, FolderSource, HFSource, PackedImages, Position,
                          list_images, read_pack_metadata)
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


# -- packed data ---------------------------------------------------------------------------------

def test_pack_file_holds_every_readable_image(packed, coco_folder):
    path, meta = packed
    assert meta["count"] == 8 and list(meta["bad"]) == [str(coco_folder / "broken.jpg")]
    assert read_pack_metadata(path)["count"] == 8
    from_file = PackedImages.from_file(path, torch.device("cpu"))
    decoded = PackedImages.decode(FolderSource(coco_folder), 40, torch.device("cpu"))
    assert from_file.images.shape == (8, 40, 40, 3) and from_file.images.dtype == torch.uint8
    assert torch.equal(from_file.images, decoded.images)


def test_not_a_pack_file_is_refused(tmp_path, style_image):
    with pytest.raises(UserError, match="not a fastnst pack file"):
        PackedImages.from_file(style_image, torch.device("cpu"))


def _stream(images, batch=2, seed=0, position=None, rank=0, world=1, size=24):
    return DeviceBatchStream(PackedImages(images, "test"), batch, size, seed, position, rank, world)


def test_device_stream_is_deterministic_resumable_and_covers_each_epoch():
    images = torch.randint(0, 256, (7, 40, 40, 3), dtype=torch.uint8)
    a = [b for _, b in zip(range(6), _stream(images))]
    b = [b for _, b in zip(range(6), _stream(images))]
    assert all(torch.equal(p.images, q.images) for p, q in zip(a, b))
    assert [p.position for p in a[:4]] == [Position(0, 2), Position(0, 4), Position(1, 0), Position(1, 2)]
    resumed = next(iter(_stream(images, position=a[2].position)))
    assert torch.equal(resumed.images, a[3].images)
    x = a[0].images
    assert x.shape == (2, 3, 24, 24) and x.dtype == torch.float32 and 0 <= x.min() and x.max() <= 1
    assert x.is_contiguous(memory_format=torch.channels_last)
    assert not torch.equal(a[0].images, _stream(images, seed=1).__iter__().__next__().images)


def test_device_stream_crops_are_the_images():
    """A crop of a constant-colour image is that colour; crops of a gradient keep its direction."""
    images = torch.zeros(4, 40, 40, 3, dtype=torch.uint8)
    images[..., 0] = torch.arange(4, dtype=torch.uint8).view(4, 1, 1) * 60  # red = 60 * index
    images[..., 1] = torch.linspace(0, 255, 40).round().to(torch.uint8).view(1, 40, 1)  # green: top to bottom
    for batch in [b for _, b in zip(range(4), _stream(images))]:
        red = batch.images[:, 0]
        assert torch.allclose(red, red[:, :1, :1].expand_as(red))
        assert set((red[:, 0, 0] * 255 / 60).round().tolist()) <= {0.0, 1.0, 2.0, 3.0}
        green = batch.images[:, 1]
        assert (green[:, -1, :] > green[:, 0, :]).all()  # flips are left-right only


def test_device_stream_shards_split_the_global_batch():
    images = torch.randint(0, 256, (12, 40, 40, 3), dtype=torch.uint8)
    whole = next(iter(_stream(images, batch=4)))
    r0 = next(iter(_stream(images, batch=2, rank=0, world=2)))
    r1 = next(iter(_stream(images, batch=2, rank=1, world=2)))
    assert torch.equal(whole.images[0::2], r0.images) and torch.equal(whole.images[1::2], r1.images)
    assert r0.position == r1.position == whole.position == Position(0, 4)


def test_cli_pack_refuses_to_overwrite(coco_folder, tmp_path):
    from conftest import fastnst, one_line_error

    out = tmp_path / "x.pack"
    out.write_bytes(b"keep me")
    r = fastnst("pack", str(coco_folder), "--out", str(out))
    assert "exists" in one_line_error(r)
    assert out.read_bytes() == b"keep me"
    r = fastnst("pack", str(tmp_path / "missing"), "--out", str(tmp_path / "y.pack"))
    assert "no such data folder" in one_line_error(r)



def test_an_unreachable_hub_is_one_line_in_seconds(monkeypatch):
    import time

    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # nothing listens there
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    t = time.perf_counter()
    with pytest.raises(UserError, match=r"hf:someone/photos: the Hugging Face hub \(127.0.0.1\) cannot be reached"):
        HFSource("someone/photos")
    assert time.perf_counter() - t < 10
