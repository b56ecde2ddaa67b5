"""Training images: an image folder, a streamed Hugging Face data set or a pack file, as batches of crops.

What the trainer sees of each is one interface, `TrainingData`: `stream(...)` (endless batches from a
position), `steps_per_epoch(global_batch)`, `sample_images(n, size)` and `skipped` (unreadable
examples found before training). Folders and data sets are decoded by CPU threads (`BatchStream`);
pack files are kept and cropped on the GPU (`DeviceBatchStream`).

The stream is deterministic and resumable: example order depends only on (seed, epoch), the
crop and flip of each example only on (seed, epoch, offset), so a run resumed from a position
(epoch, offset) sees exactly the batches an uninterrupted run would. Decoding and augmentation
run in a thread pool (PIL releases the GIL while it decodes and resizes) a few batches ahead.

Unreadable examples (corrupt, truncated, not images) are skipped and reported, never fatal.
"""

from __future__ import annotations

import io
import json
import math
import random
import shutil
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageOps

from fastnst.errors import UserError
from fastnst.images import IMAGE_EXTENSIONS, to_rgb_or_rgba

CROP_SCALE = (0.5, 1.0)  # fraction of the image's area a crop covers
CROP_RATIO = (3 / 4, 4 / 3)


def seed_for(seed: int, *parts: int) -> int:
    """One seed from a run's seed and where it is used (an epoch, then a step or an offset)."""
    for part, prime in zip(parts, (1_000_003, 1_000_033)):
        seed = seed * prime + part
    return seed


class TrainingData:
    """What the trainer reads; folders, streamed data sets and packed images implement it."""

    description: str
    skipped: dict[str, str]  # unreadable examples known before training: name -> reason

    def stream(self, batch_size: int, image_size: int, seed: int, position: Position, workers: int = 4,
               rank: int = 0, world: int = 1) -> Iterator[Batch]:
        raise NotImplementedError

    def steps_per_epoch(self, global_batch: int) -> int | None:
        """None when the length is unknown (a streamed data set)."""
        raise NotImplementedError

    def sample_images(self, n: int, size: int) -> torch.Tensor:
        """The first `n` readable images, centre-cropped to size x size: fixed sample inputs."""
        raise NotImplementedError


class DecodedSource(TrainingData):
    """Examples decoded on the CPU by worker threads: a folder or a streamed data set."""

    @property
    def skipped(self) -> dict[str, str]:
        return {}  # unreadable examples are found while training, batch by batch

    def stream(self, batch_size, image_size, seed, position, workers=4, rank=0, world=1):
        return iter(BatchStream(self, batch_size, image_size, seed, position, workers, rank=rank, world=world))

    def steps_per_epoch(self, global_batch):
        try:
            return math.ceil(len(self) / global_batch)
        except TypeError:  # streamed: unknown until the end of an epoch
            return None

    def sample_images(self, n, size):
        out = []
        for _, item in self.examples(0, 0, 0):
            try:
                out.append(center_crop(decode(item), size))
            except Exception:
                continue
            if len(out) == n:
                break
        return torch.from_numpy(np.stack(out)).permute(0, 3, 1, 2).float().div(255.0)


def list_images(root: Path) -> list[Path]:
    """Image files under `root`, recursively, in a stable order."""
    return sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file())


class FolderSource(DecodedSource):
    """The images of a folder, reshuffled every epoch."""

    def __init__(self, root: str | Path):
        self.root = Path(root)
        if not self.root.exists():
            raise UserError(f"{self.root}: no such data folder")
        if not self.root.is_dir():
            raise UserError(f"{self.root}: --data must be a folder of images or hf:NAME[:SPLIT]")
        self.files = list_images(self.root)
        if not self.files:
            raise UserError(f"{self.root}: no images found (looked for .jpg, .png, .webp, .tif and the other "
                            f"formats Pillow reads)")
        self.description = f"folder {self.root} ({len(self.files)} files)"

    def __len__(self) -> int:
        return len(self.files)

    def examples(self, epoch: int, start: int, seed: int) -> Iterator[tuple[str, object]]:
        g = torch.Generator().manual_seed(seed_for(seed, epoch))
        order = torch.randperm(len(self.files), generator=g).tolist()
        for i in order[start:]:
            yield str(self.files[i]), self.files[i]


class HFSource(DecodedSource):
    """A Hugging Face data set, streamed; `spec` is NAME or NAME:SPLIT (default split: train).

    NAME may be a hub id or a local folder that `datasets.load_dataset` understands. The image
    column is found from the features (the first `Image` column) and decoded here, so a broken
    example is skipped like a broken file.
    """

    SHUFFLE_BUFFER = 1000

    def __init__(self, spec: str):
        name, _, split = spec.partition(":")
        self.name, self.split = name, split or "train"
        if not self.name:
            raise UserError("--data hf: needs a data set name, as in hf:NAME or hf:NAME:SPLIT")
        try:
            import datasets
        except ImportError:
            raise UserError("--data hf:... needs the 'datasets' package: pip install datasets") from None
        if not Path(self.name).exists():
            _check_hub_reachable(spec)
        datasets.logging.set_verbosity_error()  # a failure is our one line, not pages of retries
        try:
            ds = datasets.load_dataset(self.name, split=self.split, streaming=True)
        except Exception as e:
            raise UserError(f"hf:{spec}: could not open the data set ({e.__class__.__name__}: "
                            f"{str(e).splitlines()[0] if str(e) else ''})") from None
        features = ds.features or {}
        cols = [c for c, f in features.items() if isinstance(f, datasets.Image)]
        if not cols:
            cols = [c for c in ("image", "img", "images") if c in features]
        if not cols:
            raise UserError(f"hf:{spec}: no image column among {list(features) or 'its columns'}")
        self.column = cols[0]
        self.dataset = ds.cast_column(self.column, datasets.Image(decode=False))
        self.description = f"hf:{self.name}:{self.split} (column {self.column!r}, streamed)"

    def __len__(self) -> int:
        raise TypeError("a streamed data set has no known length")

    def examples(self, epoch: int, start: int, seed: int) -> Iterator[tuple[str, object]]:
        ds = self.dataset.shuffle(seed=seed_for(seed, epoch), buffer_size=self.SHUFFLE_BUFFER)
        if start:
            ds = ds.skip(start)
        for k, ex in enumerate(ds, start=start):
            img = ex[self.column]
            name = f"hf:{self.name}:{self.split}[{img.get('path') or k}]" if isinstance(img, dict) else f"#{k}"
            yield name, img


def _check_hub_reachable(spec: str, timeout: float = 5.0) -> None:
    """Fail in seconds, with one line, when the Hugging Face hub cannot be reached (offline), rather
    than after half a minute of the client's retries."""
    import os
    import socket
    from urllib.parse import urlparse

    if os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", ""):
        return  # the user asked for the local cache
    url = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co"))
    host, port = url.hostname or "huggingface.co", url.port or (443 if url.scheme == "https" else 80)
    try:
        socket.create_connection((host, port), timeout=timeout).close()
    except OSError as e:
        raise UserError(f"hf:{spec}: the Hugging Face hub ({host}) cannot be reached ({e.strerror or e}); "
                        f"give a local folder, a pack file or a local data set folder") from None


def open_source(data: str) -> FolderSource | HFSource:
    if data.startswith("hf:"):
        return HFSource(data[3:])
    return FolderSource(data)


def decode(item: object) -> Image.Image:
    """A path, bytes, a {'bytes', 'path'} dict or a PIL image -> upright RGB PIL image."""
    if isinstance(item, Image.Image):
        im = item
    else:
        if isinstance(item, dict):
            item = item.get("bytes") or item.get("path")
        if isinstance(item, (bytes, bytearray)):
            item = io.BytesIO(item)
        im = Image.open(item)
        im.load()
    return to_rgb_or_rgba(ImageOps.exif_transpose(im)).convert("RGB")


def random_resized_crop(im: Image.Image, size: int, rng: random.Random) -> np.ndarray:
    """A random crop covering CROP_SCALE of the area at an aspect in CROP_RATIO, resized to
    size x size, flipped left-right half the time. Returns HxWx3 uint8."""
    w, h = im.size
    for _ in range(10):
        area = w * h * rng.uniform(*CROP_SCALE)
        ratio = math.exp(rng.uniform(math.log(CROP_RATIO[0]), math.log(CROP_RATIO[1])))
        cw, ch = round(math.sqrt(area * ratio)), round(math.sqrt(area / ratio))
        if 0 < cw <= w and 0 < ch <= h:
            break
    else:  # very elongated image: the largest centred square
        cw = ch = min(w, h)
    x0, y0 = rng.randint(0, w - cw), rng.randint(0, h - ch)
    crop = im.resize((size, size), Image.BILINEAR, box=(x0, y0, x0 + cw, y0 + ch), reducing_gap=2.0)
    if rng.random() < 0.5:
        crop = crop.transpose(Image.FLIP_LEFT_RIGHT)
    return np.asarray(crop, dtype=np.uint8)


def center_crop(im: Image.Image, size: int, resample=Image.BILINEAR) -> np.ndarray:
    """The centred square of `im`, resized to size x size, as HxWx3 uint8."""
    w, h = im.size
    s = min(w, h)
    x0, y0 = (w - s) // 2, (h - s) // 2
    return np.asarray(im.resize((size, size), resample, box=(x0, y0, x0 + s, y0 + s)), dtype=np.uint8)


@dataclass
class Position:
    """Where the stream is: `offset` examples of epoch `epoch` consumed (good and bad alike)."""
    epoch: int = 0
    offset: int = 0


@dataclass
class Batch:
    images: torch.Tensor  # B x 3 x S x S uint8
    position: Position  # the position after this batch
    bad: list[tuple[str, str]] = field(default_factory=list)  # (name, reason) skipped on the way


def unreadable_reason(e: Exception) -> str:
    """One short line saying why an example could not be read."""
    return f"{e.__class__.__name__}: {str(e).splitlines()[0] if str(e) else ''}"[:200]


def _load_example(name: str, item: object, size: int, sample_seed: str) -> np.ndarray | tuple[str, str]:
    try:
        im = decode(item)
    except Exception as e:  # corrupt, truncated, not an image: reported by the caller
        return name, unreadable_reason(e)
    return random_resized_crop(im, size, random.Random(sample_seed))


class BatchStream:
    """Endless batches of random crops from a source, starting at `position`.

    With `world` > 1 (distributed training) the stream is sharded: rank r decodes only the examples
    at offsets r, r + world, r + 2*world, ... of the one global order, so together the ranks see
    what a single process with a `world` times larger batch would.
    """

    def __init__(self, source, batch_size: int, image_size: int, seed: int, position: Position | None = None,
                 workers: int = 4, prefetch_batches: int = 4, rank: int = 0, world: int = 1):
        self.source, self.batch_size, self.image_size, self.seed = source, batch_size, image_size, seed
        self.position = position or Position()
        self.workers = max(1, workers)
        self.window = max(1, prefetch_batches) * batch_size
        self.rank, self.world = rank, world

    def _examples(self):
        """(epoch, offset_after, name, item) of this rank's shard, forever, epoch after epoch."""
        epoch, start = self.position.epoch, self.position.offset
        while True:
            n = 0
            for offset, (name, item) in enumerate(self.source.examples(epoch, start, self.seed), start=start + 1):
                n += 1
                if (offset - 1) % self.world != self.rank:
                    continue
                yield epoch, offset, name, item
            if n == 0 and start == 0:
                raise UserError(f"{self.source.description}: no examples")
            epoch, start = epoch + 1, 0

    def __iter__(self) -> Iterator[Batch]:
        pending: deque = deque()
        examples = self._examples()
        good, bad, seen_good = [], [], False
        with ThreadPoolExecutor(self.workers, thread_name_prefix="fastnst-data") as pool:
            while True:
                while len(pending) < self.window:
                    epoch, offset, name, item = next(examples)
                    seed = f"{self.seed}:{epoch}:{offset}"
                    pending.append((epoch, offset, pool.submit(_load_example, name, item, self.image_size, seed)))
                epoch, offset, fut = pending.popleft()
                result = fut.result()
                if isinstance(result, tuple):
                    bad.append(result)
                    if len(bad) > 1000 and not seen_good:
                        raise UserError(f"{self.source.description}: the first {len(bad)} examples are all "
                                        f"unreadable (last: {result[0]}: {result[1]})")
                    continue
                seen_good = True
                good.append(result)
                if len(good) == self.batch_size:
                    images = torch.from_numpy(np.stack(good)).permute(0, 3, 1, 2).contiguous()
                    yield Batch(images, Position(epoch, offset), bad)
                    good, bad = [], []


# -- packed data: decoded once, kept on the GPU ------------------------------------------------

PACK_FORMAT = "fastnst-pack-1"


def pack_size_for(image_size: int) -> int:
    """The side packed images are stored at for training crops of `image_size`: random crops cover
    CROP_SCALE of the area, so a quarter more keeps them at about full resolution."""
    return round(image_size * 1.25)


def _load_square(name: str, item: object, size: int) -> np.ndarray | tuple[str, str]:
    try:
        return center_crop(decode(item), size)
    except Exception as e:
        return name, unreadable_reason(e)


def decode_all(source, size: int, workers: int = 8) -> Iterator[tuple[str, np.ndarray | str]]:
    """(name, size x size x 3 uint8 centre square) for every example of `source` in epoch 0's order,
    or (name, reason) for an unreadable one, decoded in a thread pool."""
    def done(name, fut):
        result = fut.result()
        return name, (result[1] if isinstance(result, tuple) else result)

    with ThreadPoolExecutor(max(1, workers), thread_name_prefix="fastnst-pack") as pool:
        pending: deque = deque()  # a bounded window of decodes in flight, yielded in order
        for name, item in source.examples(0, 0, 0):
            pending.append((name, pool.submit(_load_square, name, item, size)))
            if len(pending) >= 4 * workers:
                yield done(*pending.popleft())
        while pending:
            yield done(*pending.popleft())


def write_pack(source, out: str | Path, size: int, workers: int = 8, progress=None) -> dict:
    """Decode every image of `source` once into a safetensors file holding `images`, an
    N x size x size x 3 uint8 tensor of centre squares. Streams to disk (memory stays flat);
    the file appears only when complete. Returns its metadata."""
    from fastnst.files import atomic_path, check_writable

    out = Path(out)
    check_writable(out)
    names, bad = [], {}
    with atomic_path(out) as tmp:
        body = tmp.with_name(tmp.name + ".body")
        try:
            with open(body, "wb") as f:
                for name, result in decode_all(source, size, workers):
                    if isinstance(result, str):
                        bad[name] = result
                    else:
                        f.write(result.tobytes())
                        names.append(name)
                    if progress:
                        progress(len(names), len(bad))
            if not names:
                raise UserError(f"{source.description}: no readable images to pack")
            meta = {"format": PACK_FORMAT, "size": size, "count": len(names), "source": source.description,
                    "names": names, "bad": bad}
            nbytes = len(names) * size * size * 3
            header = {"__metadata__": {"fastnst": json.dumps(meta)},
                      "images": {"dtype": "U8", "shape": [len(names), size, size, 3], "data_offsets": [0, nbytes]}}
            raw = json.dumps(header).encode()
            raw += b" " * (-len(raw) % 8)  # safetensors aligns the data to 8 bytes
            with open(tmp, "wb") as f, open(body, "rb") as b:
                f.write(len(raw).to_bytes(8, "little"))
                f.write(raw)
                shutil.copyfileobj(b, f, 1 << 24)
        finally:
            body.unlink(missing_ok=True)
    return meta


def pack(data: str, out: str | Path, size: int = 320, workers: int = 8, log=print) -> dict:
    """`fastnst pack`: decode the folder or data set `data` once into the pack file `out`, saying
    how it goes through `log`. Returns the pack's metadata."""
    out = Path(out)
    if out.exists():
        raise UserError(f"{out} exists: choose another --out or delete it first")
    from fastnst.files import check_writable

    check_writable(out)
    source = open_source(data)
    log(f"packing {source.description} at {size}x{size}")

    def progress(good: int, bad: int) -> None:
        if (good + bad) % 1000 == 0:
            log(f"  {good} images packed, {bad} unreadable")

    meta = write_pack(source, out, size, workers, progress)
    log(f"wrote {out}: {meta['count']} images of {size}x{size} ({out.stat().st_size / 2**30:.2f} GiB), "
        f"{len(meta['bad'])} unreadable skipped")
    return meta


def read_pack_metadata(path: str | Path) -> dict | None:
    """The metadata of a pack file, or None if `path` is not one."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), "pt") as f:
            meta = json.loads((f.metadata() or {}).get("fastnst", "{}"))
    except Exception:
        return None
    return meta if meta.get("format") == PACK_FORMAT else None


class PackedImages(TrainingData):
    """All training images as one N x S x S x 3 uint8 tensor, on `device`: from a pack file
    (`fastnst pack`) or decoded once from any source."""

    def __init__(self, images: torch.Tensor, description: str, bad: dict | None = None):
        self.images, self.description, self.skipped = images, description, dict(bad or {})

    def stream(self, batch_size, image_size, seed, position, workers=4, rank=0, world=1):
        return iter(DeviceBatchStream(self, batch_size, image_size, seed, position, rank=rank, world=world))

    def steps_per_epoch(self, global_batch):
        return len(self) // global_batch  # each epoch's last partial batch is dropped

    def sample_images(self, n, size):
        first = self.images[:n].permute(0, 3, 1, 2).float().cpu()
        return F.interpolate(first, size=(size, size), mode="bilinear", antialias=True).clamp(0, 255).div(255.0)

    @classmethod
    def from_file(cls, path: str | Path, device: torch.device) -> "PackedImages":
        from safetensors import safe_open

        meta = read_pack_metadata(path)
        if meta is None:
            raise UserError(f"{path}: not a fastnst pack file (make one with `fastnst pack`)")
        with safe_open(str(path), "pt", device=str(device)) as f:
            images = f.get_tensor("images")
        return cls(images, f"pack {path} ({meta['count']} images of {meta['size']}px from {meta['source']})",
                   meta.get("bad"))

    @classmethod
    def decode(cls, source, size: int, device: torch.device, workers: int = 8) -> "PackedImages":
        good, bad = [], {}
        for name, result in decode_all(source, size, workers):
            if isinstance(result, str):
                bad[name] = result
            else:
                good.append(result)
        if not good:
            raise UserError(f"{source.description}: no readable images")
        return cls(torch.from_numpy(np.stack(good)).to(device), f"{source.description}, decoded once to {device}",
                   bad)

    def __len__(self) -> int:
        return self.images.shape[0]


class DeviceBatchStream:
    """Endless batches of random crops of packed images, made where the images are (the GPU):
    no decoding, no host round trip, no host synchronisation.

    Deterministic and resumable like BatchStream: the order depends on (seed, epoch), each batch's
    crops and flips on (seed, epoch, offset). A last partial batch of an epoch is dropped. With
    `world` > 1, rank r takes examples r, r + world, ... of each global batch of world x batch_size.
    Batches hold float images in [0, 1] in channels-last memory format.
    """

    def __init__(self, packed: PackedImages, batch_size: int, image_size: int, seed: int,
                 position: Position | None = None, rank: int = 0, world: int = 1):
        self.packed, self.batch_size, self.image_size, self.seed = packed, batch_size, image_size, seed
        self.position = position or Position()
        self.rank, self.world = rank, world
        self.global_batch = batch_size * world
        if len(packed) < self.global_batch:
            raise UserError(f"{packed.description}: {len(packed)} images, fewer than one batch "
                            f"({self.global_batch})")
        self.device = packed.images.device
        self.generator = torch.Generator(self.device)

    def crop_transforms(self, n: int) -> torch.Tensor:
        """n x 2 x 3 affine maps (for affine_grid) of random resized crops covering CROP_SCALE of
        the area at an aspect in CROP_RATIO, flipped left-right half the time."""
        u = torch.rand(5, n, generator=self.generator, device=self.device)
        area = CROP_SCALE[0] + (CROP_SCALE[1] - CROP_SCALE[0]) * u[0]
        lo, hi = math.log(CROP_RATIO[0]), math.log(CROP_RATIO[1])
        ratio = torch.exp(lo + (hi - lo) * u[1])
        cw = torch.sqrt(area * ratio).clamp(max=1.0)  # crop width and height, fractions of the side
        ch = torch.sqrt(area / ratio).clamp(max=1.0)
        cx = (2 * u[2] - 1) * (1 - cw)  # crop centre in [-1, 1] coordinates, inside the image
        cy = (2 * u[3] - 1) * (1 - ch)
        flip = torch.where(u[4] < 0.5, -1.0, 1.0)
        zero = torch.zeros_like(cw)
        return torch.stack([torch.stack([cw * flip, zero, cx], 1), torch.stack([zero, ch, cy], 1)], 1)

    def crops(self, images: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
        """The crops `theta` of uint8 B x S x S x 3 images, bilinear, as B x 3 x size x size floats
        in [0, 1]."""
        b = images.shape[0]
        x = images.permute(0, 3, 1, 2).float()  # a channels-last view, no copy
        grid = F.affine_grid(theta, [b, 3, self.image_size, self.image_size], align_corners=False)
        out = F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)
        return out.div_(255.0).contiguous(memory_format=torch.channels_last)

    def _after(self, epoch: int, offset: int) -> Position:
        """Where the stream is at `offset` of `epoch`: the next epoch if no full batch is left."""
        return Position(epoch + 1, 0) if offset + self.global_batch > len(self.packed) else Position(epoch, offset)

    def __iter__(self) -> Iterator[Batch]:
        pos, order_epoch = self._after(self.position.epoch, self.position.offset), None
        while True:
            if order_epoch != pos.epoch:
                self.generator.manual_seed(seed_for(self.seed, pos.epoch))
                order = torch.randperm(len(self.packed), generator=self.generator, device=self.device)
                order_epoch = pos.epoch
            idx = order[pos.offset + self.rank: pos.offset + self.global_batch: self.world]
            # Crops drawn for the global batch, so every rank gets its share of the same crops.
            self.generator.manual_seed(seed_for(self.seed, pos.epoch, pos.offset))
            theta = self.crop_transforms(self.global_batch)[self.rank::self.world]
            images = self.crops(self.packed.images[idx], theta)
            pos = self._after(pos.epoch, pos.offset + self.global_batch)
            yield Batch(images, pos)


def open_training_data(data: str, device: torch.device, image_size: int, workers: int = 4):
    """What the trainer reads: a pack file (loaded onto `device`); on CUDA a folder decoded once
    onto the GPU; otherwise a source for the CPU pipeline (BatchStream)."""
    if not data.startswith("hf:") and Path(data).is_file():
        return PackedImages.from_file(data, device)
    source = open_source(data)
    if device.type == "cuda" and isinstance(source, FolderSource):
        return PackedImages.decode(source, pack_size_for(image_size), device, max(workers, 8))
    return source
