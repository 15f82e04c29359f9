"""The Verify tab: each model's cosine similarity of the pair and its verdict at the model's threshold."""
from __future__ import annotations

import html
import threading
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence

import numpy as np
import plotly.graph_objects as go

from ..batching import FaceBatcher
from ..models import ZooEntry
from ..photos import Pair

VERDICT_COLOURS = {True: "#1a7f37", False: "#cf222e", None: "#6e7781"}


@dataclass
class Verdict:
    """One model's answer for a pair: cosine similarity and, when it has a threshold, same or not
    (`calibrated` False: the threshold is DEFAULT_THRESHOLD, not one measured for the model)."""

    model: str
    similarity: float
    threshold: Optional[float]
    calibrated: bool = True
    runtime: str = "torch"  # what computed the embeddings (`ZooEntry.served_by`)

    @property
    def same(self) -> Optional[bool]:
        return None if self.threshold is None else self.similarity >= self.threshold

    @property
    def text(self) -> str:
        if self.same is None:
            return "no threshold in its card: similarity only"
        verdict = "same person" if self.same else "different people"
        return verdict if self.calibrated else f"{verdict} (uncalibrated threshold)"

    def to_dict(self) -> Dict:
        return {"model": self.model, "similarity": round(self.similarity, 6), "threshold": self.threshold,
                "calibrated": self.calibrated, "same": self.same, "verdict": self.text, "runtime": self.runtime}


@dataclass
class Verification:
    pair: Pair
    verdicts: List[Verdict]
    seconds: float


def verdicts(entries: Sequence[ZooEntry], pair: Pair, lock: threading.RLock,
             batcher: Optional[FaceBatcher] = None) -> List[Verdict]:
    """Cosine similarity of the pair's faces per model, judged at the model's threshold; with a
    `batcher`, the faces are embedded together with those of concurrent requests."""
    crops = np.stack(pair.crops)
    if batcher is not None:
        embedded = batcher.embed(entries, crops)
    else:
        with lock:
            embedded = [entry.embed(crops) for entry in entries]
    return [Verdict(entry.name, float(e[0] @ e[1]), entry.threshold, entry.calibrated, entry.served_by)
            for entry, e in zip(entries, embedded)]


def verdict_html(result: Verification) -> str:
    """The verdict table: one row per model, its verdict coloured, a one-line summary above."""
    rows = []
    for verdict in result.verdicts:
        colour = VERDICT_COLOURS[verdict.same]
        threshold = "none" if verdict.threshold is None else f"{verdict.threshold:.3f}"
        if verdict.threshold is not None and not verdict.calibrated:
            threshold += " <i>(uncalibrated)</i>"
        rows.append(f"<tr><td><code>{html.escape(verdict.model)}</code></td><td>{verdict.similarity:.3f}</td>"
                    f"<td>{threshold}</td><td style='color:{colour};font-weight:600'>{verdict.text}</td></tr>")
    decided = [v for v in result.verdicts if v.same is not None]
    summary = (f"same person for {sum(v.same for v in decided)} of the {len(decided)} model(s) with a threshold"
               if decided else "no selected model has a threshold in its card: compare the similarities")
    uncalibrated = [v.model for v in decided if not v.calibrated]
    if uncalibrated:
        summary += (f"; uncalibrated threshold (the default cosine, no evaluation in the card) for "
                    f"{', '.join(html.escape(m) for m in uncalibrated)}")
    return (f"<div class='verdict-summary'><b>{summary}</b> ({result.seconds * 1000:.0f} ms)</div>"
            "<table class='verdict-table'><thead><tr><th>model</th><th>cosine similarity</th><th>threshold</th>"
            f"<th>verdict</th></tr></thead><tbody>{''.join(rows)}</tbody></table>")


def similarity_figure(result: Verification) -> go.Figure:
    """Bars of similarity per model, each model's threshold as a black tick."""
    names = [v.model for v in result.verdicts]
    figure = go.Figure(go.Bar(
        y=names, x=[v.similarity for v in result.verdicts], orientation="h", name="similarity",
        marker_color=[VERDICT_COLOURS[v.same] for v in result.verdicts],
        text=[f"{v.similarity:.3f}" for v in result.verdicts], textposition="auto",
        hovertemplate="%{y}: cosine %{x:.4f}<extra></extra>"))
    with_threshold = [v for v in result.verdicts if v.threshold is not None]
    if with_threshold:  # black: calibrated for the model; gray: the uncalibrated default
        figure.add_trace(go.Scatter(
            y=[v.model for v in with_threshold], x=[v.threshold for v in with_threshold], mode="markers",
            name="threshold", marker=dict(symbol="line-ns", size=26, line=dict(
                width=3, color=["black" if v.calibrated else "gray" for v in with_threshold])),
            customdata=["" if v.calibrated else " (uncalibrated)" for v in with_threshold],
            hovertemplate="%{y}: threshold %{x:.4f}%{customdata}<extra></extra>"))
    figure.update_layout(xaxis=dict(title="cosine similarity (green: same person, red: different)", range=[-1, 1]),
                         yaxis=dict(autorange="reversed"), height=120 + 40 * len(names),
                         margin=dict(l=10, r=10, t=30, b=40), showlegend=False)
    return figure
