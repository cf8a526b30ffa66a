"""Images in and out of the demo: an uploaded file decoded by Pillow, checked and converted to the
data set's channels and size, and an image as PNG bytes.

Errors are :class:`UploadError` with the HTTP status the server answers with: 400 (empty or
damaged file), 413 (too many pixels), 415 (not an image Pillow can read), 503 (too many large
uploads at once, for longer than :data:`DECODE_WAIT_S`).

Memory: a file of a few hundred kilobytes can hold tens of millions of pixels. Such an image is
never copied at full size: a JPEG is decoded at a reduced scale (Pillow's ``draft``); any image is
then converted (transparency laid on white, grey or RGB) and reduced by an integer factor
(``Image.reduce``) a strip of :data:`STRIP_PIXELS` at a time, down to a few times the data set's
size, before rotation, padding and the final resize. At most :data:`MAX_DECODES` uploads decode at
once, and the memory they freed is handed back to the operating system after each
(:func:`~instanas_gym.utils.runtime.release_memory`).
"""

from __future__ import annotations

import io
import threading
import warnings
from typing import Literal

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from instanas_gym.utils.runtime import release_memory

#: Most pixels an uploaded image may have (a decompression bomb is refused before it is decoded).
MAX_PIXELS = 40_000_000
#: Uploads decoded at once; each holds at most what its format decodes to (4 bytes per pixel, 160 MB at
#: MAX_PIXELS, for colour; 1 for grey or a palette) and a strip while it decodes.
MAX_DECODES = 2
#: Seconds an upload waits for its turn to decode before the server answers 503.
DECODE_WAIT_S = 30.0
#: Pixels per strip the decoded image is converted and reduced in.
STRIP_PIXELS = 1 << 20
_decoding = threading.BoundedSemaphore(MAX_DECODES)

Invert = Literal["auto", "yes", "no"]


class UploadError(ValueError):
    """A request the demo cannot answer (a bad file or test-image index); ``status`` is the HTTP status that
    says why."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


def png_bytes(image: np.ndarray) -> bytes:
    """A uint8 image (H, W, C), C = 1 or 3, as PNG bytes."""
    image = np.asarray(image, np.uint8)
    buf = io.BytesIO()
    Image.fromarray(image[..., 0] if image.shape[-1] == 1 else image).save(buf, format="PNG")
    return buf.getvalue()


def _open(data: bytes, side: int, grey: bool) -> Image.Image:
    """The image in ``data``, decoded (a JPEG at the smallest scale that keeps ``side`` pixels)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(data))
            if img.width * img.height > MAX_PIXELS:
                raise UploadError(f"the image has {img.width} x {img.height} pixels; at most {MAX_PIXELS:,} are "
                                  "accepted", 413)
            img.draft("L" if grey else "RGB", (side, side))  # JPEG only: 1/2 to 1/8 of the size; others ignore it
            img.load()
    except UploadError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise UploadError(f"the image has too many pixels (at most {MAX_PIXELS:,} are accepted)", 413) from None
    except UnidentifiedImageError:
        raise UploadError("the file is not an image Pillow can read (PNG, JPEG, GIF, BMP, WebP, TIFF, ...)",
                          415) from None
    except (OSError, SyntaxError, ValueError) as err:
        raise UploadError(f"the image is damaged or truncated ({err})", 400) from None
    return img


def _flat(img: Image.Image, mode: str) -> Image.Image:
    """``img`` in ``mode`` ("L" or "RGB"), any transparency laid on white."""
    if "A" in img.mode or "transparency" in img.info:
        rgba = img.convert("RGBA")
        img = Image.alpha_composite(Image.new("RGBA", rgba.size, (255, 255, 255, 255)), rgba)
    return img.convert(mode)


def _reduced(img: Image.Image, side: int, mode: str) -> Image.Image:
    """``img`` in ``mode`` (see :func:`_flat`), its shorter side reduced to ``side`` pixels or more by
    an integer factor, converted and reduced a strip of rows at a time: never a full-size copy."""
    factor = max(1, min(img.width, img.height) // side)
    out = Image.new(mode, (-(-img.width // factor), -(-img.height // factor)))
    rows = factor * max(1, STRIP_PIXELS // (img.width * factor))  # a multiple of the factor
    for top in range(0, img.height, rows):
        strip = _flat(img.crop((0, top, img.width, min(top + rows, img.height))), mode)
        out.paste(strip.reduce(factor) if factor > 1 else strip, (0, top // factor))
    if "exif" in img.info:
        out.info["exif"] = img.info["exif"]  # its orientation, for exif_transpose
    return out


def decode_upload(data: bytes, image_shape: tuple[int, int, int], invert: Invert = "auto") -> tuple[np.ndarray, bool]:
    """The image in ``data`` (any format Pillow reads) as uint8 (H, W, C) of ``image_shape``, and
    whether it was inverted.

    Transparency is laid on white, the photo turned upright by its EXIF orientation, converted to
    grey (C = 1) or RGB (C = 3), padded to a square with its border colour and resized. ``invert``:
    "auto" inverts grey images whose border is bright (a dark garment photographed on a light
    background, where Fashion-MNIST's garments are light on black); "yes" / "no" force it.
    """
    if invert not in ("auto", "yes", "no"):
        raise UploadError(f"invert must be 'auto', 'yes' or 'no', got {invert!r}", 400)
    if not data:
        raise UploadError("the file is empty", 400)
    height, width, channels = image_shape
    if not _decoding.acquire(timeout=DECODE_WAIT_S):
        raise UploadError("the server is busy decoding other large images; try again in a moment", 503)
    try:
        side = 8 * max(height, width)
        img = _reduced(_open(data, side, channels == 1), side, "L" if channels == 1 else "RGB")
        return _to_data_set(img, height, width, channels, invert)
    finally:
        _decoding.release()
        release_memory()


def _to_data_set(img: Image.Image, height: int, width: int, channels: int, invert: Invert) -> tuple[np.ndarray, bool]:
    """A small flat image (see :func:`_reduced`) as the data set's (see :func:`decode_upload`)."""
    img = ImageOps.exif_transpose(img)
    pixels = np.asarray(img)
    border = np.concatenate([pixels[0], pixels[-1], pixels[:, 0], pixels[:, -1]])
    fill = tuple(int(v) for v in np.median(border.reshape(len(border), -1), axis=0))
    img = ImageOps.pad(img, (width, height), Image.Resampling.LANCZOS, color=fill[0] if channels == 1 else fill)
    out = np.asarray(img, np.uint8).reshape(height, width, channels)
    inverted = invert == "yes" or (invert == "auto" and channels == 1 and float(border.mean()) > 127)
    return (255 - out if inverted else out).copy(), inverted
