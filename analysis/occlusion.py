"""Occlusion sensitivity of a pair's similarity: which part of face A carries the match.

A grey square slides over face A (side `patch`, step `stride`); each position's drop in cosine
similarity to face B, averaged over the positions that cover a pixel, is the map. The five
landmark patches (eyes, nose, mouth corners: the alignment template's points) are also greyed
one at a time. Only embeddings are needed, so it explains any model, pretrained peers included,
where Grad-CAM needs gradients.

A model whose method drops landmark patches by a learnt policy (the "patch-policy" analysis)
also gets its policy's own view: the mode the policy picks for face A (argmax, as at inference)
and the drop when each of its patches is greyed alone and when all the patches its mode drops are
greyed together, so the policy's choice sits beside what each patch is worth to the match.

Speed: a 112 px face with a 16 px patch at stride 8 is 169 copies. They go in batches of 32
(small enough to stay in the CPU's cache: 30% less CPU time than 64 on the MobileFaceNet zoo)
through a copy of the model with every BatchNorm folded into the convolution before it, under
inference_mode, or through the caller's `embed` (the app passes its runtime's, e.g. onnxruntime,
a third less CPU); and they are spread over one thread per core (torch and onnxruntime release
the GIL), since the user waits for this one request (`bench/occlusion_time.py`).
"""
from __future__ import annotations

import copy
import os
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
import plotly.graph_objects as go
import torch
from plotly.subplots import make_subplots
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

from zoo import FaceModel
from zoo.backbones import INPUT_SIZE, TEMPLATE_LANDMARKS

from .attention_maps import patch_policy
from .common import declared
from .images import FaceLike, as_face, overlay, png_data_uri

GREY = 128  # the occluder: mid-grey, which the zoo's input scaling maps to about 0
LANDMARK_NAMES = ("left eye", "right eye", "nose", "left mouth corner", "right mouth corner")
LANDMARK_RADIUS = 16  # half the side of each landmark patch, in pixels at 112
BATCH_SIZE = 32
WORKERS = len(os.sched_getaffinity(0))  # threads embedding batches at once: one per core this process may use
Embed = Callable[[np.ndarray], np.ndarray]  # (N,112,112,3) uint8 crops -> (N,D) embeddings
Box = Tuple[int, int, int, int]  # half-open (x0, y0, x1, y1) in face pixels
COLOURS = {"landmark": "#5d6d7e", "kept": "#27ae60", "dropped": "#e74c3c", "mode": "#8e44ad"}


@dataclass
class PolicyDrops:
    """A patch policy's view of face A: the mode it picks and what its patches are worth.

    `patch_drops[i]`: the similarity drop when the policy's patch i alone is greyed;
    `mode_drop`: the drop when every patch the mode drops is greyed together (None when the
    mode keeps all five: nothing to grey). The model masks its dropped patches itself, so a
    dropped patch costing about nothing is the policy working as designed."""

    patch_names: List[str]  # in LANDMARK_NAMES order
    boxes: np.ndarray  # (5, 4) the policy's own patches, clipped to the face
    kept: np.ndarray  # (5,) bool: the mode it picks for face A
    mode_probability: float  # the policy's probability of that mode
    patch_drops: np.ndarray  # (5,)
    mode_drop: Optional[float]

    @property
    def dropped_names(self) -> List[str]:
        return [name for name, kept in zip(LANDMARK_NAMES, self.kept) if not kept]


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
    policy: Optional[PolicyDrops] = None  # models with a patch policy only

    json_skip = ("face", "map")


def inference_copy(model):
    """For many forwards: a copy of a zoo model in eval mode with each BatchNorm folded into the
    convolution right before it (same embeddings to 1e-5, a tenth less CPU time); a peer as it is."""
    if not isinstance(model, FaceModel):
        return model
    folded = copy.deepcopy(model).eval()
    for sequence in [m for m in folded.modules() if isinstance(m, nn.Sequential)]:
        for i in range(len(sequence) - 1):
            conv, norm = sequence[i], sequence[i + 1]
            if type(conv) is nn.Conv2d and type(norm) is nn.BatchNorm2d:
                sequence[i], sequence[i + 1] = fuse_conv_bn_eval(conv, norm), nn.Identity()
    return folded


def torch_embed(model) -> Embed:
    """`model`'s own preprocessing and embedding as an `Embed` (a peer's are its engine's)."""
    return lambda faces: model.embed(model.preprocess(faces)).float().numpy()


def embed_batches(embed: Embed, faces: np.ndarray, batch_size: int = BATCH_SIZE, workers: int = 1) -> np.ndarray:
    """L2-normalised embeddings of uint8 faces, `batch_size` at a time, `workers` batches at once."""
    batches = [faces[i:i + batch_size] for i in range(0, len(faces), batch_size)]
    if workers > 1 and len(batches) > 1:
        with ThreadPoolExecutor(min(workers, len(batches))) as pool:
            out = list(pool.map(embed, batches))
    else:
        out = [embed(batch) for batch in batches]
    embeddings = np.concatenate(out).astype(np.float32, copy=False)
    return embeddings / np.linalg.norm(embeddings, axis=1, keepdims=True)


def landmark_boxes(radius: int = LANDMARK_RADIUS) -> Dict[str, Box]:
    """(x0, y0, x1, y1) of each landmark patch, clipped to the face."""
    return {name: (max(0, round(x) - radius), max(0, round(y) - radius), min(INPUT_SIZE, round(x) + radius),
                   min(INPUT_SIZE, round(y) + radius)) for name, (x, y) in zip(LANDMARK_NAMES, TEMPLATE_LANDMARKS)}


def greyed_copies(face: np.ndarray, greyings: Sequence[Sequence[Box]]) -> np.ndarray:
    """One copy of `face` per entry of `greyings`, with each of that entry's boxes greyed."""
    copies = np.repeat(face[None], len(greyings), axis=0)
    for copy_, boxes in zip(copies, greyings):
        for x0, y0, x1, y1 in boxes:
            copy_[y0:y1, x0:x1] = GREY
    return copies


def _policy_greyings(model, face: np.ndarray):
    """(the policy's decision, greyings: each of its patches alone, then its mode's dropped ones);
    (None, []) for a model without a patch policy."""
    if "patch-policy" not in declared(model):
        return None, []
    decision = patch_policy(model, face)
    boxes = [tuple(int(v) for v in box) for box in decision.boxes]
    dropped = [box for box, kept in zip(boxes, decision.kept) if not kept]
    return decision, [[box] for box in boxes] + ([dropped] if dropped else [])


@torch.inference_mode()
def occlusion_sensitivity(model, face_a: FaceLike, face_b: FaceLike, patch: int = 16, stride: int = 8,
                          batch_size: int = BATCH_SIZE, embed: Optional[Embed] = None,
                          workers: int = WORKERS) -> Occlusion:
    """Slide a grey `patch` over face A in steps of `stride` and measure the similarity to B.

    `embed` computes the embeddings (default: `model`'s BatchNorm-folded copy in torch), in
    `workers` threads; a model that says it is not `thread_safe` (dlib's net) gets one."""
    if not 2 <= patch <= INPUT_SIZE // 2:
        raise ValueError(f"patch must be 2 to {INPUT_SIZE // 2} pixels, got {patch}")
    if not 1 <= stride <= patch:
        raise ValueError(f"stride must be 1 to the patch size ({patch}), got {stride}")
    start = time.perf_counter()
    face, other = as_face(face_a), as_face(face_b)
    corners = list(range(0, INPUT_SIZE - patch + 1, stride))
    grid = [[(x, y, x + patch, y + patch)] for y in corners for x in corners]
    landmarks = [[box] for box in landmark_boxes().values()]
    decision, policy = _policy_greyings(model, face)
    copies = np.concatenate([np.stack([face, other]), greyed_copies(face, grid + landmarks + policy)])
    if not getattr(model, "thread_safe", True):
        workers = 1
    embeddings = embed_batches(embed or torch_embed(inference_copy(model)), copies, batch_size, workers)
    scores = embeddings @ embeddings[1]  # one product for all, so an unchanged copy drops by exactly 0
    similarity = float(scores[0])
    drops = scores[0] - scores[2:]
    grid_drops, landmark_drops, policy_drops = np.split(drops, [len(grid), len(grid) + len(landmarks)])
    grid_drops = grid_drops.reshape(len(corners), len(corners))
    total, count = np.zeros((INPUT_SIZE, INPUT_SIZE)), np.zeros((INPUT_SIZE, INPUT_SIZE))
    for (x0, y0, x1, y1), drop in zip((boxes[0] for boxes in grid), grid_drops.ravel()):
        total[y0:y1, x0:x1] += drop
        count[y0:y1, x0:x1] += 1
    pixel_map = np.where(count > 0, total / np.maximum(count, 1), 0.0)
    policy_view = None if decision is None else PolicyDrops(
        list(decision.patch_names), np.asarray(decision.boxes), decision.kept,
        float(decision.mode_probability.max()), policy_drops[:len(LANDMARK_NAMES)].astype(np.float64),
        float(policy_drops[-1]) if len(policy_drops) > len(LANDMARK_NAMES) else None)
    return Occlusion(getattr(model, "name", type(model).__name__), patch, stride, similarity,
                     grid_drops.astype(np.float64), pixel_map.astype(np.float32),
                     {name: float(d) for name, d in zip(LANDMARK_NAMES, landmark_drops)}, face,
                     time.perf_counter() - start, policy_view)


def add_landmark_bars(figure: go.Figure, data: Occlusion, row: int, col: int, legend: bool = True) -> None:
    """The drop per landmark patch as bars in subplot (row, col); for a model with a patch policy,
    its own patches beside them (green: its mode keeps the patch, red: drops it) and its mode."""
    figure.add_trace(go.Bar(x=list(LANDMARK_NAMES), y=list(data.landmarks.values()), name=(
        f"{2 * LANDMARK_RADIUS} px patch greyed alone"), marker_color=COLOURS["landmark"], legendgroup="landmark",
        showlegend=legend and data.policy is not None,
        hovertemplate="%{x}: drop %{y:.4f}<extra></extra>"), row=row, col=col)
    policy = data.policy
    if policy is not None:
        side = int((policy.boxes[:, 2] - policy.boxes[:, 0]).max())
        figure.add_trace(go.Bar(
            x=list(LANDMARK_NAMES), y=policy.patch_drops, name=f"its policy's {side} px patch greyed alone",
            marker_color=[COLOURS["kept" if k else "dropped"] for k in policy.kept], legendgroup="policy",
            text=["kept" if k else "dropped" for k in policy.kept], textposition="outside", showlegend=legend,
            constraintext="none", cliponaxis=False,
            hovertemplate="%{x}: drop %{y:.4f} (its mode: %{text})<extra></extra>"), row=row, col=col)
        dropped = ", ".join(policy.dropped_names) or "nothing"
        figure.add_trace(go.Bar(
            x=["its policy's mode"], y=[policy.mode_drop or 0.0], marker_color=COLOURS["mode"], legendgroup="mode",
            name="its mode's dropped patches greyed together", showlegend=legend,
            text=[f"drops {dropped}<br>(p {policy.mode_probability:.2f})"], textposition="outside",
            constraintext="none", cliponaxis=False,
            hovertemplate=f"its mode drops {dropped}: drop %{{y:.4f}}<extra></extra>"), row=row, col=col)
    categories = list(LANDMARK_NAMES) + (["its policy's mode"] if policy is not None else [])
    figure.update_xaxes(tickangle=0, tickvals=categories, ticktext=[c.replace(" ", "<br>") for c in categories],
                        row=row, col=col)
    figure.update_yaxes(title="cosine similarity drop", row=row, col=col)


def occlusion_figure(data: Occlusion) -> go.Figure:
    """Face A with the drop map over it (red: greying this out lowers the similarity most), and
    the drop for each landmark patch as bars (with the patch policy's view, when the model has one)."""
    limit = max(float(np.abs(data.map).max()), 1e-6)
    image = overlay(data.face, data.map, "RdBu_r", 0.6, (-limit, limit))
    bars_title = "drop per landmark patch" + (", and its patch policy's choice" if data.policy else "")
    figure = make_subplots(rows=1, cols=2, column_widths=[0.5, 0.5], subplot_titles=(
        f"similarity drop when greyed ({data.patch} px patch, stride {data.stride})", bars_title))
    figure.add_layout_image(dict(source=png_data_uri(image), xref="x", yref="y", x=0, y=0, sizex=INPUT_SIZE,
                                 sizey=INPUT_SIZE, sizing="stretch", layer="below"))
    figure.add_trace(go.Heatmap(z=data.map, colorscale="RdBu_r", zmin=-limit, zmax=limit, opacity=0.0,
                                colorbar=dict(title="drop", x=0.45), showlegend=False,
                                hovertemplate="x %{x}, y %{y}: drop %{z:.4f}<extra></extra>"), row=1, col=1)
    add_landmark_bars(figure, data, 1, 2)
    figure.update_xaxes(range=[0, INPUT_SIZE], showgrid=False, visible=False, row=1, col=1)
    figure.update_yaxes(range=[INPUT_SIZE, 0], showgrid=False, visible=False, scaleanchor="x", row=1, col=1)
    figure.update_layout(title=f"{data.model}: what face A's match rests on (similarity {data.similarity:.3f})",
                         template="plotly_white", height=460, barmode="group",
                         legend=dict(orientation="h", y=-0.15, x=0.55))
    return figure
