"""Attention on the face, asked for as "attention", in the form a method declares:

- "residual-attention" (SRANet's Fig. 6): channel-mean feature maps of each stage's last
  block without and with its self residual attention, and the spatial-attention row of a
  query location.
- "pyramid-masks" (HPDA's Fig. 1): every S x B LANet mask of every tapped layer.
- "patch-policy" (ARFace's Fig. 4): the patches the policy keeps and drops, and its keep
  probabilities.

Each reader returns plain data (maps at the method's resolution and resized onto the
112x112 face, bilinearly: they are continuous) from the model's `explain()`; `attention`
picks the model's reader and `attention_figure` draws any of their data.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Tuple, Union

import numpy as np
import plotly.graph_objects as go

from zoo import FaceModel
from zoo.backbones import INPUT_SIZE

from .common import ASKED_AS, AnalysisError, declared, register, require
from .figures import add_face, add_map, grid
from .images import FaceLike, as_face, resize_map


@dataclass
class ResidualAttention:
    """Per block i of `blocks`: channel means before/after attention and the query's A_S row."""

    model: str
    face: np.ndarray  # (112, 112, 3) uint8
    query: Tuple[float, float]  # (y, x) in face pixels
    blocks: np.ndarray  # (B,) indices into backbone.blocks
    stages: np.ndarray  # (B,) stage of each block
    before: List[np.ndarray]  # (h, w) channel mean of the block output
    after: List[np.ndarray]  # (h, w) the same after SCA + SSA
    spatial: List[np.ndarray]  # (h', w') A_S row of the query over the key grid (sums to 1); [] without SSA
    before_on_face: np.ndarray  # (B, 112, 112)
    after_on_face: np.ndarray  # (B, 112, 112)
    spatial_on_face: np.ndarray  # (B, 112, 112), or (0, 112, 112) without SSA

    json_skip = ("face", "before_on_face", "after_on_face", "spatial_on_face")


@dataclass
class PyramidMasks:
    """Every LANet mask: layer l (shallow to deep), scale s (fine to coarse), branch b."""

    model: str
    face: np.ndarray
    tapped_blocks: np.ndarray  # (L,) indices into backbone.blocks
    native: np.ndarray  # (L, S, B, h, w) in [0, 1]
    masks: np.ndarray  # (L, S, B, 112, 112) in [0, 1]

    json_skip = ("face", "masks")


@dataclass
class PatchPolicy:
    """The Attention-Net's decision on one face (argmax mode, as at inference)."""

    model: str
    face: np.ndarray
    patch_names: List[str]
    boxes: np.ndarray  # (5, 4) half-open (x0, y0, x1, y1), clipped to the face
    kept: np.ndarray  # (5,) bool
    keep_probability: np.ndarray  # (5,) marginal keep probability per patch
    mode_probability: np.ndarray  # (31,) the policy's distribution over keep/drop modes
    mask: np.ndarray  # (112, 112) M: 0 inside dropped patches
    masked_face: np.ndarray  # (112, 112, 3) uint8: what the Feature-Net sees

    json_skip = ("face", "mask", "masked_face")


Attention = Union[ResidualAttention, PyramidMasks, PatchPolicy]
Query = Optional[Tuple[float, float]]
READERS: Dict[str, Callable[[FaceModel, FaceLike, Query], Attention]] = {}  # analysis -> reader
FIGURES: Dict[type, Callable[[Attention], go.Figure]] = {}  # data type -> its figure


def _reader(name: str, takes_query: bool = False):
    """Register a reader as the attention analysis `name` (asked for as "attention")."""
    def decorator(read):
        register(name, "attention")
        READERS[name] = read if takes_query else (lambda model, face, query: read(model, face))
        return read
    return decorator


def _figure_of(kind: type):
    """Register the figure drawing `kind` of attention data."""
    def decorator(draw):
        FIGURES[kind] = draw
        return draw
    return decorator


def _key_grid_on_features(row: np.ndarray, shape: Tuple[int, int]) -> np.ndarray:
    """A_S over the (ceil-)pooled key grid, each key cell spread over the feature cells it pooled."""
    factor = math.ceil(shape[0] / row.shape[0])
    return np.repeat(np.repeat(row, factor, axis=0), factor, axis=1)[:shape[0], :shape[1]]


@_reader("residual-attention", takes_query=True)
def residual_attention(model: FaceModel, face: FaceLike, query: Query = None) -> ResidualAttention:
    """Self residual attention maps for `face`; `query` is a (y, x) pixel of the 112x112 face
    (default: centre)."""
    require(model, "residual-attention", "self residual attention")
    face = as_face(face)
    query = (INPUT_SIZE / 2, INPUT_SIZE / 2) if query is None else (float(query[0]), float(query[1]))
    explanation = model.explain(model.preprocess(face[None]), query=query)
    maps = {k: v[0].cpu().numpy().astype(np.float64) for k, v in explanation.maps.items()}
    blocks = sorted(int(k.split("/")[1].removeprefix("block")) for k in maps if k.endswith("/before"))
    before = [maps[f"channel_mean/block{i}/before"] for i in blocks]
    after = [maps[f"channel_mean/block{i}/after"] for i in blocks]
    spatial = [maps[f"spatial_attention/block{i}"] for i in blocks if f"spatial_attention/block{i}" in maps]
    on_face = lambda maps_: (np.stack([resize_map(m) for m in maps_]) if maps_
                             else np.zeros((0, INPUT_SIZE, INPUT_SIZE), np.float32))
    return ResidualAttention(model.name, face, query, np.array(blocks),
                           np.array([model.backbone.block_stage[i] for i in blocks]), before, after, spatial,
                           on_face(before), on_face(after),
                           on_face([_key_grid_on_features(s, b.shape) for s, b in zip(spatial, before)]))


@_reader("pyramid-masks")
def pyramid_masks(model: FaceModel, face: FaceLike) -> PyramidMasks:
    """Every pyramid attention mask for `face`, at the tapped layers' 7x7 and on the face."""
    require(model, "pyramid-masks", "pyramid attention masks")
    face = as_face(face)
    explanation = model.explain(model.preprocess(face[None]))
    if not explanation.maps:
        raise AnalysisError(f"{model.name} has no local branch (heads={model.options['heads']!r}), so no masks; "
                            f"Grad-CAM shows where its global embedding looks")
    layers, scales, branches = len(model.tapped_blocks), model.options["scales"], model.options["branches"]
    native = np.stack([np.stack([np.stack([
        explanation.maps[f"mask/layer{l}/scale{s}/branch{b}"][0].cpu().numpy().astype(np.float64)
        for b in range(branches)]) for s in range(scales)]) for l in range(layers)])
    masks = resize_map(native.reshape(-1, *native.shape[-2:])).reshape(*native.shape[:3], INPUT_SIZE, INPUT_SIZE)
    return PyramidMasks(model.name, face, explanation.values["tapped_blocks"].cpu().numpy(), native, masks)


@_reader("patch-policy")
def patch_policy(model: FaceModel, face: FaceLike) -> PatchPolicy:
    """The patch policy's keep/drop decision and probabilities for `face`."""
    require(model, "patch-policy", "patch policy")
    face = as_face(face)
    explanation = model.explain(model.preprocess(face[None]))
    mask = explanation.maps["mask"][0].cpu().numpy().astype(np.float64)
    values = {k: v.cpu().numpy() for k, v in explanation.values.items()}
    masked = np.round(face.astype(np.float64) * mask[..., None]).astype(np.uint8)
    return PatchPolicy(model.name, face, list(model.patch_names), values["patch_boxes"], values["kept"][0].astype(bool),
                        values["keep_probability"][0].astype(np.float64),
                        values["mode_probability"][0].astype(np.float64), mask, masked)


def attention(model: FaceModel, face: FaceLike, query: Query = None) -> Attention:
    """The attention `model`'s method declares (`query` only matters to the residual attention)."""
    require(model, "attention", "attention maps")
    name = next(name for name in declared(model) if ASKED_AS[name] == "attention")
    return READERS[name](model, face, query)


@_figure_of(ResidualAttention)
def residual_attention_figure(data: ResidualAttention) -> go.Figure:
    """Per stage (its last block): channel mean before / after attention (one colour range per
    stage) and the query's spatial attention, the query marked by a cross."""
    last = [i for i, stage in enumerate(data.stages) if i == len(data.stages) - 1 or data.stages[i + 1] != stage]
    rows = ["before attention", "after attention"] + (["spatial attention of the query"] if data.spatial else [])
    titles = [f"{row}<br>stage {data.stages[i]} (block {data.blocks[i]})" for row in rows for i in last]
    fig = grid(len(rows), len(last), titles, f"{data.model}: channel-mean features and self spatial attention")
    for col, i in enumerate(last, 1):
        pair = np.concatenate([data.before[i].ravel(), data.after[i].ravel()])
        value_range = (float(pair.min()), float(pair.max()))
        add_map(fig, data.face, data.before[i], 1, col, name="channel mean", colormap="RdBu_r", value_range=value_range)
        add_map(fig, data.face, data.after[i], 2, col, name="channel mean", colormap="RdBu_r", value_range=value_range)
        if data.spatial:
            keys = _key_grid_on_features(data.spatial[i], data.before[i].shape)
            add_map(fig, data.face, keys, 3, col, name="attention", colormap="Inferno", alpha=0.6)
            fig.add_trace(go.Scatter(x=[data.query[1]], y=[data.query[0]], mode="markers", showlegend=False,
                                     marker=dict(symbol="x", size=10, color="cyan", line=dict(width=1, color="black")),
                                     hovertemplate="query (x %{x:.0f}, y %{y:.0f})<extra></extra>"), row=3, col=col)
    return fig


@_figure_of(PyramidMasks)
def pyramid_masks_figure(data: PyramidMasks) -> go.Figure:
    """One row per (layer, scale), one column per branch; colour range fixed to [0, 1]."""
    layers, scales, branches = data.native.shape[:3]
    titles = [f"layer {l} (block {data.tapped_blocks[l]}), scale {s}, branch {b}"
              for l in range(layers) for s in range(scales) for b in range(branches)]
    fig = grid(layers * scales, branches, titles, f"{data.model}: pyramid diverse attention masks")
    for l in range(layers):
        for s in range(scales):
            for b in range(branches):
                add_map(fig, data.face, data.native[l, s, b], l * scales + s + 1, b + 1, name="mask",
                        colormap="Viridis", value_range=(0.0, 1.0), showscale=(l, s, b) == (0, 0, 0),
                        colorbar_title="mask")
    return fig


@_figure_of(PatchPolicy)
def patch_policy_figure(data: PatchPolicy) -> go.Figure:
    """The masked face with kept (green) and dropped (red, dashed) patches, and the keep
    probability per patch."""
    fig = grid(1, 2, ["what the Feature-Net sees", "keep probability per patch"],
               f"{data.model}: attention-aware patch policy", column_widths=[0.45, 0.55], horizontal_spacing=0.12)
    add_face(fig, data.masked_face, 1, 1, "masked face")
    for name, (x0, y0, x1, y1), kept in zip(data.patch_names, data.boxes, data.kept):
        colour = "limegreen" if kept else "red"
        fig.add_shape(type="rect", x0=x0 - 0.5, y0=y0 - 0.5, x1=x1 - 0.5, y1=y1 - 0.5, row=1, col=1,
                      line=dict(color=colour, width=2, dash="solid" if kept else "dash"))
    fig.add_trace(go.Bar(x=data.patch_names, y=data.keep_probability, showlegend=False,
                         marker_color=["limegreen" if k else "red" for k in data.kept],
                         text=["kept" if k else "dropped" for k in data.kept], textposition="outside",
                         hovertemplate="%{x}: keep probability %{y:.3f}<extra></extra>"), row=1, col=2)
    fig.update_yaxes(range=[0, 1.1], title_text="P(keep)", row=1, col=2)
    fig.update_layout(width=720, height=380)
    return fig


def attention_figure(data: Attention) -> go.Figure:
    """The figure of any attention analysis."""
    if type(data) not in FIGURES:
        raise TypeError(f"not attention data: {type(data).__name__}")
    return FIGURES[type(data)](data)
