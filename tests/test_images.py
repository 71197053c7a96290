"""Images that Pillow's RGB conversion would destroy are rescaled or refused in one line."""

from __future__ import annotations

import numpy as np
import pytest
from badfiles import png_header_only
from PIL import Image

from qpm.data.images import read_rgb
from qpm.errors import QPMError


def test_16_bit_png_keeps_its_grey_levels(tmp_path):
    ramp = np.linspace(0, 65535, 64 * 64).astype(np.uint16).reshape(64, 64)
    path = tmp_path / "deep.png"
    Image.fromarray(ramp).save(path)
    with Image.open(path) as im:
        assert im.mode.startswith("I")  # what convert("RGB") would clip to 255
    rgb = np.asarray(read_rgb(path))
    assert rgb.dtype == np.uint8 and rgb.shape == (64, 64, 3)
    assert len(np.unique(rgb)) == 256  # the full 8-bit range, not 3-15 levels
    assert np.all(np.diff(rgb[..., 0].ravel().astype(int)) >= 0)  # order kept
    assert abs(int(rgb[32, 32, 0]) - round(int(ramp[32, 32]) * 255 / 65535)) <= 1


def test_float_tiff_in_0_1_is_scaled_and_out_of_range_refused(tmp_path):
    unit = np.linspace(0, 1, 32 * 32, dtype=np.float32).reshape(32, 32)
    path = tmp_path / "unit.tiff"
    Image.fromarray(unit).save(path)
    rgb = np.asarray(read_rgb(path))
    assert rgb.min() == 0 and rgb.max() == 255  # not black
    wild = tmp_path / "wild.tiff"
    Image.fromarray(unit * 1e6).save(wild)
    with pytest.raises(QPMError, match="wild.tiff holds floating-point values up to"):
        read_rgb(wild)
    nan = tmp_path / "nan.tiff"
    Image.fromarray(np.full((4, 4), np.nan, dtype=np.float32)).save(nan)
    with pytest.raises(QPMError, match="nan.tiff"):
        read_rgb(nan)


def test_ordinary_images_are_unchanged(tmp_path):
    img = np.random.default_rng(0).integers(0, 256, (8, 8, 3)).astype(np.uint8)
    Image.fromarray(img).save(tmp_path / "rgb.png")
    assert np.array_equal(np.asarray(read_rgb(tmp_path / "rgb.png")), img)
    Image.fromarray(img[..., 0]).save(tmp_path / "grey.png")
    assert np.array_equal(np.asarray(read_rgb(tmp_path / "grey.png"))[..., 1], img[..., 0])


def test_a_decompression_bomb_is_refused_naming_the_file(tmp_path):
    path = tmp_path / "bomb.png"
    path.write_bytes(png_header_only(20000, 20000))
    with pytest.raises(QPMError) as info:
        read_rgb(path)
    assert "bomb.png is too large to decode safely" in str(info.value)


def test_a_broken_file_is_one_line(tmp_path):
    path = tmp_path / "broken.jpg"
    path.write_bytes(b"\xff\xd8\xff not really a jpeg")
    with pytest.raises(QPMError, match="Cannot read image .*broken.jpg"):
        read_rgb(path)
