"""NPCFace's hard positive-negative correlation (Fig. 3) and cosine overlap (Figs. 5, 6).

NPCFace's premise: a mis-classified ("hard") sample is usually hard both ways, far from
its own class centre *and* close to another one, so the loss should treat the positive and
the negative logits together. Two readings of it:

- over training, from a run's records.jsonl (train.recorders): for each epoch, Pearson's r
  between a mis-classified sample's distance (1 - cos) to its own class centre (the
  classifier weight) and to the nearest other centre; plus the positive-cosine histograms
  of mis- vs well-classified samples and their overlap (sum of the bin-wise minimum of the
  two normalised histograms: 1 = same distribution, 0 = separated);
- for any model on a labelled set: centres are the normalised mean embeddings of each
  identity (or given ones, e.g. a trained head's weights), hard samples are those nearer
  (in 1 - cos) to another centre than to their own, and r is over the hard samples.

r needs at least 3 points and some spread in both distances; otherwise it is NaN.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import List, Optional, Sequence, Union

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from zoo import FaceModel

from .common import AnalysisError, read_records
from .embeddings import EmbeddingCache, embed_faces

MIN_POINTS = 3


def pearson(x: Sequence[float], y: Sequence[float]) -> float:
    """Pearson's correlation coefficient; NaN for fewer than 3 points or a constant variable."""
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    if x.shape != y.shape or x.ndim != 1:
        raise ValueError(f"pearson needs two 1-D arrays of one length, got {x.shape} and {y.shape}")
    if len(x) < MIN_POINTS:
        return float("nan")
    dx, dy = x - x.mean(), y - y.mean()
    scale = np.sqrt((dx * dx).sum() * (dy * dy).sum())
    if scale <= 1e-12 * max(1.0, np.abs(x).max() * np.abs(y).max()) * len(x):
        return float("nan")
    return float(np.clip((dx * dy).sum() / scale, -1.0, 1.0))


def histogram_overlap(a: np.ndarray, b: np.ndarray) -> float:
    """Overlap of two histograms on the same bins: sum of min of the normalised counts."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.sum() <= 0 or b.sum() <= 0:
        return float("nan")
    return float(np.minimum(a / a.sum(), b / b.sum()).sum())


@dataclass
class EpochCorrelation:
    """Per epoch of a training run (from records.jsonl `margins`)."""

    epochs: np.ndarray  # (E,)
    r: np.ndarray  # (E,) correlation of (d_own, d_nearest) over mis-classified samples
    counts: np.ndarray  # (E,) mis-classified pairs recorded (the recorder keeps at most 2000)
    pairs: List[np.ndarray]  # per epoch (n, 2): [d_own, d_nearest]
    bins: np.ndarray  # (B + 1,) positive-cosine bin edges
    misclassified_hist: np.ndarray  # (E, B)
    well_classified_hist: np.ndarray  # (E, B)
    overlap: np.ndarray  # (E,)


def records_correlation(path: Union[str, Path]) -> EpochCorrelation:
    """The correlation and cosine overlap of every epoch in a run's records.jsonl."""
    by_epoch = read_records(path, "margins", "the run's loss had no class-weight matrix")
    epochs = sorted(by_epoch)
    pairs = [np.asarray(by_epoch[e]["misclassified_distance_own_vs_nearest"], dtype=np.float64).reshape(-1, 2)
             for e in epochs]
    mis = np.array([by_epoch[e]["misclassified_positive_cos_hist"] for e in epochs], dtype=np.float64)
    well = np.array([by_epoch[e]["well_classified_positive_cos_hist"] for e in epochs], dtype=np.float64)
    return EpochCorrelation(np.array(epochs), np.array([pearson(p[:, 0], p[:, 1]) for p in pairs]),
                            np.array([len(p) for p in pairs]), pairs,
                            np.asarray(by_epoch[epochs[-1]]["bins"], dtype=np.float64), mis, well,
                            np.array([histogram_overlap(m, w) for m, w in zip(mis, well)]))


def epochs_figure(data: EpochCorrelation, epoch: Optional[int] = None) -> go.Figure:
    """r and cosine overlap over epochs; the scatter and the histograms of one epoch
    (default: the last with mis-classified samples)."""
    with_points = [e for e, c in zip(data.epochs.tolist(), data.counts.tolist()) if c > 0]
    epoch = epoch if epoch is not None else (with_points or data.epochs.tolist())[-1]
    if epoch not in data.epochs:
        raise AnalysisError(f"epoch {epoch} not in the records; they hold {data.epochs.tolist()}")
    k = data.epochs.tolist().index(epoch)
    fig = make_subplots(rows=2, cols=2, vertical_spacing=0.15, horizontal_spacing=0.12, subplot_titles=[
        "Pearson r (d own, d nearest) of mis-classified samples", f"epoch {epoch}: mis-classified samples (r {data.r[k]:.3f})",
        "overlap of mis- vs well-classified positive cosine", f"epoch {epoch}: positive cosine"])
    fig.add_trace(go.Scatter(x=data.epochs, y=data.r, mode="lines+markers", name="r", customdata=data.counts,
                             showlegend=False,
                             hovertemplate="epoch %{x}: r %{y:.3f} (%{customdata} samples)<extra></extra>"), row=1, col=1)
    pairs = data.pairs[k]
    fig.add_trace(go.Scatter(x=pairs[:, 0], y=pairs[:, 1], mode="markers", name=f"mis-classified, epoch {epoch}",
                             marker=dict(size=4, opacity=0.5, color="crimson"),
                             hovertemplate="d own %{x:.3f}<br>d nearest %{y:.3f}<extra></extra>"), row=1, col=2)
    fig.add_trace(go.Scatter(x=data.epochs, y=data.overlap, mode="lines+markers", name="overlap", showlegend=False,
                             hovertemplate="epoch %{x}: overlap %{y:.3f}<extra></extra>"), row=2, col=1)
    centres = (data.bins[:-1] + data.bins[1:]) / 2
    for hist, name, colour in ((data.misclassified_hist[k], "mis-classified", "crimson"),
                               (data.well_classified_hist[k], "well-classified", "seagreen")):
        total = hist.sum()
        fig.add_trace(go.Bar(x=centres, y=hist / total if total > 0 else hist, name=f"{name} cos(theta_y)",
                             marker_color=colour,
                             opacity=0.6, hovertemplate=f"{name}<br>cos %{{x:.2f}}: %{{y:.3f}}<extra></extra>"),
                      row=2, col=2)
    fig.update_xaxes(title_text="epoch", row=1, col=1)
    fig.update_xaxes(title_text="distance to own centre (1 - cos)", row=1, col=2)
    fig.update_yaxes(title_text="distance to nearest other centre", row=1, col=2)
    fig.update_xaxes(title_text="epoch", row=2, col=1)
    fig.update_xaxes(title_text="cos(theta_y)", row=2, col=2)
    fig.update_yaxes(range=[-1.05, 1.05], row=1, col=1)
    fig.update_layout(title="NPCFace: hard positive-negative correlation over training", barmode="overlay",
                      template="plotly_white", width=1000, height=780)
    return fig


@dataclass
class HardSamples:
    """Distances of every sample to its own and to the nearest other class centre."""

    model: str
    identities: List[str]
    labels: np.ndarray  # (N,)
    d_own: np.ndarray  # (N,) 1 - cos to the own centre
    d_nearest: np.ndarray  # (N,) 1 - cos to the nearest other centre
    nearest_class: np.ndarray  # (N,)
    hard: np.ndarray  # (N,) bool: d_nearest < d_own
    r: float  # Pearson r of (d_own, d_nearest) over the hard samples


def centre_distances(embeddings: np.ndarray, labels: Sequence[int], centres: Optional[np.ndarray] = None,
                     identities: Optional[Sequence[str]] = None, model: str = "") -> HardSamples:
    """Hard samples and their correlation for embeddings (N, D) with integer labels.

    `centres` (C, D), one per label value, e.g. a trained head's weights; default: the
    normalised mean embedding of each label present.
    """
    embeddings = np.asarray(embeddings, dtype=np.float64)
    labels = np.asarray(labels, dtype=np.int64)
    if embeddings.ndim != 2 or len(embeddings) != len(labels):
        raise AnalysisError(f"need (N, D) embeddings and N labels, got {embeddings.shape} and {labels.shape}")
    embeddings = embeddings / np.linalg.norm(embeddings, axis=1, keepdims=True).clip(min=1e-12)
    given = centres is not None
    if not given:
        centres = np.zeros((int(labels.max()) + 1, embeddings.shape[1]))
        np.add.at(centres, labels, embeddings)
    centres = np.asarray(centres, dtype=np.float64)
    if labels.min() < 0 or labels.max() >= len(centres) or len(centres) < 2 or len(np.unique(labels)) < (1 if given else 2):
        raise AnalysisError(f"need at least 2 classes with a centre each; got labels in "
                            f"[{labels.min()}, {labels.max()}] ({len(np.unique(labels))} distinct) "
                            f"and {len(centres)} centres")
    centres = centres / np.linalg.norm(centres, axis=1, keepdims=True).clip(min=1e-12)
    distance = 1.0 - embeddings @ centres.T
    if not given:  # a label value with no sample has no centre to be near
        distance[:, np.bincount(labels, minlength=len(centres)) == 0] = np.inf
    rows = np.arange(len(labels))
    d_own = distance[rows, labels].copy()
    others = distance.copy()
    others[rows, labels] = np.inf
    nearest = others.argmin(axis=1)
    d_nearest = others[rows, nearest]
    hard = d_nearest < d_own
    identities = list(identities) if identities is not None else [str(i) for i in range(len(centres))]
    return HardSamples(model, identities, labels, d_own, d_nearest, nearest, hard,
                       pearson(d_own[hard], d_nearest[hard]))


def model_hard_samples(model: FaceModel, faces, labels: Sequence[int], identities: Optional[Sequence[str]] = None,
                       cache: Union[bool, EmbeddingCache] = True, progress: bool = False) -> HardSamples:
    """`centre_distances` of `model`'s embeddings of a labelled face set (cached, see embeddings)."""
    embeddings = embed_faces(model, faces, cache=cache, progress=progress)
    return centre_distances(embeddings, labels, identities=identities, model=model.name)


def hard_samples_figure(data: HardSamples) -> go.Figure:
    """Every sample's distance to its own vs the nearest other centre; hard ones (below the
    diagonal) in red, with r over them."""
    fig = go.Figure()
    for mask, name, colour in ((~data.hard, "well-classified", "lightgray"), (data.hard, "hard", "crimson")):
        points = np.flatnonzero(mask)
        fig.add_trace(go.Scatter(
            x=data.d_own[points], y=data.d_nearest[points], mode="markers", name=f"{name} ({len(points)})",
            marker=dict(size=6, color=colour, line=dict(width=0.5, color="black")),
            customdata=[[data.identities[data.labels[i]], data.identities[data.nearest_class[i]]] for i in points],
            hovertemplate="%{customdata[0]} (nearest: %{customdata[1]})<br>d own %{x:.3f}, d nearest %{y:.3f}"
                          "<extra></extra>"))
    top = float(max(data.d_own.max(), data.d_nearest.max(), 0.0)) * 1.05
    fig.add_shape(type="line", x0=0, y0=0, x1=top, y1=top, line=dict(dash="dot", color="gray"))
    fig.update_layout(title=f"{data.model + ': ' if data.model else ''}distance to own vs nearest other class centre; "
                            f"hard samples r = {data.r:.3f}",
                      xaxis_title="distance to own centre (1 - cos)", yaxis_title="distance to nearest other centre",
                      template="plotly_white", width=760, height=620)
    return fig
