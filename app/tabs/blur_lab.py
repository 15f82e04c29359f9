"""The Blur lab tab: how each model's similarity of the pair falls as photo B's face (or both)
is blurred or shrunk step by step."""
from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
import plotly.graph_objects as go
from plotly.colors import qualitative

from zoo.data import gaussian_blur, low_resolution
from zoo.data.align import SIZE

from ..errors import InputError
from ..models import ZooEntry
from ..photos import Pair

BLUR_SIGMAS = (0, 1, 2, 3, 4, 6, 8)  # the blur lab's curve; zoo.data's BLUR_LEVELS plus a harsher 8
LOWRES_SIZES = (112, 56, 40, 28, 20, 14, 10, 7)
MAX_SIGMA, MIN_SIDE = 12.0, 4  # past these every model sees mush
TARGETS = ("second", "both")
PALETTE = qualitative.D3


@dataclass(frozen=True)
class Degradation:
    """A checked request: the kind, whose face it is applied to, the slider's level and the curve's levels."""

    kind: str  # "blur" (sigma in px at 112) or "lowres" (side in px)
    target: str  # "second" or "both"
    amount: float  # the level the slider is at; one of `levels`
    levels: List[float]
    apply: Callable[[np.ndarray, float], np.ndarray]


def degradation(kind: str, amount: float, target: str) -> Degradation:
    """The degradation asked for, or InputError saying what is allowed."""
    if kind not in ("blur", "lowres"):
        raise InputError(f"unknown degradation {kind!r}: use 'blur' (Gaussian) or 'lowres' (low resolution)")
    if target not in TARGETS:
        raise InputError(f"unknown target {target!r}: use 'second' (photo B only) or 'both'")
    if kind == "blur":
        amount = float(amount)
        if not 0 <= amount <= MAX_SIGMA:
            raise InputError(f"blur sigma {amount:g} is out of range: use 0 to {MAX_SIGMA:g} pixels (at 112 px)")
        levels = sorted({float(s) for s in BLUR_SIGMAS} | {amount})
        return Degradation(kind, target, amount, levels, gaussian_blur)
    amount = float(round(amount))
    if not MIN_SIDE <= amount <= SIZE:
        raise InputError(f"low-resolution side {amount:g} is out of range: use {MIN_SIDE} to {SIZE} pixels")
    levels = sorted({float(s) for s in LOWRES_SIZES} | {amount}, reverse=True)
    return Degradation(kind, target, amount, levels, lambda face, size: low_resolution(face, int(size)))


@dataclass
class BlurCurve:
    """Similarity of the pair per model as photo B (or both) is degraded step by step."""

    pair: Pair
    degradation: Degradation
    similarity: Dict[str, List[float]]  # model -> one value per level
    thresholds: Dict[str, Optional[float]]
    faces_at_amount: Tuple[np.ndarray, np.ndarray]
    uncalibrated: Tuple[str, ...] = ()  # models whose threshold is DEFAULT_THRESHOLD

    def to_dict(self) -> Dict:
        degradation = self.degradation
        return {**self.pair.describe(), "kind": degradation.kind, "target": degradation.target,
                "amount": degradation.amount, "levels": degradation.levels,
                "similarity": {m: [round(v, 6) for v in values] for m, values in self.similarity.items()},
                "thresholds": self.thresholds, "uncalibrated": list(self.uncalibrated)}


def blur_curve(entries: Sequence[ZooEntry], pair: Pair, degradation: Degradation,
               lock: threading.RLock) -> BlurCurve:
    """Similarity per model across the degradation's levels of photo B's face (or both faces)."""
    face_a, face_b = pair.crops
    degrade, levels = degradation.apply, degradation.levels
    both = degradation.target == "both"
    degraded_b = np.stack([degrade(face_b, level) for level in levels])
    degraded_a = np.stack([degrade(face_a, level) for level in levels]) if both else face_a[None]
    crops = np.concatenate([degraded_a, degraded_b])
    similarity = {}
    with lock:
        for entry in entries:
            embeddings = entry.embed(crops)
            first, second = embeddings[:len(degraded_a)], embeddings[len(degraded_a):]
            similarity[entry.name] = (first * second).sum(axis=1).tolist()
    at = levels.index(degradation.amount)
    return BlurCurve(pair, degradation, similarity, {e.name: e.threshold for e in entries},
                     (degraded_a[at if both else 0], degraded_b[at]),
                     tuple(e.name for e in entries if not e.calibrated))


def curve_figure(curve: BlurCurve) -> go.Figure:
    """One line per model over the degradation levels, its threshold dashed in the same colour."""
    degradation = curve.degradation
    figure = go.Figure()
    for k, (model, values) in enumerate(curve.similarity.items()):
        colour = PALETTE[k % len(PALETTE)]
        figure.add_trace(go.Scatter(x=degradation.levels, y=values, mode="lines+markers", name=model,
                                    line=dict(color=colour, width=2),
                                    hovertemplate=f"{model}<br>%{{x:g}}: cosine %{{y:.4f}}<extra></extra>"))
        if curve.thresholds.get(model) is not None:  # dotted: the uncalibrated default
            figure.add_hline(y=curve.thresholds[model], line=dict(
                color=colour, dash="dot" if model in curve.uncalibrated else "dash", width=1))
    figure.add_vline(x=degradation.amount, line=dict(color="gray", dash="dot"))
    blurred = "photo B" if degradation.target == "second" else "both photos"
    if degradation.kind == "blur":
        x_axis = dict(title=f"Gaussian blur sigma of {blurred} (pixels at 112 px)")
    else:
        x_axis = dict(title=f"side of {blurred} before upsampling back to 112 px (pixels)", autorange="reversed")
    figure.update_layout(title="similarity as the faces degrade (dashed: each model's threshold; dotted: "
                               "uncalibrated)", xaxis=x_axis,
                         yaxis=dict(title="cosine similarity"), height=460,
                         margin=dict(l=10, r=10, t=50, b=40))
    return figure
