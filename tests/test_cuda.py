"""The GPU loop on a GPU: run where CUDA is (`python -m pytest -q -k cuda`), skipped elsewhere."""
import copy

import pytest
import torch

from fastnst.data import DeviceBatchStream, PackedImages
from fastnst.network import TransformerNet
from fastnst.training import make_train_step
from test_data import _stream

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


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



@cuda
@pytest.mark.parametrize("compile", [False, True])
def test_cuda_video_is_the_cpu_video_to_fp16_precision(tiny_model, tmp_path, compile):
    """`stylize video --device cuda` (fp16, channels-last, frames blended on the GPU) against the
    CPU's fp32 numpy route, on a clip the temporal blend follows."""
    import numpy as np

    from fastnst.inference import Stylizer
    from fastnst.video import stylize_video
    from test_stylize import _frames, _panning_clip

    src = _panning_clip(tmp_path / "pan.mp4", frames=10, size=(160, 96))
    gpu = Stylizer(str(tiny_model), "cuda", compile=compile)
    assert "fp16" in gpu.backend
    for name, stylizer in (("gpu", gpu), ("cpu", Stylizer(str(tiny_model), "cpu"))):
        assert stylize_video(src, tmp_path / f"{name}.avi", stylizer, temporal=0.5, strength=0.9) == 10
    diff = np.abs(_frames(tmp_path / "gpu.avi") - _frames(tmp_path / "cpu.avi"))
    assert diff.mean() < 1.0 and np.quantile(diff, 0.999) <= 6, (diff.mean(), diff.max())
