"""The GPU speed-ups are each checked for correctness: same losses, gradients or batches with and
without them. On the CPU where they run there; the CUDA tests run only where a GPU is."""

import copy

import pytest
import torch

from conftest import tiny_config
from fastnst.data import DeviceBatchStream, FolderSource, PackedImages, Position, read_pack_metadata, write_pack
from fastnst.errors import UserError
from fastnst.config import LossConfig
from fastnst.losses import Objective
from fastnst.network import TransformerNet
from fastnst.training import Trainer, load_checkpoint, make_train_step

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


@pytest.fixture(scope="module")
def objective():
    o = Objective.from_config(LossConfig())
    torch.manual_seed(0)
    o.set_style(torch.rand(1, 3, 64, 64))
    return o


def _losses_and_grad(objective, y, x):
    losses = objective(y, x)
    (grad,) = torch.autograd.grad(losses["total"], y)
    return {k: v.item() for k, v in losses.items()}, grad


def test_batched_content_forward_gives_the_same_losses_and_gradients(objective):
    torch.manual_seed(1)
    x, y = torch.rand(2, 3, 48, 64), torch.rand(2, 3, 48, 64, requires_grad=True)
    o = copy.deepcopy(objective)
    separate, g1 = _losses_and_grad(o, y, x)
    o.batched_content = True
    batched, g2 = _losses_and_grad(o, y, x)
    assert separate == pytest.approx(batched, rel=1e-5)
    assert (g1 - g2).abs().max() <= 1e-5 * g1.abs().max()


def test_channels_last_gives_the_same_losses_and_gradients(objective):
    torch.manual_seed(2)
    x, y = torch.rand(2, 3, 48, 48), torch.rand(2, 3, 48, 48)
    y1 = y.clone().requires_grad_()
    plain, g1 = _losses_and_grad(objective, y1, x)
    o = copy.deepcopy(objective).to(memory_format=torch.channels_last)
    y2 = y.contiguous(memory_format=torch.channels_last).requires_grad_()
    cl, g2 = _losses_and_grad(o, y2, x.contiguous(memory_format=torch.channels_last))
    assert plain == pytest.approx(cl, rel=1e-4)
    assert (g1 - g2).abs().max() <= 1e-4 * g1.abs().max()


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


# -- packed data ---------------------------------------------------------------------------------

@pytest.fixture
def packed(coco_folder, tmp_path):
    (coco_folder / "broken.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    path = tmp_path / "train.pack"
    meta = write_pack(FolderSource(coco_folder), path, 40, workers=2)
    return path, meta


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


def test_cli_pack_refuses_to_overwrite(coco_folder, tmp_path):
    from test_cli import _one_line_error, fastnst

    out = tmp_path / "x.pack"
    out.write_bytes(b"keep me")
    r = fastnst("pack", str(coco_folder), "--out", str(out))
    assert "exists" in _one_line_error(r)
    assert out.read_bytes() == b"keep me"
    r = fastnst("pack", str(tmp_path / "missing"), "--out", str(tmp_path / "y.pack"))
    assert "no such data folder" in _one_line_error(r)


# -- on a GPU ------------------------------------------------------------------------------------

@cuda
@pytest.mark.parametrize("mode", [None, "reduce-overhead"])
def test_cuda_optimised_step_matches_the_fp32_step(objective, mode):
    """bf16 + channels-last + batched VGG + compile (+ CUDA graphs) against fp32 eager: same loss to
    bf16 precision. The losses are read after all steps: a step's returned values must survive the
    next steps (a CUDA graph's replay overwrites its outputs)."""
    dev = torch.device("cuda")
    torch.manual_seed(5)
    x = torch.rand(4, 3, 128, 128, device=dev)
    results = []
    for fast in (False, True):
        torch._dynamo.reset()
        torch.manual_seed(6)
        o = copy.deepcopy(objective).to(dev)
        net = TransformerNet().to(dev)
        opt = torch.optim.Adam(net.parameters(), 1e-3, fused=fast)
        if fast:
            from fastnst.devices import use_gpu_speedups

            use_gpu_speedups(dev, net, o)
            step = make_train_step(net, o, opt, dev, compile=True, compile_mode=mode)
            xin = x.contiguous(memory_format=torch.channels_last)
        else:
            step = make_train_step(net, o, opt, torch.device("cpu"))  # no autocast: fp32
            xin = x
        outs = [step(xin) for _ in range(3)]
        results.append([losses["total"].item() for losses in outs])
    assert results[0] == pytest.approx(results[1], rel=2e-2)


@cuda
def test_cuda_device_stream_matches_its_cpu_crops():
    images = torch.randint(0, 256, (6, 40, 40, 3), dtype=torch.uint8)
    gpu = _stream(images.cuda())
    cpu = _stream(images)
    theta = gpu.crop_transforms(2)
    idx = torch.tensor([0, 3])
    a = gpu.crops(images.cuda()[idx.cuda()], theta).cpu()
    b = cpu.crops(images[idx], theta.cpu())
    assert torch.allclose(a, b, atol=1e-5)


@cuda
@pytest.mark.parametrize("compile", [False, True])
def test_cuda_training_step_never_waits_for_the_host(objective, compile):
    """The trainer's loop on the GPU (device data stream, optimised step, losses accumulated on the
    device) runs without one host synchronisation: CUDA's sync debug mode turns any into an error."""
    from fastnst.devices import use_gpu_speedups

    dev = torch.device("cuda")
    torch._dynamo.reset()
    o = copy.deepcopy(objective).to(dev)
    net = TransformerNet().to(dev)
    use_gpu_speedups(dev, net, o)
    step = make_train_step(net, o, torch.optim.Adam(net.parameters(), 1e-3, fused=True), dev, compile=compile)
    batches = iter(DeviceBatchStream(_packed_on(dev), 4, 64, seed=0))
    for _ in range(3):  # warm-up: compiling, cuDNN autotuning and lazy initialisation may synchronise
        step(next(batches).images)
    torch.cuda.synchronize()
    window = None
    torch.cuda.set_sync_debug_mode("error")
    try:
        for _ in range(3):
            losses = step(next(batches).images)
            window = losses if window is None else {k: window[k] + losses[k] for k in window}
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert torch.isfinite(window["total"]).item()


def _packed_on(device):
    images = torch.randint(0, 256, (12, 80, 80, 3), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    return PackedImages(images.to(device), "12 random images")


def test_moving_the_objective_moves_its_style_targets(objective):
    moved = copy.deepcopy(objective).to(torch.float64)
    assert all(g.dtype == torch.float64 for g in moved.style_grams.values())
