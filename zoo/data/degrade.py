"""Named image degradations, applied to the aligned 112x112 crop identically for every model.

A condition is a short name so results and figures can key on it:
- `clean` - the crop as aligned;
- `blurS` - Gaussian blur with sigma S pixels at 112 px (S may be fractional, e.g. `blur1.5`),
  kernel side 2*ceil(3*S)+1, reflected borders (cv2.GaussianBlur's default);
- `lowresN` - bilinear resize down to NxN and back up to 112x112 (a low-resolution camera).
`blur0` is the clean crop, so a blur sweep 0,2,4 includes its own baseline.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass

import cv2
import numpy as np

BLUR_LEVELS = (0, 1, 2, 3, 4, 6)
_PATTERN = re.compile(r"^(clean|blur(\d+(?:\.\d+)?)|lowres(\d+))$")


def gaussian_blur(image: np.ndarray, sigma: float) -> np.ndarray:
    """Blur with standard deviation `sigma` (pixels of this image); sigma 0 returns a copy."""
    if sigma <= 0:
        return image.copy()
    side = 2 * math.ceil(3 * sigma) + 1
    return cv2.GaussianBlur(image, (side, side), sigmaX=sigma, sigmaY=sigma)


def low_resolution(image: np.ndarray, size: int) -> np.ndarray:
    """Bilinear down to size x size and back to the original size (information is lost)."""
    height, width = image.shape[:2]
    if size >= min(height, width):
        return image.copy()
    small = cv2.resize(image, (size, size), interpolation=cv2.INTER_LINEAR)
    return cv2.resize(small, (width, height), interpolation=cv2.INTER_LINEAR)


@dataclass(frozen=True)
class Degradation:
    """A named test condition; `apply` maps an HxWx3 uint8 crop to a degraded copy."""

    name: str
    kind: str
    amount: float

    def apply(self, image: np.ndarray) -> np.ndarray:
        if self.kind == "blur":
            return gaussian_blur(image, self.amount)
        if self.kind == "lowres":
            return low_resolution(image, int(self.amount))
        return image.copy()

    def apply_batch(self, images: np.ndarray) -> np.ndarray:
        """(N,H,W,3) uint8 -> degraded copy; the clean condition costs no copy per image."""
        if self.kind == "clean" or (self.kind == "blur" and self.amount <= 0):
            return images
        return np.stack([self.apply(image) for image in images])


def _format(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else str(value)


def parse_degradation(name: str) -> Degradation:
    """`clean`, `blur2`, `blur1.5`, `lowres28` -> Degradation; bad names list the choices."""
    match = _PATTERN.match(name.strip().lower())
    if not match:
        raise ValueError(f"unknown degradation {name!r}; use clean, blurSIGMA (e.g. blur2) or lowresSIZE (e.g. lowres28)")
    if match.group(2) is not None:
        sigma = float(match.group(2))
        return Degradation(f"blur{_format(sigma)}", "blur", sigma)
    if match.group(3) is not None:
        size = int(match.group(3))
        if size < 1:
            raise ValueError(f"low-resolution size must be at least 1, got {size}")
        return Degradation(f"lowres{size}", "lowres", size)
    return Degradation("clean", "clean", 0.0)
