"""An uploaded file as an image of the data set: decoded by Pillow, checked, converted to the data
set's channels and size.

Errors are :class:`UploadError` with the HTTP status the server answers with: 400 (empty or
damaged file), 413 (too many pixels), 415 (not an image Pillow can read).
"""

from __future__ import annotations

import io
import warnings
from typing import Literal

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

#: Most pixels an uploaded image may have (a decompression bomb is refused before it is decoded).
MAX_PIXELS = 40_000_000

Invert = Literal["auto", "yes", "no"]


class UploadError(ValueError):
    """A file that cannot be classified; ``status`` is the HTTP status that says why."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


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
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(data))
            if img.width * img.height > MAX_PIXELS:
                raise UploadError(f"the image has {img.width} x {img.height} pixels; at most {MAX_PIXELS:,} are "
                                  "accepted", 413)
            img.load()
    except UploadError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise UploadError(f"the image has too many pixels (at most {MAX_PIXELS:,} are accepted)", 413) from None
    except UnidentifiedImageError:
        raise UploadError("the file is not an image Pillow can read (PNG, JPEG, GIF, BMP, WebP, TIFF, ...)", 415) from None
    except (OSError, SyntaxError, ValueError) as err:
        raise UploadError(f"the image is damaged or truncated ({err})", 400) from None
    img = ImageOps.exif_transpose(img)
    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        rgba = img.convert("RGBA")
        img = Image.alpha_composite(Image.new("RGBA", rgba.size, (255, 255, 255, 255)), rgba)
    img = img.convert("L" if channels == 1 else "RGB")
    pixels = np.asarray(img)
    border = np.concatenate([pixels[0], pixels[-1], pixels[:, 0], pixels[:, -1]])
    fill = tuple(int(v) for v in np.median(border.reshape(len(border), -1), axis=0))
    img = ImageOps.pad(img, (width, height), Image.Resampling.LANCZOS, color=fill[0] if channels == 1 else fill)
    out = np.asarray(img, np.uint8).reshape(height, width, channels)
    inverted = invert == "yes" or (invert == "auto" and channels == 1 and float(border.mean()) > 127)
    return (255 - out if inverted else out).copy(), inverted
