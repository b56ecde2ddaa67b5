import json

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from fastnst.errors import UserError
from fastnst.export import VALUE_RANGE, export, quantize_int8
from fastnst.modelfile import load_model, read_metadata


def test_onnx_has_dynamic_axes_and_passes_the_checker(tiny_onnx):
    model = onnx.load(str(tiny_onnx))
    onnx.checker.check_model(model)
    dims = [d.dim_param or d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim]
    assert dims[1] == 3 and all(isinstance(d, str) and d for d in (dims[0], dims[2], dims[3])), dims
    assert model.graph.input[0].name == "image" and model.graph.output[0].name == "stylized"


@pytest.mark.parametrize("shape", [(3, 3, 45, 71), (1, 3, 1, 1), (2, 3, 333, 517)])
def test_onnxruntime_matches_pytorch(tiny_model, tiny_onnx, shape):
    net, _, _ = load_model(tiny_model)
    x = torch.rand(*shape, generator=torch.Generator().manual_seed(1))
    got = ort.InferenceSession(str(tiny_onnx), providers=["CPUExecutionProvider"]).run(None, {"image": x.numpy()})[0]
    with torch.no_grad():
        expected = net(x).numpy()
    assert got.shape == expected.shape
    assert np.abs(got - expected).max() * 255 <= 0.5


def test_metadata_round_trip(tiny_model, tiny_onnx):
    props = {p.key: p.value for p in onnx.load(str(tiny_onnx)).metadata_props}
    meta = json.loads(props["fastnst"])
    original = read_metadata(tiny_model)
    assert meta.pop("onnx_precision") == "fp32"
    assert meta == original
    assert props["style_name"] == "starry_night" and props["value_range"] == VALUE_RANGE
    session_props = ort.InferenceSession(str(tiny_onnx)).get_modelmeta().custom_metadata_map
    assert json.loads(session_props["fastnst"])["style_sha256"] == original["style_sha256"]


def test_fp16_and_int8_variants(tiny_model, tmp_path, shared_data):
    r16 = export(tiny_model, tmp_path / "m.fp16.onnx", fp16=True)
    assert r16["precision"] == "fp16" and r16["max_abs_diff_255"] < 8
    r32 = export(tiny_model, tmp_path / "m.onnx")
    r8 = quantize_int8(r32["path"], tmp_path / "m.int8.onnx", shared_data / "coco", n_images=8, size=64)
    assert r8["psnr_vs_fp32_db"] >= 30
    props = {p.key: p.value for p in onnx.load(str(r8["path"])).metadata_props}
    assert props["precision"] == "int8" and json.loads(props["fastnst"])["style_name"] == "starry_night"


def test_export_refuses_bad_input(tmp_path, tiny_model):
    text = tmp_path / "model.safetensors"
    text.write_text("not a model")
    with pytest.raises(UserError, match="not a fastnst model file"):
        export(text)
    with pytest.raises(UserError, match="no such model file"):
        export(tmp_path / "missing.safetensors")
    with pytest.raises(UserError, match="must end in .onnx"):
        export(tiny_model, tmp_path / "out.bin")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.safetensors"]  # nothing half-written


def test_a_failed_int8_export_leaves_nothing(tiny_model, shared_data, tmp_path, monkeypatch):
    import fastnst.export as ex

    one_photo = tmp_path / "one"
    one_photo.mkdir()
    (one_photo / "p.jpg").write_bytes((shared_data / "content" / "chicago.jpg").read_bytes())
    # the calibration folder is checked before anything is written
    with pytest.raises(UserError, match="at least 2 readable photos"):
        export(tiny_model, tmp_path / "a.onnx", int8_calibration=one_photo)
    assert not list(tmp_path.glob("a*.onnx"))
    # an int8 model under the quality bar: refused, and the fp32 file of the same export removed
    monkeypatch.setattr(ex, "INT8_MIN_PSNR", 1000.0)
    with pytest.raises(ex.ExportError):
        export(tiny_model, tmp_path / "b.onnx", int8_calibration=shared_data / "coco")
    assert not list(tmp_path.glob("b*.onnx")) and not list(tmp_path.glob(".b*"))
