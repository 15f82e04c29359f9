"""Faces in, maps onto faces: the one place that converts images and overlays maps.

Analyses take aligned faces as HxWx3 uint8 RGB arrays (what `zoo.data` produces) or as
model-ready float tensors in [-1, 1]; everything is converted here, so every figure shows
the pixels the model saw. Maps are resized onto the 112x112 face bilinearly when they are
continuous (activations, attention) and with `nearest-exact` when each cell is a category
(the channel a scale map picked), so a category never blends into a value it does not hold.
"""
from __future__ import annotations

import base64
import io
from functools import lru_cache
from typing import Optional, Sequence, Tuple, Union

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from plotly.colors import get_colorscale, hex_to_rgb, unlabel_rgb

from zoo.backbones import INPUT_SIZE
from zoo.backbones import from_input

FaceLike = Union[np.ndarray, torch.Tensor]


def as_faces(faces: Union[FaceLike, Sequence[np.ndarray]]) -> np.ndarray:
    """(N,112,112,3) uint8 from uint8 faces (one or a batch) or float tensors in [-1, 1]."""
    if isinstance(faces, torch.Tensor):
        tensor = faces.detach().cpu()
        if tensor.dim() == 3:
            tensor = tensor[None]
        if tensor.dim() != 4 or tensor.shape[1:] != (3, INPUT_SIZE, INPUT_SIZE) or not tensor.is_floating_point():
            raise ValueError(f"expected a float (N, 3, {INPUT_SIZE}, {INPUT_SIZE}) tensor in [-1, 1], "
                             f"got {tuple(tensor.shape)} {tensor.dtype}")
        return from_input(tensor)
    array = np.asarray(faces) if not isinstance(faces, (list, tuple)) else np.stack([np.asarray(f) for f in faces])
    if array.ndim == 3:
        array = array[None]
    if array.ndim != 4 or array.shape[1:] != (INPUT_SIZE, INPUT_SIZE, 3) or array.dtype != np.uint8:
        raise ValueError(f"expected aligned faces as ({INPUT_SIZE}, {INPUT_SIZE}, 3) uint8 RGB arrays "
                         f"(see zoo.data.FaceAligner), got shape {array.shape} dtype {array.dtype}")
    return np.ascontiguousarray(array)


def as_face(face: FaceLike) -> np.ndarray:
    """One aligned face as (112,112,3) uint8; a batch of more than one is an error."""
    faces = as_faces(face)
    if len(faces) != 1:
        raise ValueError(f"expected one face, got a batch of {len(faces)}")
    return faces[0]


def resize_map(values: Union[np.ndarray, torch.Tensor], size: int = INPUT_SIZE,
               categorical: bool = False) -> np.ndarray:
    """(h,w) or (N,h,w) map -> the same at size x size, float32."""
    tensor = torch.as_tensor(np.asarray(values, dtype=np.float32))
    squeeze = tensor.dim() == 2
    tensor = tensor[None, None] if squeeze else tensor[:, None]
    if categorical:
        resized = F.interpolate(tensor, size=(size, size), mode="nearest-exact")
    else:
        resized = F.interpolate(tensor, size=(size, size), mode="bilinear", align_corners=False)
    out = resized[:, 0].numpy()
    return out[0] if squeeze else out


@lru_cache(maxsize=32)
def colormap_lut(name: str) -> np.ndarray:
    """(256, 3) uint8 lookup table of a plotly colour scale, so overlays and colour bars agree."""
    scale = get_colorscale(name)
    positions = np.array([p for p, _ in scale], dtype=np.float64)
    colours = np.array([hex_to_rgb(c) if c.startswith("#") else unlabel_rgb(c) for _, c in scale], dtype=np.float64)
    steps = np.linspace(0.0, 1.0, 256)
    lut = np.stack([np.interp(steps, positions, colours[:, k]) for k in range(3)], axis=1)
    return np.round(lut).clip(0, 255).astype(np.uint8)


def overlay(face: np.ndarray, values: np.ndarray, colormap: str = "viridis", alpha: float = 0.5,
            value_range: Optional[Tuple[float, float]] = None, categorical: bool = False) -> np.ndarray:
    """The face with `values` (any resolution, resized onto it) blended in colour: uint8 RGB.

    `value_range` fixes the colour scale (so several panels compare); default: the map's range.
    """
    face = as_face(face)
    values = np.asarray(values, dtype=np.float32)
    if values.ndim != 2:
        raise ValueError(f"a map to overlay must be 2-D (h, w), got shape {values.shape}")
    if values.shape != face.shape[:2]:
        values = resize_map(values, face.shape[0], categorical)
    low, high = value_range if value_range is not None else (float(values.min()), float(values.max()))
    scaled = np.zeros_like(values) if high <= low else (values - low) / (high - low)
    colours = colormap_lut(colormap)[np.round(np.clip(scaled, 0.0, 1.0) * 255).astype(np.int64)]
    blended = (1.0 - alpha) * face.astype(np.float32) + alpha * colours.astype(np.float32)
    return np.round(blended).clip(0, 255).astype(np.uint8)


def thumbnail(face: np.ndarray, size: int = 48) -> np.ndarray:
    """A small copy of a face (area resampling), uint8 RGB."""
    return np.asarray(Image.fromarray(face).resize((size, size), Image.BOX))


def png_data_uri(image: np.ndarray) -> str:
    """A uint8 RGB image as a lossless `data:image/png;base64,...` URI (figure panels)."""
    buffer = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(image)).save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def jpeg_data_uri(image: np.ndarray, quality: int = 85) -> str:
    """A `data:image/jpeg;base64,...` URI: a third of the PNG's size for a 48 px face
    thumbnail, which matters when a figure carries a thousand of them."""
    buffer = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(image)).save(buffer, format="JPEG", quality=quality)
    return "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")
