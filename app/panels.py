"""The Explain tab's panels of a model's own maps: one renderer per analysis a method declares.

A renderer is registered under the analysis name it draws (`FaceModel.analyses`) and turns
one aligned face into (image, caption) panels, so the app never asks which method a model
is: a new method's panels are one function here. `enlarge` is the app's upscaling of a
112-pixel image; outlines are drawn after it, at the size they are seen.
"""
from __future__ import annotations

from typing import Callable, Dict, List, Optional, Tuple

import cv2
import numpy as np

import analysis
from zoo import FaceModel

Captioned = Tuple[np.ndarray, str]
Enlarge = Callable[[np.ndarray], np.ndarray]
Renderer = Callable[[FaceModel, np.ndarray, Enlarge], List[Captioned]]
RENDERERS: Dict[str, Renderer] = {}
KEPT, DROPPED = (40, 200, 60), (230, 40, 40)  # RGB outlines of the patch policy


def renders(name: str) -> Callable[[Renderer], Renderer]:
    """Register a renderer of the analysis `name`."""
    def decorator(render: Renderer) -> Renderer:
        RENDERERS[name] = render
        return render
    return decorator


def own_panels(model: FaceModel, face: np.ndarray, enlarge: Enlarge) -> Optional[List[Captioned]]:
    """The panels of the first analysis `model` declares that has a renderer; None when none has
    (a plain model). An analysis the model cannot give on this face raises AnalysisError."""
    for name in model.analyses:
        if name in RENDERERS:
            return RENDERERS[name](model, face, enlarge)
    return None


@renders("scale-map")
def scale_map(model: FaceModel, face: np.ndarray, enlarge: Enlarge) -> List[Captioned]:
    data = analysis.scale_maps(model, face)
    low, high = float(data.layer_t.min()), float(data.layer_t.max())
    return [(enlarge(analysis.overlay(face, data.native[0], "Viridis", 0.55, (low, high), categorical=True)),
             f"scale map: dominant t on {data.layer} (mean {data.mean_t[0]:.3f}, range {low:.3f}-{high:.3f})")]


@renders("residual-attention")
def residual_attention(model: FaceModel, face: np.ndarray, enlarge: Enlarge) -> List[Captioned]:
    data = analysis.residual_attention(model, face)
    out = [(enlarge(analysis.overlay(face, data.after[-1], "RdBu_r", 0.55)),
            f"features after self residual attention, stage {data.stages[-1]}")]
    if data.spatial:
        out.append((enlarge(analysis.overlay(face, data.spatial_on_face[-1], "Inferno", 0.6)),
                    f"spatial attention of the centre pixel, stage {data.stages[-1]}"))
    return out


@renders("pyramid-masks")
def pyramid_masks(model: FaceModel, face: np.ndarray, enlarge: Enlarge) -> List[Captioned]:
    data = analysis.pyramid_masks(model, face)
    layer = data.native.shape[0] - 1
    return [(enlarge(analysis.overlay(face, data.native[layer, 0, b], "Viridis", 0.55, (0.0, 1.0))),
             f"pyramid attention mask: layer {layer}, finest scale, branch {b}")
            for b in range(data.native.shape[2])]


@renders("patch-policy")
def patch_policy(model: FaceModel, face: np.ndarray, enlarge: Enlarge) -> List[Captioned]:
    data = analysis.patch_policy(model, face)
    kept = [n for n, k in zip(data.patch_names, data.kept) if k]
    dropped = [n for n, k in zip(data.patch_names, data.kept) if not k]
    image = enlarge(data.masked_face)
    scale = image.shape[1] / data.masked_face.shape[1]
    for (x0, y0, x1, y1), keep in zip(data.boxes, data.kept):
        cv2.rectangle(image, (round(x0 * scale), round(y0 * scale)), (round(x1 * scale) - 1, round(y1 * scale) - 1),
                      KEPT if keep else DROPPED, 2)
    return [(image, f"patch policy: kept {', '.join(kept) or 'none'}; dropped {', '.join(dropped) or 'none'} "
                    "(green: kept, red: dropped)")]
