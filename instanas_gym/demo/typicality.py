"""How far an image is from a data set: the demo's warning for uploads unlike anything the model saw.

A classifier answers every image with one of its classes, often confidently: on the bundled model a
blank image reads as "Bag, 99%", and the softmax, the largest logit and the energy score all stay
inside the test split's range for it. So the score looks at the pixels instead, against the test
split (``images``), with two checks, each scaled so that 1 is where 1% of the test images lie:

* **unlike the pixels**: the root mean square, over pixels, of the image's z-score against the
  test images' per-pixel mean and standard deviation (floored at :data:`MIN_SPREAD` of 255, so that
  pixels that are always black do not blow up), divided by its 99th percentile over the test images;
* **too little contrast**: the 1st percentile of the test images' own pixel standard deviation,
  divided by the image's (a blank or almost uniform image shows nothing to classify).

The score is the larger of the two, capped at :data:`MAX_SCORE`; above 1 the image is *far* from the
data set. About 2% of the test images score above 1 themselves.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

#: Smallest per-pixel standard deviation the z-score divides by (0-255 scale).
MIN_SPREAD = 8.0
#: The test images' share beyond each check's threshold.
TAIL = 0.01
#: Largest score reported (a uniform image's contrast ratio is unbounded).
MAX_SCORE = 100.0


@dataclass(frozen=True)
class Typicality:
    """The pixel statistics of a data set's test split and the thresholds of the two checks."""

    mean: np.ndarray
    """Per-pixel mean (H * W * C,)."""
    spread: np.ndarray
    """Per-pixel standard deviation, floored at :data:`MIN_SPREAD`."""
    z_threshold: float
    """The 1 - TAIL quantile of the test images' RMS z-score."""
    contrast_threshold: float
    """The TAIL quantile of the test images' pixel standard deviation."""

    @classmethod
    def fit(cls, images: np.ndarray, chunk: int = 2000) -> Typicality:
        """The statistics of uint8 ``images`` (N, H, W, C)."""
        x = np.asarray(images).reshape(len(images), -1)
        mean = x.mean(0, dtype=np.float64)
        spread = np.maximum(x.std(0, dtype=np.float64), MIN_SPREAD)
        parts = range(0, len(x), chunk)
        z = np.concatenate([_rms_z(x[i : i + chunk], mean, spread) for i in parts])
        contrast = np.concatenate([x[i : i + chunk].std(1, dtype=np.float64) for i in parts])
        return cls(mean, spread, float(np.quantile(z, 1 - TAIL)), float(np.quantile(contrast, TAIL)))

    def score(self, image: np.ndarray) -> dict[str, float | bool]:
        """``image`` (uint8, one of the data set's shape) against the test split: ``score`` (above 1:
        far), ``far``, and the two checks' ratios ``pixels`` and ``contrast``."""
        x = np.asarray(image, np.float64).reshape(1, -1)
        pixels = float(_rms_z(x, self.mean, self.spread)[0]) / self.z_threshold
        contrast = self.contrast_threshold / max(float(x.std()), self.contrast_threshold / MAX_SCORE)
        score = min(max(pixels, contrast), MAX_SCORE)
        return {"score": score, "far": score > 1, "pixels": min(pixels, MAX_SCORE), "contrast": contrast}


def _rms_z(x: np.ndarray, mean: np.ndarray, spread: np.ndarray) -> np.ndarray:
    return np.sqrt((((x - mean) / spread) ** 2).mean(1))
