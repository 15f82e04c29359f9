"""Plotly building blocks shared by the analyses' figures: faces with maps on them.

A map panel is the face with the map blended in (`images.overlay`, embedded as a PNG so a
figure with dozens of faces stays small) under an invisible heatmap of the map at its own
resolution, placed on the face's pixel grid: hovering shows the map's value there, and the
heatmap carries the colour bar.
"""
from __future__ import annotations

import math
from typing import Optional, Sequence, Tuple

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from .images import overlay, png_data_uri

PANEL_PX = 190


def grid(rows: int, cols: int, titles: Sequence[str], title: str, **kwargs) -> go.Figure:
    """Subplots sized for face panels, with a figure title."""
    fig = make_subplots(rows=rows, cols=cols, subplot_titles=list(titles),
                        horizontal_spacing=kwargs.pop("horizontal_spacing", 0.02),
                        vertical_spacing=kwargs.pop("vertical_spacing", 0.3 / max(rows, 1)), **kwargs)
    fig.update_layout(title=title, width=max(420, PANEL_PX * cols + 160), height=PANEL_PX * rows + 110,
                      margin=dict(l=20, r=20, t=80, b=20), plot_bgcolor="white")
    fig.update_annotations(font_size=11)
    return fig


def add_face(fig: go.Figure, image: np.ndarray, row: int, col: int, name: str = "") -> None:
    """An RGB image in a subplot, pixel (0, 0) top-left, no axes."""
    fig.add_trace(go.Image(source=png_data_uri(image), name=name, hoverinfo="skip"), row=row, col=col)
    fig.update_xaxes(visible=False, range=[-0.5, image.shape[1] - 0.5], row=row, col=col)
    fig.update_yaxes(visible=False, range=[image.shape[0] - 0.5, -0.5], scaleanchor=_x_anchor(fig, row, col),
                     row=row, col=col)


def add_map(fig: go.Figure, face: np.ndarray, values: np.ndarray, row: int, col: int, *, name: str,
            colormap: str = "viridis", value_range: Optional[Tuple[float, float]] = None,
            categorical: bool = False, showscale: bool = False, colorbar_title: str = "",
            alpha: float = 0.5) -> None:
    """The face with `values` (h, w) overlaid, plus a hover layer at the map's resolution."""
    values = np.asarray(values, dtype=np.float32)
    low, high = value_range if value_range is not None else (float(values.min()), float(values.max()))
    add_face(fig, overlay(face, values, colormap, alpha, (low, high), categorical), row, col, name)
    size_y, size_x = face.shape[0] / values.shape[0], face.shape[1] / values.shape[1]
    colorbar = dict(title=colorbar_title, len=0.8, thickness=12)
    fig.add_trace(go.Heatmap(z=values, x0=size_x / 2 - 0.5, dx=size_x, y0=size_y / 2 - 0.5, dy=size_y,
                             colorscale=colormap, zmin=low, zmax=high if high > low else low + 1e-6,
                             opacity=0.0, showscale=showscale, colorbar=colorbar, name=name,
                             hovertemplate=f"{name}<br>x %{{x:.0f}}, y %{{y:.0f}}: %{{z:.4g}}<extra></extra>"),
                  row=row, col=col)


def wrap(count: int, max_cols: int) -> Tuple[int, int]:
    """(rows, cols) for `count` panels, at most `max_cols` per row."""
    cols = max(1, min(count, max_cols))
    return math.ceil(count / cols), cols


def _x_anchor(fig: go.Figure, row: int, col: int) -> str:
    """The x axis id of subplot (row, col), so its y axis keeps pixels square."""
    return fig.get_subplot(row, col).yaxis.anchor
