"""Scale maps: which learnt scale responds most at each location, and how blur moves it.

A model shows them when its method declares "scale-map" and gives `scale_layers()` (layer ->
(conv, t)) and, per layer, `explain()` maps "scale_map/LAYER" and values "t/LAYER" (SCAN's
SAC layers). A scale map holds, per location of one layer, the t of the channel with the
strongest response. Blurring the face removes fine structure, so if
the learnt scales mean what the paper says, the map should shift towards larger t as the
blur grows; `mean_t` per blur level is that claim as one number per level.

Each cell holds the t of the channel it picked (a category, not a smooth quantity), so
maps are resized onto the face with nearest-exact, never blended.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import List, Optional, Sequence

import numpy as np
import plotly.graph_objects as go

from zoo import FaceModel
from zoo.data import BLUR_LEVELS, gaussian_blur

from .common import AnalysisError, register, require
from .figures import add_face, add_map, grid
from .images import FaceLike, as_face, resize_map

PREFIX = "scale_map/"
# Default layer: the deepest whose map still has this many cells per side.
DEFAULT_MIN_SIDE = 14
register("scale-map")


@dataclass
class ScaleMaps:
    """Scale maps of one face at several blur levels (sigma 0 is the face as given)."""

    model: str
    layer: str
    layers: List[str]  # every SAC layer of the model, input to output
    sigmas: np.ndarray  # (K,) blur sigma in pixels at 112 px
    faces: np.ndarray  # (K, 112, 112, 3) uint8: the face at each blur level
    native: np.ndarray  # (K, h, w): dominant t at the layer's resolution
    t_maps: np.ndarray  # (K, 112, 112): `native` resized onto the face (nearest-exact)
    mean_t: np.ndarray  # (K,) mean dominant t over the layer's locations
    layer_t: np.ndarray  # (C,) the layer's learnt t, every value a map can hold

    json_skip = ("faces", "t_maps")


def scale_layers(model: FaceModel) -> List[str]:
    """The SAC layers a scale map can be drawn for, input to output."""
    require(model, "scale-map", "scale maps")
    return list(model.scale_layers())


def scale_maps(model: FaceModel, face: FaceLike, layer: Optional[str] = None,
               sigmas: Sequence[float] = (0,)) -> ScaleMaps:
    """Scale maps of `face` on `layer` (default: the deepest layer at least 14x14) for every
    blur sigma, computed in one batch."""
    layers = scale_layers(model)
    if layer is not None and layer not in layers:
        raise AnalysisError(f"{model.name} has no SAC layer {layer!r}; its layers: {', '.join(layers)}")
    if not sigmas:
        raise AnalysisError("no blur levels given")
    face = as_face(face)
    faces = np.stack([gaussian_blur(face, float(s)) for s in sigmas])
    explanation = model.explain(model.preprocess(faces))
    if layer is None:
        sides = {k: min(explanation.maps[PREFIX + k].shape[-2:]) for k in layers}
        layer = ([k for k in layers if sides[k] >= DEFAULT_MIN_SIDE] or layers[:1])[-1]
    native = explanation.maps[PREFIX + layer].cpu().numpy().astype(np.float64)
    return ScaleMaps(model.name, layer, layers, np.asarray(sigmas, dtype=np.float64), faces, native,
                     resize_map(native, categorical=True), native.mean(axis=(1, 2)),
                     explanation.values["t/" + layer].cpu().numpy().astype(np.float64))


def scale_sweep(model: FaceModel, face: FaceLike, layer: Optional[str] = None,
                sigmas: Sequence[float] = BLUR_LEVELS) -> ScaleMaps:
    """Scale maps of `face` blurred at sigmas 0, 1, 2, 3, 4, 6 (zoo.data.BLUR_LEVELS)."""
    return scale_maps(model, face, layer, sigmas)


def scale_maps_figure(data: ScaleMaps, colormap: str = "viridis") -> go.Figure:
    """The face, then the map at each blur level (one colour scale: the layer's t range), and
    the mean dominant t against sigma when there are several levels."""
    count = len(data.sigmas)
    cols = count + 1
    titles = ["face"] + [f"blur sigma {s:g}" for s in data.sigmas]
    title = f"{data.model}: dominant learnt scale t on {data.layer}"
    if count > 1:  # a second row, as wide as the faces, for the mean t against sigma
        fig = grid(2, cols, titles + ["mean dominant t vs blur sigma"], title, row_heights=[0.55, 0.45],
                   specs=[[{}] * cols, [{"colspan": cols}] + [None] * (cols - 1)])
        fig.add_trace(go.Scatter(x=data.sigmas, y=data.mean_t, mode="lines+markers", name="mean t",
                                 showlegend=False, hovertemplate="sigma %{x:g}: mean t %{y:.4f}<extra></extra>"),
                      row=2, col=1)
        fig.update_xaxes(title_text="blur sigma (px)", row=2, col=1)
        fig.update_yaxes(title_text="mean dominant t", row=2, col=1)
        fig.update_layout(height=fig.layout.height + 60)
    else:
        fig = grid(1, cols, titles, title)
    add_face(fig, data.faces[0], 1, 1, "face")
    t_range = (float(data.layer_t.min()), float(data.layer_t.max()))
    for k in range(count):
        add_map(fig, data.faces[k], data.native[k], 1, k + 2, name=f"t (sigma {data.sigmas[k]:g})",
                colormap=colormap, value_range=t_range, categorical=True, showscale=k == 0, colorbar_title="t")
    return fig
