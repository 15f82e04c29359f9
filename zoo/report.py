"""Evaluation results (the JSON of `zoo.evaluate`) as a text table, CSV rows and plotly figures,
and the alignment preview a user checks before trusting any number."""
from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Dict, List, Optional

import numpy as np
import plotly.graph_objects as go
from PIL import Image, ImageDraw

from .data.paths import atomic_write
from .metrics import far_key

# TAR columns every table shows, whatever the list: "n/a" where a list has too few negatives
# for that FAR (under 1/FAR), so tables from different pair lists line up.
TABLE_FARS = (1e-1, 1e-2, 1e-3)
PREVIEW_SAMPLE = 40  # aligned crops shown per preview, and at most as many faceless ones


def result_rows(results: Dict) -> List[Dict[str, object]]:
    """One flat row per protocol x condition; TAR columns tar@far=LEVEL for every TABLE_FARS
    level (None where the list cannot support it)."""
    rows = []
    for protocol, entry in results["protocols"].items():
        for condition, values in entry["conditions"].items():
            row = {"model": results["model"]["spec"], "protocol": protocol, "condition": condition,
                   "pairs": values["pairs"], "pairs_skipped": entry["pairs_skipped"],
                   "fallback_alignments": entry["fallback_alignments"],
                   "accuracy": values["accuracy"], "accuracy_std": values["accuracy_std"], "auc": values["auc"]}
            levels = values["tar_at_far"]
            row.update({f"tar@far={far_key(f)}": levels.get(far_key(f), {}).get("tar") for f in TABLE_FARS})
            rows.append(row)
    return rows


def _columns(rows: List[Dict[str, object]]) -> List[str]:
    columns: List[str] = []
    for row in rows:
        columns.extend(k for k in row if k not in columns)
    return columns


def write_csv(path: Path, many: List[Dict]) -> None:
    """CSV of `result_rows` of one or more models' results; "n/a" where a FAR level is below
    1/negatives."""
    rows = [{k: ("n/a" if v is None else v) for k, v in row.items()} for r in many for row in result_rows(r)]
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=_columns(rows), restval="")
    writer.writeheader()
    writer.writerows(rows)
    atomic_write(path, lambda out: out.write(text.getvalue().encode()))


def results_table(many: List[Dict]) -> str:
    """Fixed-width terminal table of one or more models' results (a model column when several),
    with the same TAR columns for every list: "n/a" where a FAR level is below 1/negatives."""
    rows = [row for r in many for row in result_rows(r)]
    tar_columns = [f"tar@far={far_key(f)}" for f in TABLE_FARS]
    lead = ["model"] if len(many) > 1 else []
    header = lead + ["protocol", "condition", "pairs", "skipped", "fallback", "accuracy", "auc"] + \
        [c.replace("tar@far=", "TAR@") for c in tar_columns]
    lines = [header]
    for row in rows:
        lines.append([row[k] for k in lead] + [
            row["protocol"], row["condition"], str(row["pairs"]), str(row["pairs_skipped"]),
            str(row["fallback_alignments"]), f"{row['accuracy']:.4f}±{row['accuracy_std']:.4f}",
            f"{row['auc']:.4f}"] + ["n/a" if row[c] is None else f"{row[c]:.4f}" for c in tar_columns])
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(line, widths)).rstrip() for line in lines)


def alignment_preview(aligned, path: Path, sample: int = PREVIEW_SAMPLE) -> Path:
    """A PNG grid: evenly spaced aligned crops (green frame), then faceless images as the
    centre crops they became (red frame), so one look tells whether alignment worked."""
    failed = [k for k, m in enumerate(aligned.methods) if m == "center-crop"][:sample]
    found = [k for k, m in enumerate(aligned.methods) if m != "center-crop"]
    shown = [found[int(i)] for i in np.linspace(0, len(found) - 1, min(sample, len(found)))] if found else []
    tiles = [(k, (40, 170, 60)) for k in shown] + [(k, (220, 40, 40)) for k in failed]
    columns, size, gap = 10, 112, 4
    rows = max(1, -(-len(tiles) // columns))
    sheet = Image.new("RGB", (columns * (size + gap) + gap, rows * (size + gap) + gap + 18), "white")
    draw = ImageDraw.Draw(sheet)
    draw.text((gap, 3), f"{len(shown)} of {len(found)} aligned (green); {len(failed)} of {len(aligned.methods) - len(found)} "
                        "without a detected face, centre-cropped (red)", fill="black")
    for n, (k, colour) in enumerate(tiles):
        x, y = gap + (n % columns) * (size + gap), 18 + gap + (n // columns) * (size + gap)
        sheet.paste(Image.fromarray(aligned.images[k]), (x, y))
        draw.rectangle([x - 2, y - 2, x + size + 1, y + size + 1], outline=colour, width=2)
    atomic_write(path, lambda out: sheet.save(out, format="PNG"))
    return path


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
