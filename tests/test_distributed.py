"""torchrun on the CPU (gloo): two processes train like one process with the same global batch."""
import os
import subprocess
import sys

import torch


from fastnst.modelfile import load_model
from fastnst.training import load_checkpoint

TINY = ["--batch-size", "2", "--image-size", "32", "--style-size", "64", "--width", "8", "--blocks", "1",
        "--device", "cpu", "--log-every", "1", "--sample-every", "0", "--workers", "2", "--seed", "3"]


def _run(args, nproc, cwd):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    if nproc == 1:
        cmd = [sys.executable, "-m", "fastnst", "train", *map(str, args)]
    else:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", str(nproc), "--master-port",
               str(29500 + os.getpid() % 1000), "-m", "fastnst", "train", *map(str, args)]
    return subprocess.run(cmd, capture_output=True, text=True, cwd=cwd, env=env, timeout=600)


def _weights(path):
    return load_model(path)[0].state_dict()


def test_two_processes_equal_one_with_the_same_global_batch(style_image, coco_folder, tmp_path):
    common = ["--style", style_image, "--data", coco_folder, *TINY, "--steps", "4"]
    one = _run([*common, "--out", tmp_path / "one", "--batch-size", "4"], 1, tmp_path)
    assert one.returncode == 0, one.stderr
    two = _run([*common, "--out", tmp_path / "two"], 2, tmp_path)  # 2 processes x batch 2
    assert two.returncode == 0, two.stderr
    # Compare what the networks compute, not every parameter: a convolution's bias right before an
    # instance norm has a true gradient of zero (the norm removes it), so it only receives float
    # noise, which Adam turns into full-size steps that differ between runs yet change nothing.
    net_a, net_b = load_model(tmp_path / "one" / "model.safetensors")[0], load_model(tmp_path / "two" / "model.safetensors")[0]
    x = torch.rand(2, 3, 40, 56, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(net_a(x), net_b(x), rtol=0, atol=1e-4)
    a, b = net_a.state_dict(), net_b.state_dict()
    torch.testing.assert_close(a["decoder.2.1.weight"], b["decoder.2.1.weight"], rtol=1e-3, atol=1e-5)
    # only rank 0 wrote: one log line per step, one checkpoint, no stray temporary files
    assert len((tmp_path / "two" / "log.jsonl").read_text().splitlines()) == 4
    assert sorted(p.name for p in (tmp_path / "two").iterdir()) == \
        ["checkpoint.pt", "config.json", "log.jsonl", "model.safetensors", "samples"]
    ckpt = load_checkpoint(tmp_path / "two" / "checkpoint.pt")
    assert ckpt["world_size"] == 2 and ckpt["images_seen"] == 16 and len(ckpt["positions"]) == 2


def test_two_processes_stopped_and_resumed_equal_uninterrupted(style_image, coco_folder, tmp_path):
    common = ["--style", style_image, "--data", coco_folder, *TINY]
    full = _run([*common, "--out", tmp_path / "full", "--steps", "6"], 2, tmp_path)
    assert full.returncode == 0, full.stderr
    first = _run([*common, "--out", tmp_path / "split", "--steps", "3"], 2, tmp_path)
    assert first.returncode == 0, first.stderr
    second = _run(["--resume", tmp_path / "split" / "checkpoint.pt", "--steps", "6"], 2, tmp_path)
    assert second.returncode == 0, second.stderr
    a, b = _weights(tmp_path / "full" / "model.safetensors"), _weights(tmp_path / "split" / "model.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a)
    # resuming with another number of processes is refused with one line
    wrong = _run(["--resume", tmp_path / "split" / "checkpoint.pt", "--steps", "8"], 1, tmp_path)
    assert wrong.returncode == 2 and "written by 2 process(es)" in wrong.stderr


def test_a_failing_rank_stops_the_run_with_its_reason(style_image, tmp_path):
    r = _run(["--style", style_image, "--data", tmp_path / "missing", *TINY, "--steps", "2",
              "--out", tmp_path / "o"], 2, tmp_path)
    assert r.returncode != 0
    assert "missing: no such data folder" in r.stderr
