import numpy as np
import pytest
from PIL import Image

from fastnst.errors import UserError
from fastnst.images import load_rgb, open_image, save_image_atomic, to_pil, to_tensor


def test_modes_become_rgb(tmp_path):
    rgb = np.random.default_rng(0).integers(0, 255, (10, 12, 3), dtype=np.uint8)
    cases = {
        "gray.png": Image.fromarray(rgb[..., 0], "L"),
        "palette.png": Image.fromarray(rgb).convert("P"),
        "cmyk.jpg": Image.fromarray(rgb).convert("CMYK"),
        "g16.png": Image.fromarray(rgb[..., 0].astype(np.uint16) * 257),
    }
    for name, im in cases.items():
        im.save(tmp_path / name)
        out = open_image(tmp_path / name)
        assert out.mode == "RGB" and out.size == (12, 10), name
    # 16-bit is scaled, not clipped: 257*v comes back as v
    g16 = np.asarray(open_image(tmp_path / "g16.png"))[..., 0]
    assert np.abs(g16.astype(int) - rgb[..., 0]).max() <= 1


@pytest.mark.parametrize("peak", [255, 765, 32768, 65535])
def test_16_bit_greyscale_is_scaled_by_its_bit_depth(tmp_path, peak):
    """A 16-bit value v is v / 65535 of white, whatever the image's maximum."""
    a = np.linspace(0, peak, 40 * 30).reshape(30, 40).astype(np.uint16)
    Image.fromarray(a).save(tmp_path / "g.png")
    got = np.asarray(open_image(tmp_path / "g.png"))[..., 0].astype(float)
    assert np.abs(got - a / 65535 * 255).max() <= 1


def test_rgba_keeps_alpha(tmp_path):
    im = Image.new("RGBA", (4, 3), (10, 20, 30, 128))
    im.save(tmp_path / "a.png")
    assert open_image(tmp_path / "a.png").mode == "RGBA"
    assert load_rgb(tmp_path / "a.png").mode == "RGB"


def test_exif_orientation_is_applied(tmp_path):
    im = Image.new("RGB", (20, 10))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise on display
    im.save(tmp_path / "o.jpg", exif=exif)
    assert open_image(tmp_path / "o.jpg").size == (10, 20)


@pytest.mark.parametrize("content,match", [(b"", "empty file"), (b"hello, I am text", "not an image"),
                                           (None, "truncated")])
def test_bad_files_are_one_line_user_errors(tmp_path, content, match):
    path = tmp_path / "bad.jpg"
    if content is None:  # a real JPEG cut in half
        Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(path)
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    else:
        path.write_bytes(content)
    with pytest.raises(UserError, match=match) as e:
        open_image(path)
    assert str(path) in str(e.value) and "\n" not in str(e.value)


def test_missing_file(tmp_path):
    with pytest.raises(UserError, match="no such file"):
        open_image(tmp_path / "nope.png")


def test_tensor_round_trip_and_atomic_save(tmp_path):
    rgb = np.random.default_rng(1).integers(0, 255, (5, 7, 3), dtype=np.uint8)
    t = to_tensor(Image.fromarray(rgb))
    assert t.shape == (3, 5, 7) and 0 <= t.min() and t.max() <= 1
    save_image_atomic(to_pil(t), tmp_path / "x" / "out.png")
    assert np.array_equal(np.asarray(Image.open(tmp_path / "x" / "out.png")), rgb)
    assert [p.name for p in (tmp_path / "x").iterdir()] == ["out.png"]  # no temporary left behind
