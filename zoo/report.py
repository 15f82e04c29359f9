"""Evaluation results (the JSON of `zoo.evaluate`) as a text table, CSV rows and plotly figures."""
from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Dict, List, Optional

import plotly.graph_objects as go

from .data.paths import atomic_write


def result_rows(results: Dict) -> List[Dict[str, object]]:
    """One flat row per protocol x condition (TAR columns named tar@far=LEVEL)."""
    rows = []
    for protocol, entry in results["protocols"].items():
        for condition, values in entry["conditions"].items():
            row = {"protocol": protocol, "condition": condition, "pairs": values["pairs"],
                   "pairs_skipped": entry["pairs_skipped"], "fallback_alignments": entry["fallback_alignments"],
                   "accuracy": values["accuracy"], "accuracy_std": values["accuracy_std"], "auc": values["auc"]}
            row.update({f"tar@far={level}": v["tar"] for level, v in values["tar_at_far"].items()})
            rows.append(row)
    return rows


def _columns(rows: List[Dict[str, object]]) -> List[str]:
    columns: List[str] = []
    for row in rows:
        columns.extend(k for k in row if k not in columns)
    return columns


def write_csv(path: Path, results: Dict) -> None:
    """CSV of `result_rows`; a TAR level a protocol cannot support is left empty."""
    rows = result_rows(results)
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=_columns(rows), restval="")
    writer.writeheader()
    writer.writerows(rows)
    atomic_write(path, lambda out: out.write(text.getvalue().encode()))


def results_table(results: Dict) -> str:
    """Fixed-width table for the terminal; '-' where a FAR level is below 1/negatives."""
    rows = result_rows(results)
    tar_columns = [c for c in _columns(rows) if c.startswith("tar@far=")]
    header = ["protocol", "condition", "pairs", "skipped", "fallback", "accuracy", "auc"] + \
             [c.replace("tar@far=", "TAR@") for c in tar_columns]
    lines = [header]
    for row in rows:
        lines.append([row["protocol"], row["condition"], str(row["pairs"]), str(row["pairs_skipped"]),
                      str(row["fallback_alignments"]), f"{row['accuracy']:.4f}±{row['accuracy_std']:.4f}",
                      f"{row['auc']:.4f}"] + [f"{row[c]:.4f}" if c in row else "-" for c in tar_columns])
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(line, widths)).rstrip() for line in lines)


def roc_figure(results: Dict, condition: Optional[str] = None) -> go.Figure:
    """ROC per protocol (and condition, unless one is chosen), FAR on a log axis."""
    figure = go.Figure()
    for protocol, entry in results["protocols"].items():
        for name, values in entry["conditions"].items():
            if condition is not None and name != condition:
                continue
            points = [(f, t) for f, t in zip(values["roc"]["far"], values["roc"]["tar"]) if f > 0]
            figure.add_trace(go.Scatter(x=[f for f, _ in points], y=[t for _, t in points], mode="lines",
                                        name=f"{protocol} {name} (AUC {values['auc']:.3f})"))
    figure.update_layout(title=f"ROC - {results['model']['spec']}", xaxis_title="false accept rate",
                         yaxis_title="true accept rate", xaxis_type="log", yaxis_range=[0, 1.02])
    return figure


def accuracy_vs_blur_figure(results: Dict) -> go.Figure:
    """10-fold accuracy (error bars: std over folds) against blur sigma, one line per protocol."""
    figure = go.Figure()
    for protocol, entry in results["protocols"].items():
        points = sorted((v["degradation"]["amount"], v["accuracy"], v["accuracy_std"])
                        for v in entry["conditions"].values() if v["degradation"]["kind"] == "blur")
        if points:
            figure.add_trace(go.Scatter(x=[p[0] for p in points], y=[p[1] for p in points], mode="lines+markers",
                                        error_y={"type": "data", "array": [p[2] for p in points]}, name=protocol))
    figure.update_layout(title=f"Accuracy vs Gaussian blur - {results['model']['spec']}",
                         xaxis_title="blur sigma (pixels at 112x112)", yaxis_title="10-fold accuracy")
    return figure
