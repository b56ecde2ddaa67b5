"""ONNX export: a trained model file becomes an ONNX model that any app can run in one pass.

The ONNX model's input `image` and output `stylized` are float32 NCHW RGB in [0, 1], with dynamic
batch, height and width (any size from 1x1 up). The model's metadata is in `metadata_props`
(key `fastnst`, JSON, plus a few flat keys). Export writes to a temporary file, checks it with
`onnx.checker`, runs it with onnxruntime against PyTorch at sizes it was not traced with (one
odd), and only then renames it into place: a failed export leaves nothing behind.
"""

from __future__ import annotations

import contextlib
import copy
import io
import json
import os
import tempfile
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

from fastnst.errors import UserError
from fastnst.files import atomic_path, check_writable
from fastnst.modelfile import VALUE_RANGE, load_model, write_onnx_metadata

INPUT_NAME, OUTPUT_NAME = "image", "stylized"
TRACE_SHAPE = (2, 3, 64, 80)
VERIFY_SHAPES = [(1, 3, 333, 517), (2, 3, 97, 130)]  # not the traced size; the first is odd
FP32_TOLERANCE = 0.5 / 255  # max abs difference, 0.5 on the 0-255 scale
FP16_TOLERANCE = 8 / 255


class ExportError(RuntimeError):
    """The exported model failed its own verification."""


class _Float16Net(nn.Module):
    """fp16 weights and arithmetic inside, float32 at the edges (the documented I/O type)."""

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net.half()

    def forward(self, x):
        return self.net(x.half()).float()


def _onnx_export(module: nn.Module, path: Path, opset: int) -> None:
    from torch.export import Dim

    x = torch.rand(*TRACE_SHAPE)
    dims = {0: Dim("batch", min=1, max=4096), 2: Dim("height", min=1, max=1 << 16),
            3: Dim("width", min=1, max=1 << 16)}
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):  # the exporter chats on stdout
        warnings.simplefilter("ignore")
        torch.onnx.export(module, (x,), str(path), dynamo=True, opset_version=opset, input_names=[INPUT_NAME],
                          output_names=[OUTPUT_NAME], dynamic_shapes={"x": dims}, verbose=False,
                          external_data=False)


def verify(onnx_path: Path, reference: nn.Module, tolerance: float) -> float:
    """Max abs difference between onnxruntime and PyTorch over VERIFY_SHAPES."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    worst = 0.0
    g = torch.Generator().manual_seed(0)
    for shape in VERIFY_SHAPES:
        x = torch.rand(*shape, generator=g)
        with torch.no_grad():
            expected = reference(x).float().numpy()
        got = session.run([OUTPUT_NAME], {INPUT_NAME: x.numpy()})[0]
        if got.shape != expected.shape:
            raise ExportError(f"onnxruntime gave shape {got.shape} for input {shape}, PyTorch {expected.shape}")
        worst = max(worst, float(np.abs(got - expected).max()))
    if worst > tolerance:
        raise ExportError(f"onnxruntime differs from PyTorch by {worst * 255:.3f} (0-255 scale), "
                          f"over the tolerance {tolerance * 255:.2f}")
    return worst


def export(model_path: str | Path, out: str | Path | None = None, fp16: bool = False, opset: int = 18,
           int8_calibration: str | Path | None = None) -> dict:
    """Export a model file to ONNX; returns a report {path, precision, max_abs_diff, ...}. With
    `int8_calibration` (a folder of photos, checked first) also NAME.int8.onnx (report["int8"]); if
    that fails, the fp32 file this call wrote is removed too: a failed export leaves nothing."""
    import onnx

    model_path = Path(model_path)
    net, meta, _ = load_model(model_path)
    net = net.float().eval()
    precision = "fp16" if fp16 else "fp32"
    out = Path(out) if out else model_path.with_suffix(".fp16.onnx" if fp16 else ".onnx")
    if out.suffix != ".onnx":
        raise UserError(f"{out}: the output of export must end in .onnx")
    if out.resolve() == model_path.resolve():
        raise UserError(f"{out}: refusing to overwrite the input model")
    check_writable(out)
    if int8_calibration is not None:
        if fp16:
            raise UserError("choose --fp16 or --int8, not both")
        photos = _calibration_batches(Path(int8_calibration), INT8_CALIBRATION_PHOTOS + 4, INT8_CALIBRATION_SIZE)
    existed = out.exists()
    module = _Float16Net(copy.deepcopy(net)) if fp16 else net  # net itself stays fp32: the reference

    with atomic_path(out) as tmp:
        _onnx_export(module, tmp, opset)
        model = onnx.load(str(tmp))
        write_onnx_metadata(model, meta, precision)
        model.doc_string = f"fastnst {meta.get('style_name', '')} style network; input and output {VALUE_RANGE}"
        onnx.checker.check_model(model)
        onnx.save(model, str(tmp))
        # fp16 is judged against the fp32 network: that is the quality a user gives up.
        diff = verify(tmp, net, FP16_TOLERANCE if fp16 else FP32_TOLERANCE)
    report = {"path": out, "precision": precision, "max_abs_diff_255": diff * 255, "opset": opset,
              "size_bytes": out.stat().st_size, "verified_shapes": VERIFY_SHAPES}
    if int8_calibration is not None:
        try:
            report["int8"] = quantize_int8(out, out.with_name(out.name.replace(".onnx", ".int8.onnx")),
                                           int8_calibration, photos=photos)
        except BaseException:
            if not existed:
                out.unlink(missing_ok=True)
            raise
    return report


def export_checked(model: Path, out: Path | None, fp16: bool, opset: int, int8: bool,
                   calibration: Path | None) -> dict:
    """`fastnst export`: `export`, with a failed check as a user's one-line error."""
    from fastnst.decoders import export_any_style, read_decoders_metadata

    if model.suffix == ".safetensors" and model.is_file() and read_decoders_metadata(model) is not None:
        if fp16 or int8:
            raise UserError(f"{model}: decoders export to fp32 ONNX only (no --fp16 or --int8)")
        report = export_any_style(model, out, opset)
        return {**report, "lines": [f"wrote {report['path']}/ (encoder and decoder stages, fp32, "
                                    f"{report['size_bytes'] / 1e6:.1f} MB, opset {opset}); onnxruntime vs PyTorch "
                                    f"per stage: max relative difference {report['max_relative_diff']:.2g}"]}
    if int8 and calibration is None:
        raise UserError("--int8 needs --calibration DIR (a folder of real photos)")
    try:
        return export(model, out, fp16=fp16, opset=opset, int8_calibration=calibration if int8 else None)
    except ExportError as e:
        raise UserError(f"{model}: export failed its check: {e}") from None


def describe(report: dict) -> list[str]:
    """What an export wrote and how it checked, one line per file."""
    if "lines" in report:
        return report["lines"]
    shapes = " and ".join("x".join(map(str, s[2:])) for s in report["verified_shapes"])
    lines = [f"wrote {report['path']} ({report['precision']}, {report['size_bytes'] / 1e6:.1f} MB, opset "
             f"{report['opset']}); onnxruntime vs PyTorch at {shapes}: max abs difference "
             f"{report['max_abs_diff_255']:.4f} on the 0-255 scale"]
    if "int8" in report:
        q = report["int8"]
        lines.append(f"wrote {q['path']} (int8, {q['size_bytes'] / 1e6:.1f} MB, calibrated on "
                     f"{q['calibration_images']} photos): PSNR against fp32 at least {q['psnr_vs_fp32_db']:.1f} dB "
                     "on held-out photos")
    return lines


def _calibration_batches(folder: Path, n: int, size: int) -> list[np.ndarray]:
    """Up to n real photos from `folder`, resized to size x size, as 1x3xHxW float32 in [0, 1]."""
    from fastnst.data import center_crop, decode, list_images

    if not folder.is_dir():
        raise UserError(f"{folder}: no such calibration folder")
    out = []
    for path in list_images(folder):
        try:
            a = center_crop(decode(path), size)
        except Exception:
            continue
        out.append((a.astype(np.float32).transpose(2, 0, 1) / 255.0)[None])
        if len(out) == n:
            break
    if len(out) < 2:
        raise UserError(f"{folder}: int8 calibration needs at least 2 readable photos")
    return out


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return float("inf") if mse == 0 else 10 * np.log10(1.0 / mse)


INT8_MIN_PSNR = 30.0  # on every held-out photo
# The first two convolutions and the last stay fp32: they see and make the pixels, and quantizing them
# cost the most. Measured on starry_night, 4 photos at 1000 px, worst PSNR against fp32 / time at 512 px
# on the 2-core CPU: every convolution int8 24.7 dB / 0.311 s; first and last fp32 30.3 dB / 0.328 s;
# first two and last 34.2 dB / 0.345 s; first two and last two 34.3 dB / 0.361 s.
FP32_FIRST_CONVS, FP32_LAST_CONVS = 2, 1


INT8_CALIBRATION_PHOTOS, INT8_CALIBRATION_SIZE = 32, 256


def quantize_int8(fp32_onnx: str | Path, out: str | Path, calibration: str | Path,
                  n_images: int = INT8_CALIBRATION_PHOTOS, size: int = INT8_CALIBRATION_SIZE,
                  photos: list | None = None) -> dict:
    """Static int8 quantization (onnxruntime QDQ, per-channel int8 weights, uint8 activations, the
    convolutions only) calibrated on real photos. Quality: PSNR of the int8 output against the
    fp32 output on photos held out from calibration; refused under INT8_MIN_PSNR dB."""
    import onnx
    import onnxruntime as ort
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    fp32_onnx, out = Path(fp32_onnx), Path(out)
    photos = photos or _calibration_batches(Path(calibration), n_images + 4, size)
    calib, held_out = photos[:-4] if len(photos) > 6 else photos, photos[-4:]

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.it = iter(calib)

        def get_next(self):
            x = next(self.it, None)
            return None if x is None else {INPUT_NAME: x}

    fd, pre = tempfile.mkstemp(suffix=".onnx", dir=out.parent)
    os.close(fd)
    try:
        with atomic_path(out) as tmp:
            with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
                warnings.simplefilter("ignore")
                quant_pre_process(str(fp32_onnx), pre, skip_symbolic_shape=True)
                convs = [n.name for n in onnx.load(pre).graph.node if n.op_type == "Conv"]
                keep = convs[:FP32_FIRST_CONVS] + convs[len(convs) - FP32_LAST_CONVS:]
                quantize_static(pre, str(tmp), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                                activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                                op_types_to_quantize=["Conv"], nodes_to_exclude=keep)
            model = onnx.load(str(tmp))
            props = {p.key: p.value for p in onnx.load(str(fp32_onnx)).metadata_props}
            write_onnx_metadata(model, json.loads(props["fastnst"]), "int8")
            onnx.checker.check_model(model)
            onnx.save(model, str(tmp))
            s32 = ort.InferenceSession(str(fp32_onnx), providers=["CPUExecutionProvider"])
            s8 = ort.InferenceSession(str(tmp), providers=["CPUExecutionProvider"])
            scores = [psnr(s8.run(None, {INPUT_NAME: x})[0], s32.run(None, {INPUT_NAME: x})[0]) for x in held_out]
            quality = float(min(scores))
            if quality < INT8_MIN_PSNR:
                raise ExportError(f"int8 model's output is {quality:.1f} dB PSNR from fp32's on a held-out photo, "
                                  f"under {INT8_MIN_PSNR} dB")
    finally:
        Path(pre).unlink(missing_ok=True)
    return {"path": out, "precision": "int8", "psnr_vs_fp32_db": quality, "calibration_images": len(calib),
            "size_bytes": out.stat().st_size}
