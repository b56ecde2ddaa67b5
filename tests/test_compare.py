"""`fastnst compare`: a model against the Gatys optimizer, from noise and from the photo."""
import csv
import json

import numpy as np
import pytest
from PIL import Image

from conftest import fastnst, one_line_error


def test_compare_writes_consistent_reports(tiny_model, shared_data, tmp_path):
    contents = [shared_data / "content" / "chicago.jpg", shared_data / "content" / "amber.jpg"]
    r = fastnst("compare", *contents, "--model", tiny_model, "--out", tmp_path / "c", "--sizes", "48",
                "--iterations", "0,2,4", "--runs", "2", "--device", "cpu")
    assert r.returncode == 0, r.stderr
    report = json.loads((tmp_path / "c" / "report.json").read_text())
    assert report["inits"] == ["noise", "content"]  # both by default, Johnson 2016's first
    lines = list(csv.DictReader(open(tmp_path / "c" / "report.csv")))
    assert len(report["rows"]) == 2 and len(lines) == 4  # one CSV line per row and start
    for row in report["rows"]:
        assert list(row["starts"]) == ["noise", "content"]
        for init, o in row["starts"].items():
            line = next(l for l in lines if l["content"] == row["content"] and l["init"] == init)
            assert float(line["network_J"]) == pytest.approx(row["network_J"])
            js = [o["optimizer_J"][k] for k in ("0", "2", "4")]
            assert js[2] < js[0]
            every = o["optimizer_J_every_iteration"]
            assert len(every) == 5 and every[0] == js[0] and every[2] == js[1] and every[4] == js[2]
            matched = o["first_iteration_at_or_below_network"]
            assert matched == next((i for i, j in enumerate(every) if j <= row["network_J"]), None)
            assert float(line["optimizer_J_4"]) == pytest.approx(js[2])
            assert float(line["speedup_over_100"] or 0) == 0  # only 4 iterations: no speedup over 100
        # two different starting images
        assert row["starts"]["noise"]["optimizer_J"]["0"] != pytest.approx(row["starts"]["content"]["optimizer_J"]["0"])
    assert (tmp_path / "c" / "loss_vs_iterations.png").stat().st_size > 1000
    table = [l for l in r.stdout.splitlines() if l.startswith("chicago")]
    assert [l.split()[2] for l in table] == ["noise", "content"]  # the terminal table shows both starts
    # grid.png: a label row, then per row content, style, network, optimizer at 0, 2, 4 from each start.
    grid = np.asarray(Image.open(tmp_path / "c" / "grid.png").convert("RGB")).astype(int)
    assert grid.shape[0] == 20 + 2 * 160
    content_w = round(Image.open(contents[0]).width * 160 / Image.open(contents[0]).height)
    assert grid.shape[1] == 160 + 8 * content_w
    style_cell = grid[20:180, content_w:content_w + 160]
    assert (np.abs(style_cell - 230).max(axis=2) == 0).mean() > 0.8  # no --style: the placeholder
    r = fastnst("compare", contents[0], "--model", tiny_model, "--out", tmp_path / "s", "--sizes", "48",
                "--iterations", "0,1", "--runs", "1", "--device", "cpu", "--style", shared_data / "styles" / "wave.jpg",
                "--init", "content")
    assert r.returncode == 0, r.stderr
    assert list(json.loads((tmp_path / "s" / "report.json").read_text())["rows"][0]["starts"]) == ["content"]
    grid = np.asarray(Image.open(tmp_path / "s" / "grid.png").convert("RGB")).astype(int)
    style_cell = grid[20:180, content_w:content_w + 160]
    assert (np.abs(style_cell - 230).max(axis=2) == 0).mean() < 0.2  # the style image itself


def test_compare_from_noise_is_reproducible(tiny_model, shared_data, tmp_path):
    """Fixed seeds: the same command gives the same J; another --seed another noise image."""
    def noise_js(out, *extra):
        r = fastnst("compare", shared_data / "content" / "tubingen.jpg", "--model", tiny_model, "--out", out,
                    "--sizes", "40", "--iterations", "0,3", "--runs", "1", "--device", "cpu", "--init", "noise",
                    *extra)
        assert r.returncode == 0, r.stderr
        return json.loads((out / "report.json").read_text())["rows"][0]["starts"]["noise"]["optimizer_J"]

    first, again, other = noise_js(tmp_path / "a"), noise_js(tmp_path / "b"), noise_js(tmp_path / "c", "--seed", "1")
    assert first == again
    assert other["0"] != first["0"]


def test_compare_bad_input(tiny_model, tmp_path):
    line = one_line_error(fastnst("compare", tmp_path / "nope.jpg", "--model", tiny_model, "--out", tmp_path))
    assert "nope.jpg: no such file" in line
    line = one_line_error(fastnst("compare", tmp_path, "--model", tiny_model, "--out", tmp_path,
                                   "--sizes", "a,b"))
    assert "--sizes" in line
    line = one_line_error(fastnst("compare", tmp_path, "--model", tiny_model, "--out", tmp_path,
                                   "--init", "noise,random"))
    assert "--init" in line

