"""The Error browser page: a model's ranked errors (or disagreements) on a test protocol from stored
per-pair results, both faces of each, the disagreement matrix, and a pair opened as photos A and B."""
from __future__ import annotations

import hashlib
import tempfile
from pathlib import Path
from typing import List

import gradio as gr
import pandas as pd

import analysis
from zoo.data.paths import atomic_write

from ..downloads import Downloads
from ..status import status_text
from ..tabs.error_browser import (DEFAULT_CONDITION, DEFAULT_PROTOCOL, DEFAULT_ROWS, ROW_LIMITS, VIEW_LABELS,
                                  row_record)
from .context import PageContext

# Gradio serves files only from the working directory and the temp folder, and the data root is in
# neither: an opened pair's images are copied here (named as they are, so photo A and B say who).
SERVED = Path(tempfile.gettempdir()) / "facescope-error-browser"
INTRO = ("Each model's mistakes on a test protocol, from the per-pair results stored beside it (no model runs): "
         "false accepts and false rejects at its own fold threshold, the most wrong first, or the pairs where it "
         "and another model disagree. Select a row (or a face pair) to load it as photos A and B, then use "
         "Verify, Explain or Occlusion on it.")


def served_copy(path: Path) -> str:
    """A copy of `path` under SERVED, one folder per source path so two people's 01.jpg never collide."""
    copy = SERVED / hashlib.blake2b(str(path).encode(), digest_size=8).hexdigest() / path.name
    data = path.read_bytes()
    atomic_write(copy, lambda out: out.write(data))
    return str(copy)


def shown_table(table: pd.DataFrame) -> pd.DataFrame:
    """The ranked rows as the page shows them: fewer digits, the pair-list line left to the JSON."""
    return table.drop(columns=["line"]).round(4)


def page(ctx: PageContext) -> List[gr.Dropdown]:
    known = ctx.service.error_browser_protocols()
    protocols = list(known) or [DEFAULT_PROTOCOL]
    conditions = list(dict.fromkeys(c for listed in known.values() for c in listed)) or [DEFAULT_CONDITION]
    protocol = DEFAULT_PROTOCOL if DEFAULT_PROTOCOL in protocols else protocols[0]
    condition = DEFAULT_CONDITION if DEFAULT_CONDITION in conditions else conditions[0]
    with gr.Tab("Error browser"):
        gr.Markdown(INTRO)
        with gr.Row():
            model_choice = ctx.single_model_chooser("model whose pairs to list")
            protocol_choice = gr.Dropdown(protocols, value=protocol, allow_custom_value=True, label="protocol")
            condition_choice = gr.Dropdown(conditions, value=condition, allow_custom_value=True, label="condition")
        with gr.Row():
            view_choice = gr.Radio([(label, key) for key, label in VIEW_LABELS.items()], value="errors", label="list")
            rows_slider = gr.Slider(*ROW_LIMITS, value=DEFAULT_ROWS, step=1, label="rows to show (with their faces)")
        list_button = gr.Button("List the pairs", variant="primary")
        status = gr.Markdown()
        table = gr.Dataframe(label="ranked pairs: the model's outcome, how far from its threshold, each model's "
                                   "similarity (select a row to load it as photos A and B)", interactive=False,
                             wrap=True)
        faces = gr.Gallery(label="both aligned faces of each row", columns=4, height="auto", format="png",
                           object_fit="contain", allow_preview=False)
        with gr.Row():
            rank_number = gr.Number(label="row to load as photos A and B", value=1, precision=0, minimum=1)
            open_button = gr.Button("Load this pair as photos A and B")
        heatmap = gr.Plot(label="pairs on which two models disagree", elem_id="error-heatmap")
        downloads = Downloads(ctx.failures, "error_browser")
        with gr.Accordion("details (JSON)", open=False):
            details = gr.JSON(label="error browser")

    def error_browser(model, protocol, condition, view, rows, models, request: gr.Request):
        with ctx.failures.reported(request, "error browser"):
            result = ctx.service.error_browser(model, protocol, condition, view, rows, models)
        ranked, matrix = result.ranked, result.disagreements
        head = ranked.table.head(int(rows))
        notes = result.notes + ([f"showing the first {len(head)} of {len(ranked.table)} rows"]
                                if len(head) < len(ranked.table) else [])
        payload = {"model": ranked.model, "protocol": ranked.protocol, "condition": ranked.condition,
                   "list": ranked.kind, "pairs_evaluated": ranked.evaluated, "rows_total": len(ranked.table),
                   "message": ranked.message, "rows": [row_record(row) for _, row in head.iterrows()],
                   "disagreements": {"models": matrix.models, "counts": matrix.counts.tolist(),
                                     "compared": matrix.compared.tolist()},
                   "seconds": round(result.seconds, 3)}
        figure = analysis.disagreement_figure(matrix)
        return (payload, shown_table(head), result.faces, figure, status_text(notes[1:], notes[0]),
                *downloads.save(payload, payload["rows"], [figure], result.faces))

    def open_pair(model, protocol, condition, view, rank, models, request: gr.Request):
        with ctx.failures.reported(request, "error browser"):
            first, second, row = ctx.service.error_browser_pair(model, protocol, condition, view, rank, models)
        note = (f"Row {row['rank']} ({row['outcome']}: {first.name} vs {second.name}, similarity "
                f"{row['similarity']:.3f} at threshold {row['threshold']:.3f}) is now photo A and photo B: "
                "use Verify, Explain or Occlusion on it.")
        return served_copy(first), served_copy(second), 1, 1, status_text([], note)

    filters = [model_choice, protocol_choice, condition_choice, view_choice]
    listed = list_button.click(error_browser, [*filters, rows_slider, ctx.model_choice],
                               [details, table, faces, heatmap, status, *downloads.outputs], api_name="error_browser")
    listed.failure(ctx.failures.shower("error browser", 4), None,
                   [status, details, table, faces, heatmap, *downloads.outputs], api_visibility="private")
    open_inputs, open_outputs = [*filters, rank_number, ctx.model_choice], [*ctx.pair_inputs, status]
    loaded = open_button.click(open_pair, open_inputs, open_outputs, api_name="error_browser_open")
    loaded.failure(ctx.failures.shower("error browser", 0), None, status, api_visibility="private")
    for chooser, picked in ((table, picked_row), (faces, picked_face_pair)):  # a click loads the pair at once
        step = chooser.select(picked, None, rank_number, api_visibility="private").then(
            open_pair, open_inputs, open_outputs, api_visibility="private")
        step.failure(ctx.failures.shower("error browser", 0), None, status, api_visibility="private")
    return [model_choice]


def picked_row(event: gr.SelectData) -> int:
    """The rank of the selected table cell's row (the table lists rows 1, 2, ... in order)."""
    return event.index[0] + 1


def picked_face_pair(event: gr.SelectData) -> int:
    return event.index + 1
