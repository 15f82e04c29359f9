"""Learnt scales: the density of t per layer and overall (SCAN's Fig. 3).

A model shows it when its method declares "t-density" and gives `learnt_t()` (layer -> t);
its training logs the same each epoch in records.jsonl (under `record_keys["t-density"]`).

The paper's argument is comparative: without RMO t stays near its initial 1, with RMO but
no local shortcut many t collapse to 0, the full model spreads them. So densities of
several sources (models, checkpoints, epochs of a training log) share one grid and are drawn
side by side.

The density is a Gaussian KDE reflected at 0: t is kept positive, and a plain KDE of t
collapsed onto 0 would put half its mass at negative t (and integrate to 1/2 over t >= 0).
Bandwidth: Scott's rule, floored at 1% of max(1, largest t), so a set of identical t
(an untrained model: every t exactly 1) is a narrow peak instead of a division by zero.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Mapping, Optional, Sequence, Union

import numpy as np
import plotly.graph_objects as go
from plotly.colors import sample_colorscale
from plotly.subplots import make_subplots

from zoo import FaceModel

from .common import AnalysisError, read_records, record_key, register, require
from .figures import wrap

GRID_POINTS = 1024
LayerT = Dict[str, np.ndarray]
register("t-density")


@dataclass
class TDensity:
    """Densities of one source's t on a grid shared with the sources it is compared to."""

    label: str
    grid: np.ndarray  # (G,) t values, from 0
    overall: np.ndarray  # (G,) density of every t of every layer
    per_layer: Dict[str, np.ndarray]  # layer -> (G,) density
    values: Dict[str, np.ndarray]  # layer -> the raw t


def model_t(model: FaceModel) -> LayerT:
    """Every layer's learnt t of a model that has them, trained or in its inference form."""
    require(model, "t-density", "learnt scales t")
    return {k: v.detach().cpu().numpy().astype(np.float64) for k, v in model.learnt_t().items()}


def records_t(path: Union[str, Path]) -> Dict[int, LayerT]:
    """epoch -> layer -> t from a training run's records.jsonl (the last record of an epoch
    wins, so a resumed run that logged an epoch twice counts it once)."""
    records = read_records(path, record_key("t-density"), "it is not the log of a model that learns scales t")
    epochs: Dict[int, LayerT] = {epoch: {k: np.asarray(v, dtype=np.float64) for k, v in layers.items()}
                                 for epoch, layers in records.items()}
    return dict(sorted(epochs.items()))


def pick_epochs(epochs: Sequence[int], spec: str = "spread") -> List[int]:
    """`all`, `spread` (first, last and two between), `last`, or a comma list such as `1,5,10`."""
    epochs = sorted(epochs)
    if spec == "all":
        return epochs
    if spec == "last":
        return epochs[-1:]
    if spec == "spread":
        picks = np.linspace(0, len(epochs) - 1, min(4, len(epochs))).round().astype(int)
        return [epochs[i] for i in dict.fromkeys(picks.tolist())]
    try:
        wanted = [int(e) for e in spec.split(",") if e.strip()]
    except ValueError:
        raise AnalysisError(f"epochs must be all, spread, last or a comma list of numbers, got {spec!r}") from None
    missing = [e for e in wanted if e not in epochs]
    if missing:
        raise AnalysisError(f"epoch(s) {missing} not in the records; they hold {epochs}")
    return wanted


def bandwidth(values: np.ndarray) -> float:
    """Scott's rule with a floor (see the module docstring)."""
    values = np.asarray(values, dtype=np.float64)
    floor = 0.01 * max(1.0, float(np.abs(values).max()))
    if len(values) < 2:
        return floor
    return max(floor, float(values.std(ddof=1)) * len(values) ** (-1 / 5))


def reflected_kde(values: np.ndarray, grid: np.ndarray, width: Optional[float] = None) -> np.ndarray:
    """Gaussian KDE of positive `values`, reflected at 0, evaluated on `grid` (t >= 0)."""
    values = np.asarray(values, dtype=np.float64)
    if values.size == 0:
        raise AnalysisError("no t values to estimate a density from")
    h = bandwidth(values) if width is None else width
    total = np.zeros(len(grid))
    for start in range(0, len(values), 2048):  # bounded memory for the ~10^4 t of a ResNet-50
        centres = np.concatenate([values[start:start + 2048], -values[start:start + 2048]])
        total += np.exp(-0.5 * ((grid[:, None] - centres[None, :]) / h) ** 2).sum(axis=1)
    return total / (len(values) * h * np.sqrt(2 * np.pi))


def t_densities(sources: Mapping[str, LayerT], points: int = GRID_POINTS) -> List[TDensity]:
    """Densities of several sources (label -> layer -> t) on one shared grid [0, max t + 4h]."""
    if not sources:
        raise AnalysisError("no sources of t given")
    everything = np.concatenate([np.concatenate(list(layers.values())) for layers in sources.values()])
    widths = [bandwidth(np.concatenate(list(layers.values()))) for layers in sources.values()]
    widths += [bandwidth(t) for layers in sources.values() for t in layers.values()]
    grid = np.linspace(0.0, float(everything.max()) + 4 * max(widths), points)
    return [TDensity(label, grid, reflected_kde(np.concatenate(list(layers.values())), grid),
                     {k: reflected_kde(t, grid) for k, t in layers.items()}, dict(layers))
            for label, layers in sources.items()]


def t_density_figure(densities: Sequence[TDensity], max_cols: int = 4) -> go.Figure:
    """One panel per source: per-layer densities (shallow = light, deep = dark) and the overall."""
    rows, cols = wrap(len(densities), max_cols)
    fig = make_subplots(rows=rows, cols=cols, shared_xaxes=True, shared_yaxes=True,
                        subplot_titles=[d.label for d in densities], horizontal_spacing=0.03,
                        vertical_spacing=0.12 / rows)
    for index, density in enumerate(densities):
        row, col = index // cols + 1, index % cols + 1
        layers = list(density.per_layer)
        colours = sample_colorscale("Blues", np.linspace(0.3, 1.0, len(layers)).tolist())
        for layer, colour in zip(layers, colours):
            fig.add_trace(go.Scatter(x=density.grid, y=density.per_layer[layer], mode="lines", line=dict(width=1, color=colour),
                                     opacity=0.6, name=layer, legendgroup="layers", showlegend=False,
                                     hovertemplate=f"{density.label}<br>{layer}<br>t %{{x:.3f}}: %{{y:.3f}}<extra></extra>"),
                          row=row, col=col)
        fig.add_trace(go.Scatter(x=density.grid, y=density.overall, mode="lines", line=dict(width=3, color="black"),
                                 name="all layers", legendgroup="overall", showlegend=index == 0,
                                 hovertemplate=f"{density.label}<br>all layers<br>t %{{x:.3f}}: %{{y:.3f}}<extra></extra>"),
                      row=row, col=col)
    fig.update_xaxes(title_text="learnt scale t", row=rows)
    fig.update_yaxes(title_text="density", col=1)
    fig.update_layout(title="Learnt scale t: density per layer (blue, shallow to deep) and overall (black)",
                      width=max(520, 330 * cols), height=300 * rows + 120, template="plotly_white")
    return fig
