"""One self-contained HTML page of faces, tables, figures and notes: a report to attach to a bug
report or a paper review.

Everything it shows is inside the file: images as PNG data URIs, plotly.js once, inline (about
4.6 MB), each figure after it, and the numbers as JSON in a `<script type="application/json"
id="data">` block; it opens offline and fetches nothing.

    from analysis.html_report import Figure, Images, Notes, Table, html_report
    page = html_report("LFW pair 17", [Images("the pair", [(face_a, "A"), (face_b, "B")]),
                                       Table("verdicts", ["model", "cosine"], [["ir50", 0.71]]),
                                       Figure("Grad-CAM", gradcam_figure(data))], data={"cosine": 0.71})
"""
from __future__ import annotations

import datetime
import html
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Sequence, Tuple, Union

import numpy as np
import plotly.graph_objects as go
from plotly.offline import get_plotlyjs

from .export import to_jsonable
from .images import png_data_uri

STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1200px; color: #1f2328; }
h1 { font-size: 1.6em; } h2 { font-size: 1.2em; margin-top: 2em; border-bottom: 1px solid #d0d7de; }
figure { display: inline-block; margin: 0 1em 1em 0; text-align: center; }
figcaption { font-size: 0.85em; max-width: 240px; }
table { border-collapse: collapse; } td, th { border: 1px solid #d0d7de; padding: 4px 10px; text-align: left; }
.subtitle { color: #57606a; }
"""


@dataclass
class Images:
    """Captioned images (uint8 RGB arrays), shown side by side."""

    heading: str
    images: Sequence[Tuple[np.ndarray, str]]

    def html(self) -> str:
        return "".join(f'<figure><img src="{png_data_uri(image)}" alt="{html.escape(caption)}">'
                       f"<figcaption>{html.escape(caption)}</figcaption></figure>" for image, caption in self.images)


@dataclass
class Table:
    """A table of plain values; floats to 4 decimals."""

    heading: str
    headers: Sequence[str]
    rows: Sequence[Sequence[Any]]

    def html(self) -> str:
        cell = lambda value: html.escape(f"{value:.4f}" if isinstance(value, float) else str(value))
        head = "".join(f"<th>{html.escape(h)}</th>" for h in self.headers)
        body = "".join("<tr>" + "".join(f"<td>{cell(v)}</td>" for v in row) + "</tr>" for row in self.rows)
        return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


@dataclass
class Figure:
    """A plotly figure, interactive (plotly.js is in the page once)."""

    heading: str
    figure: go.Figure

    def html(self) -> str:
        return self.figure.to_html(full_html=False, include_plotlyjs=False, config={"displaylogo": False})


@dataclass
class Notes:
    """Lines of text as a list."""

    heading: str
    lines: Sequence[str]

    def html(self) -> str:
        return "<ul>" + "".join(f"<li>{html.escape(line)}</li>" for line in self.lines) + "</ul>"


Block = Union[Images, Table, Figure, Notes]


def html_report(title: str, blocks: Sequence[Block], data: Any = None, subtitle: str = "") -> str:
    """The page: `title`, `subtitle` (default: when it was written), then each block under its
    heading; `data` (anything `export.to_jsonable` takes) embedded as JSON."""
    subtitle = subtitle or f"written by FaceScope on {datetime.datetime.now():%Y-%m-%d %H:%M}"
    plotly = f"<script>{get_plotlyjs()}</script>" if any(isinstance(b, Figure) for b in blocks) else ""
    numbers = "" if data is None else (
        '<script type="application/json" id="data">'
        + json.dumps(to_jsonable(data), allow_nan=False).replace("</", "<\\/") + "</script>")
    sections = "".join(f"<section><h2>{html.escape(b.heading)}</h2>{b.html()}</section>" for b in blocks)
    return (f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>'
            f"<style>{STYLE}</style>{plotly}</head><body><h1>{html.escape(title)}</h1>"
            f'<p class="subtitle">{html.escape(subtitle)}</p>{sections}{numbers}</body></html>\n')


def save_report(path: Union[str, Path], title: str, blocks: Sequence[Block], data: Any = None,
                subtitle: Optional[str] = None) -> Path:
    """`html_report` written to `path` (UTF-8)."""
    path = Path(path)
    path.write_text(html_report(title, blocks, data, subtitle or ""), encoding="utf-8")
    return path
