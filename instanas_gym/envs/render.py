"""Pictures of an (image, mask) pair for ``render_mode="rgb_array"``."""

from __future__ import annotations

import numpy as np

SCALE = 4  # image pixels per input pixel
BOX = 6  # mask square side in pixels
COLOURS = {
    "on": np.array([60, 200, 90], np.uint8),
    "off": np.array([45, 45, 45], np.uint8),
    "fallback": np.array([230, 160, 40], np.uint8),
    "background": np.array([15, 15, 15], np.uint8),
}


def draw(image: np.ndarray, mask: np.ndarray | None, effective: np.ndarray | None = None) -> np.ndarray:
    """The image (H, W, C uint8), upscaled, beside the mask as a 17 x 5 grid (one row per cell).

    Green: selected op; grey: not selected; orange: the fallback op an empty cell runs. No mask
    (before the first step): the grid is all grey.
    """
    img = image if image.shape[-1] == 3 else np.repeat(image, 3, axis=-1)
    img = img.repeat(SCALE, 0).repeat(SCALE, 1)
    rows, cols = (17, 5)
    grid_h, grid_w = rows * BOX, cols * BOX
    height = max(img.shape[0], grid_h) + 4
    canvas = np.empty((height, img.shape[1] + grid_w + 8, 3), np.uint8)
    canvas[:] = COLOURS["background"]
    canvas[2 : 2 + img.shape[0], 2 : 2 + img.shape[1]] = img
    x0 = img.shape[1] + 6
    chosen = np.zeros((rows, cols), bool) if mask is None else np.asarray(mask, bool)
    extra = np.zeros((rows, cols), bool) if effective is None else np.asarray(effective, bool) & ~chosen
    for r in range(rows):
        for c in range(cols):
            colour = COLOURS["on"] if chosen[r, c] else COLOURS["fallback"] if extra[r, c] else COLOURS["off"]
            y, x = 2 + r * BOX, x0 + c * BOX
            canvas[y : y + BOX - 1, x : x + BOX - 1] = colour
    return canvas
