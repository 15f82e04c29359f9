"""Every page's downloads: its data as JSON and CSV as soon as it is shown, its figures and
gallery as PNG (and, on the Compare page, an HTML report) when asked for.

A page adds one `Downloads` area under its outputs, puts `area.outputs` after its event's
outputs and returns `*area.save(...)` after its handler's results:

    downloads = Downloads(ctx.failures, "verify")                           # in the layout
    return data, figure, status, *downloads.save(data, rows, [figure])     # in the handler
    button.click(handler, inputs, [json, plot, status, *downloads.outputs])

The files go to a fresh temporary folder per request (the last FOLDERS_KEPT are kept; the
browser has fetched them long before). PNGs wait for their button (API: `/<name>_png`): plotly
draws them in a headless Chromium (kaleido), about 5 s a click, too slow for every request; in
the browser each figure's camera icon saves its PNG at once.
"""
from __future__ import annotations

import csv
import json
import shutil
import tempfile
import textwrap
import threading
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import gradio as gr
import numpy as np
import plotly.graph_objects as go
from PIL import Image, ImageDraw, ImageFont

from analysis.export import png_export_status, to_jsonable, write_pngs

from .errors import InputError
from .panels import Captioned
from .status import Failures

FOLDERS_KEPT = 64


@dataclass
class Saved:
    """What a page's last request left to download: written files, and what the buttons render."""

    folder: Path
    name: str
    files: List[str]
    figures: List[go.Figure] = field(default_factory=list)
    images: List[Captioned] = field(default_factory=list)
    source: Any = None  # the page's own result, for a file only that page knows how to write (a report)


@dataclass(frozen=True)
class OnRequest:
    """A file written when its button is clicked: the label, the API name's suffix and the writer."""

    label: str
    suffix: str
    write: Callable[[Saved], List[Path]]


class _Folders:
    """A fresh temporary folder per request; the oldest is deleted beyond FOLDERS_KEPT."""

    def __init__(self):
        self._folders: deque = deque()
        self._lock = threading.Lock()

    def new(self, name: str) -> Path:
        folder = Path(tempfile.mkdtemp(prefix=f"facescope-{name}-"))
        with self._lock:
            self._folders.append(folder)
            while len(self._folders) > FOLDERS_KEPT:
                shutil.rmtree(self._folders.popleft(), ignore_errors=True)
        return folder


FOLDERS = _Folders()


def write_csv(path: Path, rows: Sequence[Dict[str, Any]]) -> Path:
    """Rows of plain values as CSV, columns in the order they first appear."""
    columns = list(dict.fromkeys(key for row in rows for key in row))
    with open(path, "w", newline="") as out:
        writer = csv.DictWriter(out, columns)
        writer.writeheader()
        writer.writerows(to_jsonable(list(rows)))
    return path


def contact_sheet(images: Sequence[Captioned], columns: int = 4, caption_chars: int = 34) -> np.ndarray:
    """A gallery as one RGB image: the images in rows of `columns`, each caption wrapped beneath it."""
    font = ImageFont.load_default(size=13)
    side = max(max(image.shape[:2]) for image, _ in images)
    wrapped = [textwrap.wrap(caption, caption_chars) for _, caption in images]
    cell_height = side + 8 + 16 * max(len(lines) for lines in wrapped)
    rows = -(-len(images) // columns)
    sheet = Image.new("RGB", (columns * (side + 8) + 8, rows * cell_height + 8), "white")
    draw = ImageDraw.Draw(sheet)
    for k, ((image, _), lines) in enumerate(zip(images, wrapped)):
        x, y = 8 + (k % columns) * (side + 8), 8 + (k // columns) * cell_height
        sheet.paste(Image.fromarray(np.ascontiguousarray(image)), (x, y))
        draw.multiline_text((x, y + side + 4), "\n".join(lines), fill="black", font=font, spacing=3)
    return np.asarray(sheet)


def write_pictures(saved: Saved) -> List[Path]:
    """The page's figures as PNG (one batch through kaleido) and its gallery as one contact sheet."""
    written = []
    if saved.images:
        written.append(saved.folder / f"facescope-{saved.name}-gallery.png")
        Image.fromarray(contact_sheet(saved.images)).save(written[-1])
    if saved.figures:
        available, reason = png_export_status()
        if not available:
            raise InputError(f"this server cannot draw PNGs of figures: {reason}. In the browser, the camera "
                             "icon above each figure saves it as PNG")
        suffixes = [""] if len(saved.figures) == 1 else [f"-{k + 1}" for k in range(len(saved.figures))]
        figures = {saved.folder / f"facescope-{saved.name}{s}.png": f for s, f in zip(suffixes, saved.figures)}
        written += write_pngs(figures)
    return written


PNG = OnRequest("PNG of the figures", "png", write_pictures)


class Downloads:
    """One page's download area: the files, a button per file written on request, a status line."""

    def __init__(self, failures: Failures, name: str, on_request: Sequence[OnRequest] = (PNG,)):
        self.name = name
        with gr.Accordion("download: data (JSON, CSV) and PNG", open=False):
            self.files = gr.File(label="files", file_count="multiple", interactive=False,
                                 elem_id=f"{name}-downloads")
            with gr.Row():
                buttons = [(gr.Button(request.label, size="sm"), request) for request in on_request]
            status = gr.Markdown()
        self.state = gr.State()
        self.outputs = [self.files, self.state]
        area = f"{name} downloads"
        for button, request in buttons:
            event = button.click(self._writer(failures, area, request), self.state, [self.files, status],
                                 api_name=f"{name}_{request.suffix}")
            event.failure(failures.shower(area, 0), None, status, api_visibility="private")

    def save(self, data: Any, rows: Optional[Sequence[Dict[str, Any]]] = None, figures: Sequence[go.Figure] = (),
             images: Sequence[Captioned] = (), source: Any = None) -> Tuple[List[str], Saved]:
        """Write `data` as JSON and `rows` (when given) as CSV; keep the figures, gallery images
        and `source` for the buttons. Returns the values of `outputs`."""
        folder = FOLDERS.new(self.name)
        files = [folder / f"facescope-{self.name}.json"]
        files[0].write_text(json.dumps(to_jsonable(data), indent=1, allow_nan=False) + "\n")
        if rows:
            files.append(write_csv(folder / f"facescope-{self.name}.csv", rows))
        paths = [str(path) for path in files]
        return paths, Saved(folder, self.name, paths, list(figures), list(images), source)

    @staticmethod
    def _writer(failures: Failures, area: str, request: OnRequest):
        def write(saved: Optional[Saved], http: gr.Request):
            with failures.reported(http, area):
                if saved is None:
                    raise InputError("nothing to download yet: run this tab first")
                written = request.write(saved)
            names = ", ".join(path.name for path in written)
            return saved.files + [str(path) for path in written], f"Wrote {names}."
        return write
