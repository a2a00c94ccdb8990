from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from visrec.ingest.images import ImageRejected, decode_image, normalise_image


def _encode(img: Image.Image, fmt: str) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt)
    return buf.getvalue()


@pytest.mark.parametrize(
    "mode, fmt, ext",
    [
        ("L", "PNG", "png"),
        ("P", "PNG", "png"),
        ("RGBA", "PNG", "png"),
        ("CMYK", "JPEG", "jpg"),
        ("LA", "PNG", "png"),
        ("1", "PNG", "png"),
        ("RGB", "WEBP", "webp"),
    ],
)
def test_any_mode_becomes_rgb_at_model_size(mode: str, fmt: str, ext: str):
    img = Image.new("RGB", (30, 50), (200, 30, 40)).convert(mode)
    png, w, h = normalise_image(_encode(img, fmt), f"x.{ext}", 64)
    out = Image.open(io.BytesIO(png))
    assert (out.mode, out.size, w, h) == ("RGB", (64, 64), 30, 50)
    # Padding keeps the aspect ratio: the left and right margins are the white pad.
    arr = np.asarray(out)
    assert arr[32, 0].tolist() == [255, 255, 255] and arr[32, 32].tolist() != [255, 255, 255]


def test_sixteen_bit_is_rescaled_not_clipped():
    arr = (np.linspace(0, 65535, 64 * 64).reshape(64, 64)).astype(np.uint16)
    png, _, _ = normalise_image(_encode(Image.fromarray(arr), "TIFF"), "x.tif", 64)
    out = np.asarray(Image.open(io.BytesIO(png)))
    assert out.min() < 10 and out.max() > 245


def test_transparent_background_becomes_white():
    img = Image.new("RGBA", (64, 64), (0, 0, 0, 0))
    png, _, _ = normalise_image(_encode(img, "PNG"), "x.png", 64)
    assert np.asarray(Image.open(io.BytesIO(png))).min() == 255


@pytest.mark.parametrize(
    "data, name, reason",
    [
        (b"", "a.jpg", "empty_file"),
        (b"<html>404</html>", "a.jpg", "not_an_image"),
        (_encode(Image.new("RGB", (80, 80), "red"), "JPEG")[:300], "a.jpg", "truncated"),
        (_encode(Image.new("RGB", (80, 80), "red"), "PNG")[:40], "a.png", "truncated"),
    ],
)
def test_bad_files_are_rejected_with_reason(data: bytes, name: str, reason: str):
    with pytest.raises(ImageRejected) as info:
        normalise_image(data, name, 64)
    assert info.value.reason == reason


def test_wrong_extension_is_accepted_by_content_with_a_warning():
    from visrec.ingest.images import normalise_many

    png_named_jpg = _encode(Image.new("RGB", (8, 8), "red"), "PNG")
    png, w, h = normalise_image(png_named_jpg, "a.jpg", 64)
    assert (w, h) == (8, 8) and Image.open(io.BytesIO(png)).size == (64, 64)
    named_right, named_wrong = normalise_many([("x/b.png", png_named_jpg), ("x/a.jpg", png_named_jpg)], 64, 2)
    assert named_right.png == named_wrong.png and named_right.warning is None
    assert named_wrong.reason is None and "a.jpg holds a PNG image" in named_wrong.warning


def test_decompression_bomb_is_refused_before_decoding():
    from visrec.devdata.synth import _absurd_png

    with pytest.raises(ImageRejected) as info:
        decode_image(_absurd_png(), "bomb.png")
    assert info.value.reason == "decompression_bomb"
