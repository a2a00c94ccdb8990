"""Image ingestion: decode, verify, normalise to RGB at the model size, or reject with a reason.

Used for catalog images now and user uploads later. The pure part (:func:`normalise_image`) runs in
worker processes; :func:`ingest_images` does the I/O and writes ``staging_images`` and its quarantine.

Reasons: ``missing_image`` (a catalog item with no file), ``empty_file``, ``not_an_image``,
``truncated`` (the decoder ran out of data), ``decompression_bomb`` (more pixels than
``MAX_PIXELS``), ``duplicate_image`` (a second file for the same item), ``unknown_item`` (a file
whose item is not in the catalog). A file whose extension names another format than its bytes hold
(PNG bytes named ``.jpg``) is accepted by content with a ``wrong_extension`` warning, counted and
logged: the picture is fine, the export that named it is worth a look.
"""

from __future__ import annotations

import hashlib
import io
import warnings
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageFile, UnidentifiedImageError

MAX_PIXELS = 40_000_000  # far above any product photo, far below what would exhaust memory
EXTENSIONS = {
    "jpg": "JPEG",
    "jpeg": "JPEG",
    "png": "PNG",
    "gif": "GIF",
    "webp": "WEBP",
    "bmp": "BMP",
    "tif": "TIFF",
    "tiff": "TIFF",
}
PAD_COLOUR = (255, 255, 255)
_SIGNATURES = (b"\xff\xd8", b"\x89PNG", b"GIF8", b"RIFF", b"BM", b"II*\x00", b"MM\x00*")


class ImageRejected(ValueError):
    """An image file that cannot be used; ``reason`` is a short code, the message explains."""

    def __init__(self, reason: str, detail: str):
        super().__init__(detail)
        self.reason = reason


def to_rgb(img: Image.Image) -> Image.Image:
    """Any PIL mode as 8-bit RGB: transparency composited on white, 16-bit and float rescaled."""
    if img.mode == "RGB":
        return img
    if img.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        arr = np.asarray(img, dtype=np.float64)
        top = 65535.0 if img.mode.startswith("I;16") else max(float(arr.max()), 1.0)
        return Image.fromarray(np.clip(arr / top * 255.0, 0, 255).astype(np.uint8), "L").convert("RGB")
    if img.mode == "P" and "transparency" in img.info:
        img = img.convert("RGBA")
    if img.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = img.convert("RGBA")
        canvas = Image.new("RGB", rgba.size, PAD_COLOUR)
        canvas.paste(rgba, mask=rgba.getchannel("A"))
        return canvas
    return img.convert("RGB")


def fit_square(img: Image.Image, size: int) -> Image.Image:
    """Pad to a square (white, centred) and resize to ``size`` x ``size``: no crop, no distortion."""
    w, h = img.size
    side = max(w, h)
    if w != h:
        canvas = Image.new("RGB", (side, side), PAD_COLOUR)
        canvas.paste(img, ((side - w) // 2, (side - h) // 2))
        img = canvas
    return img.resize((size, size), Image.Resampling.LANCZOS) if side != size else img


def decode_image(data: bytes, name: str = "image") -> Image.Image:
    """Decode and fully load an image; raise :class:`ImageRejected` with the reason otherwise."""
    if not data:
        raise ImageRejected("empty_file", f"{name} is empty (0 bytes)")
    ImageFile.LOAD_TRUNCATED_IMAGES = False
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            Image.MAX_IMAGE_PIXELS = MAX_PIXELS
            img = Image.open(io.BytesIO(data))
            w, h = img.size
            if w * h > MAX_PIXELS:
                raise ImageRejected("decompression_bomb", f"{name} claims {w}x{h} pixels (> {MAX_PIXELS})")
            img.load()
    except ImageRejected:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageRejected("decompression_bomb", f"{name}: {exc}") from None
    except UnidentifiedImageError:
        if data.startswith(_SIGNATURES):  # an image's header with too little after it
            raise ImageRejected("truncated", f"{name} starts like an image but cannot be read") from None
        raise ImageRejected("not_an_image", f"{name} is not an image any decoder knows") from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise ImageRejected("truncated", f"{name} cannot be decoded: {exc}") from None
    return img


def extension_mismatch(name: str, img: Image.Image) -> str | None:
    """A warning when the file's extension names another format than its bytes hold (PNG bytes named
    ``.jpg``: an upstream export bug worth seeing, though the picture itself is fine), else None."""
    ext = name.rsplit(".", 1)[-1].lower() if "." in name else ""
    if EXTENSIONS.get(ext, img.format) != img.format:
        return f"{name} holds a {img.format} image"
    return None


def _to_png(img: Image.Image, size: int) -> bytes:
    out = io.BytesIO()
    fit_square(to_rgb(img), size).save(out, "PNG", optimize=False)
    return out.getvalue()


def normalise_image(data: bytes, name: str, size: int) -> tuple[bytes, int, int]:
    """Raw file bytes -> PNG bytes of an RGB ``size`` x ``size`` image, plus the original size.
    Images are accepted by content, whatever their extension says."""
    img = decode_image(data, name)
    return _to_png(img, size), img.size[0], img.size[1]


def _work(task: tuple[str, bytes, int]) -> ImageResult:
    key, data, size = task
    name = key.rsplit("/", 1)[-1]
    try:
        img = decode_image(data, name)
        return ImageResult(
            key, _to_png(img, size), img.size[0], img.size[1], None, None, extension_mismatch(name, img)
        )
    except ImageRejected as exc:
        return ImageResult(key, None, 0, 0, exc.reason, str(exc))


def content_hash(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@dataclass
class ImageResult:
    """One file's outcome: ``png`` when accepted (``warning`` when its name misleads), ``reason`` and
    ``detail`` when rejected."""

    key: str
    png: bytes | None
    width: int
    height: int
    reason: str | None
    detail: str | None
    warning: str | None = None


def normalise_many(
    files: list[tuple[str, bytes]],
    size: int,
    workers: int,
    progress: Callable[[int, int], None] | None = None,
) -> list[ImageResult]:
    """Normalise many files on ``workers`` threads (Pillow releases the GIL while it decodes,
    resizes and encodes, so threads use every core without the start-up cost of processes).
    The output is re-encoded from pixels alone: no metadata (EXIF, GPS, ICC, text) survives."""
    tasks = [(key, data, size) for key, data in files]
    results: list[ImageResult] = []
    with ThreadPoolExecutor(max(1, workers)) as pool:
        for n, out in enumerate(pool.map(_work, tasks), 1):
            results.append(out)
            if progress and (n % 500 == 0 or n == len(tasks)):
                progress(n, len(tasks))
    return results
