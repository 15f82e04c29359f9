"""The Compare tab: where each chosen model looks on one pair, side by side, one row per model:
Grad-CAM of face A's similarity to face B, the occlusion map of face A, the method's own map
(as the Explain tab draws it) and the drop per landmark patch (with a patch policy's choice);
each row titled with the model's verdict, and the similarity of every model as face B is
blurred. `report` turns all of it into one self-contained HTML page (`analysis.html_report`).
"""
from __future__ import annotations

import textwrap
import threading
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import plotly.graph_objects as go

import analysis
from analysis import AnalysisError
from analysis.figures import add_face, add_map, grid
from analysis.html_report import Figure, Images, Notes, Table
from zoo.peers import Peer

from ..models import ZooEntry
from ..panels import Captioned, own_panels
from ..photos import Pair
from .blur_lab import BlurCurve, blur_curve, curve_figure, degradation
from .embeddings import Progress
from .explain import enlarge
from .occlusion import occlusion, summary
from .verify import VERDICT_COLOURS, Verdict, verdicts

CURVE_SIGMA = 2.0  # the blur curve's marked level; its levels are the Blur lab's
COLUMNS = ("Grad-CAM of A's similarity to B", "similarity drop when greyed (occlusion)", "its own map",
           "drop per landmark patch")


@dataclass
class ModelView:
    """One model's row: its verdict and its three maps of face A (None where it has none, with why)."""

    verdict: Verdict
    occlusion: analysis.Occlusion
    gradcam: Optional[np.ndarray]  # (112, 112) in [0, 1]
    own: Optional[Captioned]  # the first panel the Explain tab draws of the method's own maps
    missing: Dict[str, str]  # column -> why it is empty


@dataclass
class Comparison:
    pair: Pair
    views: List[ModelView]
    curve: BlurCurve


def compare(entries: Sequence[ZooEntry], pair: Pair, patch: int, stride: int, lock: threading.RLock,
            progress: Optional[Progress] = None) -> Comparison:
    """Every model's verdict, maps and landmark drops on the pair, and the blur curve of them all."""
    tell = progress or (lambda fraction, message: None)
    face_a, face_b = pair.crops
    judged = verdicts(entries, pair, lock)
    views = []
    for k, (entry, verdict) in enumerate(zip(entries, judged)):
        tell(k / (len(entries) + 1), f"{entry.name}: occlusion, Grad-CAM and its own map")
        occluded = occlusion(entry, pair, patch, stride, lock)
        if isinstance(entry.model, Peer):
            why = "a pretrained peer runs outside torch: no gradients, no maps of its own"
            views.append(ModelView(verdict, occluded, None, None, {COLUMNS[0]: why, COLUMNS[2]: why}))
            continue
        with lock:
            cam = analysis.gradcam_similarity(entry.model, face_a, face_b).cams[0]
            own, missing = first_own_panel(entry, face_a)
        views.append(ModelView(verdict, occluded, cam, own, missing))
    tell(len(entries) / (len(entries) + 1), "similarity as face B is blurred")
    curve = blur_curve(entries, pair, degradation("blur", CURVE_SIGMA, "second"), lock)
    return Comparison(pair, views, curve)


def first_own_panel(entry: ZooEntry, face: np.ndarray) -> Tuple[Optional[Captioned], Dict[str, str]]:
    """The Explain tab's first panel of the method's own maps, or why there is none."""
    try:
        panels = own_panels(entry.model, face, enlarge)
    except AnalysisError as err:
        return None, {COLUMNS[2]: str(err)}
    if not panels:
        return None, {COLUMNS[2]: f"a plain {entry.model.config.backbone}: no maps of its own"}
    return panels[0], {}


def comparison_figure(comparison: Comparison) -> go.Figure:
    """One row per model: Grad-CAM, occlusion and its own map over face A, then its landmark bars;
    left of each row the model and its verdict, in the verdict's colour."""
    views = comparison.views
    figure = grid(len(views), len(COLUMNS), [], "where each model looks on face A (red: what its match rests on)",
                  column_titles=list(COLUMNS), column_widths=[0.2, 0.2, 0.2, 0.4], horizontal_spacing=0.03)
    first_policy = next((row for row, view in enumerate(views, 1) if view.occlusion.policy is not None), None)
    for row, view in enumerate(views, 1):
        face, verdict = view.occlusion.face, view.verdict
        if view.gradcam is not None:
            add_map(figure, face, view.gradcam, row, 1, name="Grad-CAM", colormap="Jet", value_range=(0.0, 1.0),
                    alpha=0.45)
        limit = max(float(np.abs(view.occlusion.map).max()), 1e-6)
        add_map(figure, face, view.occlusion.map, row, 2, name="drop", colormap="RdBu_r", value_range=(-limit, limit),
                alpha=0.6)
        if view.own is not None:
            add_face(figure, view.own[0], row, 3, view.own[1])
        for column, why in view.missing.items():
            empty_cell(figure, row, COLUMNS.index(column) + 1, why)
        analysis.add_landmark_bars(figure, view.occlusion, row, 4, legend=row == first_policy)
        figure.update_yaxes(title=None, row=row, col=4)
        low, high = figure.get_subplot(row, 1).yaxis.domain
        figure.add_annotation(text=f"<b>{verdict.model}</b><br>cos {verdict.similarity:.3f}<br>{verdict.text}",
                              xref="paper", yref="paper", x=-0.01, xanchor="right", y=(low + high) / 2, align="right",
                              showarrow=False, font=dict(size=12, color=VERDICT_COLOURS[verdict.same]))
    figure.update_layout(height=figure.layout.height + 60, barmode="group",  # the page's width
                         margin=dict(l=200, b=80), legend=dict(orientation="h", yanchor="top", y=-60 / figure.layout.height,
                                                              xanchor="right", x=1))
    return figure


def empty_cell(figure: go.Figure, row: int, col: int, why: str) -> None:
    """Subplot (row, col) without axes, saying `why` it is empty (placed on the page: plotly.js
    draws no axes, and so no axis domain to refer to, for a subplot without a trace)."""
    cell = figure.get_subplot(row, col)
    figure.add_annotation(text="<br>".join(textwrap.wrap(why, 30)), xref="paper", yref="paper",
                          x=sum(cell.xaxis.domain) / 2, y=sum(cell.yaxis.domain) / 2, showarrow=False,
                          font=dict(size=11, color="#57606a"))
    figure.update_xaxes(visible=False, row=row, col=col)
    figure.update_yaxes(visible=False, row=row, col=col)


def payload(comparison: Comparison) -> Dict:
    """The JSON the tab shows and downloads."""
    return {**comparison.pair.describe(), "models": [{
        **view.verdict.to_dict(), "occlusion": {
            "patch": view.occlusion.patch, "stride": view.occlusion.stride,
            "max_drop": round(float(view.occlusion.drops.max()), 6),
            "landmark_drops": {k: round(v, 6) for k, v in view.occlusion.landmarks.items()},
            "policy_drops": None if view.occlusion.policy is None else dict(zip(
                view.occlusion.policy.patch_names, view.occlusion.policy.patch_drops.round(6).tolist())),
            "policy_dropped": None if view.occlusion.policy is None else view.occlusion.policy.dropped_names},
        "own_map": None if view.own is None else view.own[1], "missing": view.missing} for view in comparison.views],
        "blur_curve": {"levels": comparison.curve.degradation.levels, "similarity": {
            m: [round(v, 6) for v in values] for m, values in comparison.curve.similarity.items()}}}


def rows(comparison: Comparison) -> List[Dict]:
    """One row per model (the CSV download): verdict, the strongest occlusion drop, each landmark's drop."""
    return [{**view.verdict.to_dict(), "max occlusion drop": float(view.occlusion.drops.max()),
             **{f"drop {name}": drop for name, drop in view.occlusion.landmarks.items()},
             "policy drops": "" if view.occlusion.policy is None else
             " ".join(view.occlusion.policy.dropped_names) or "nothing"} for view in comparison.views]


def report_blocks(comparison: Comparison) -> List:
    """The HTML report's sections: the faces, the verdicts, the maps, the blur curve and the notes."""
    pair = comparison.pair
    described = pair.describe()
    faces = [(crop, f"{label}: {described[label]['name']}, face {described[label]['face']}")
             for crop, label in zip(pair.crops, described)]
    verdict_rows = [[v.verdict.model, v.verdict.similarity, "none" if v.verdict.threshold is None else
                     v.verdict.threshold, v.verdict.text, summary(v.occlusion)] for v in comparison.views]
    notes = pair.notes + [f"{v.verdict.model}: {column}: {why}" for v in comparison.views
                          for column, why in v.missing.items()]
    return [Images("the pair (aligned faces, as the models see them)", faces),
            Table("verdicts", ["model", "cosine similarity", "threshold", "verdict", "occlusion"], verdict_rows),
            Figure("where each model looks", comparison_figure(comparison)),
            Figure("similarity as face B is blurred", curve_figure(comparison.curve)),
            Notes("notes", notes or ["none"])]


def report(comparison: Comparison) -> str:
    """The comparison as one self-contained HTML page."""
    described = comparison.pair.describe()
    title = " vs ".join(photo["name"] for photo in described.values()) + f": {len(comparison.views)} models compared"
    return analysis.html_report(title, report_blocks(comparison), payload(comparison))
