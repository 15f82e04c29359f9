"""Occlusion sensitivity of a pair's similarity: which part of face A carries the match.

A grey square slides over face A (side `patch`, step `stride`); each position's drop in cosine
similarity to face B, averaged over the positions that cover a pixel, is the map. The five
landmark patches (eyes, nose, mouth corners: the alignment template's points, the patches ARFace
drops) are also greyed one at a time. Only embeddings are needed, so it explains any model,
pretrained peers included, where Grad-CAM needs gradients. All occluded copies go through the
model in batches: a 112 px face with a 16 px patch at stride 8 is 169 copies.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Dict, Tuple

import numpy as np
import plotly.graph_objects as go
import torch
from plotly.subplots import make_subplots

from zoo.backbones import INPUT_SIZE, TEMPLATE_LANDMARKS

from .images import FaceLike, as_face, overlay, png_data_uri

GREY = 128  # the occluder: mid-grey, which the zoo's input scaling maps to about 0
LANDMARK_NAMES = ("left eye", "right eye", "nose", "left mouth corner", "right mouth corner")
LANDMARK_RADIUS = 16  # half the side of each landmark patch, in pixels at 112


@dataclass
class Occlusion:
    """How much face A's similarity to face B drops when each part of A is greyed out."""

    model: str
    patch: int
    stride: int
    similarity: float  # the unoccluded pair
    drops: np.ndarray  # (rows, cols): similarity drop per patch position
    map: np.ndarray  # (112, 112): the mean drop of the positions covering each pixel
    landmarks: Dict[str, float]  # landmark patch -> similarity drop
    face: np.ndarray  # face A, uint8
    seconds: float


def _embed(model, faces: np.ndarray, batch_size: int) -> np.ndarray:
    preprocess = model.preprocess
    out = [model.embed(preprocess(faces[i:i + batch_size])).float().numpy() for i in range(0, len(faces), batch_size)]
    embeddings = np.concatenate(out)
    return embeddings / np.linalg.norm(embeddings, axis=1, keepdims=True)


def landmark_boxes(radius: int = LANDMARK_RADIUS) -> Dict[str, Tuple[int, int, int, int]]:
    """(x0, y0, x1, y1) of each landmark patch, clipped to the face."""
    return {name: (max(0, round(x) - radius), max(0, round(y) - radius), min(INPUT_SIZE, round(x) + radius),
                   min(INPUT_SIZE, round(y) + radius)) for name, (x, y) in zip(LANDMARK_NAMES, TEMPLATE_LANDMARKS)}


@torch.no_grad()
def occlusion_sensitivity(model, face_a: FaceLike, face_b: FaceLike, patch: int = 16, stride: int = 8,
                          batch_size: int = 64) -> Occlusion:
    """Slide a grey `patch` over face A in steps of `stride` and measure the similarity to B."""
    if not 2 <= patch <= INPUT_SIZE // 2:
        raise ValueError(f"patch must be 2 to {INPUT_SIZE // 2} pixels, got {patch}")
    if not 1 <= stride <= patch:
        raise ValueError(f"stride must be 1 to the patch size ({patch}), got {stride}")
    start = time.perf_counter()
    face, other = as_face(face_a), as_face(face_b)
    corners = list(range(0, INPUT_SIZE - patch + 1, stride))
    copies = [face, other]
    for y in corners:
        for x in corners:
            occluded = face.copy()
            occluded[y:y + patch, x:x + patch] = GREY
            copies.append(occluded)
    boxes = landmark_boxes()
    for x0, y0, x1, y1 in boxes.values():
        occluded = face.copy()
        occluded[y0:y1, x0:x1] = GREY
        copies.append(occluded)
    embeddings = _embed(model, np.stack(copies), batch_size)
    reference = embeddings[1]
    similarity = float(embeddings[0] @ reference)
    scores = embeddings[2:] @ reference
    grid, landmark_scores = scores[:len(corners) ** 2], scores[len(corners) ** 2:]
    drops = (similarity - grid).reshape(len(corners), len(corners))
    total, count = np.zeros((INPUT_SIZE, INPUT_SIZE)), np.zeros((INPUT_SIZE, INPUT_SIZE))
    for r, y in enumerate(corners):
        for c, x in enumerate(corners):
            total[y:y + patch, x:x + patch] += drops[r, c]
            count[y:y + patch, x:x + patch] += 1
    pixel_map = np.where(count > 0, total / np.maximum(count, 1), 0.0)
    landmarks = {name: float(similarity - s) for name, s in zip(boxes, landmark_scores)}
    return Occlusion(getattr(model, "name", type(model).__name__), patch, stride, similarity, drops,
                     pixel_map.astype(np.float32), landmarks, face, time.perf_counter() - start)


def occlusion_figure(data: Occlusion) -> go.Figure:
    """Face A with the drop map over it (red: greying this out lowers the similarity most), and
    the drop for each landmark patch as bars."""
    limit = max(float(np.abs(data.map).max()), 1e-6)
    image = overlay(data.face, data.map, "RdBu_r", 0.6, (-limit, limit))
    figure = make_subplots(rows=1, cols=2, column_widths=[0.5, 0.5], subplot_titles=(
        f"similarity drop when greyed ({data.patch} px patch, stride {data.stride})",
        "drop per landmark patch"))
    figure.add_layout_image(dict(source=png_data_uri(image), xref="x", yref="y", x=0, y=0, sizex=INPUT_SIZE,
                                 sizey=INPUT_SIZE, sizing="stretch", layer="below"))
    figure.add_trace(go.Heatmap(z=data.map, colorscale="RdBu_r", zmin=-limit, zmax=limit, opacity=0.0,
                                colorbar=dict(title="drop", x=0.45),
                                hovertemplate="x %{x}, y %{y}: drop %{z:.4f}<extra></extra>"), row=1, col=1)
    figure.add_trace(go.Bar(x=list(data.landmarks), y=list(data.landmarks.values()), marker_color="#c0392b",
                            hovertemplate="%{x}: drop %{y:.4f}<extra></extra>", showlegend=False), row=1, col=2)
    figure.update_xaxes(range=[0, INPUT_SIZE], showgrid=False, visible=False, row=1, col=1)
    figure.update_yaxes(range=[INPUT_SIZE, 0], showgrid=False, visible=False, scaleanchor="x", row=1, col=1)
    figure.update_yaxes(title="cosine similarity drop", row=1, col=2)
    figure.update_layout(title=f"{data.model}: what face A's match rests on (similarity {data.similarity:.3f})",
                         template="plotly_white", height=460)
    return figure
