"""The Explain page: Grad-CAM and each method's own maps per chosen model, and one model's full figure."""
from __future__ import annotations

from typing import List

import gradio as gr

from ..downloads import Downloads
from ..status import status_text
from .context import PageContext, face_index


def page(ctx: PageContext) -> List[gr.Dropdown]:
    with gr.Tab("Explain"):
        detail_choice = ctx.single_model_chooser("full analysis figure of")
        explain_button = gr.Button("Explain", variant="primary")
        explain_status = gr.Markdown()
        panels = gr.Gallery(label="Grad-CAM of each face's similarity to the other, then each method's "
                                  "own maps", columns=4, height="auto", format="png", object_fit="contain")
        detail_plot = gr.Plot(label="full analysis figure")
        downloads = Downloads(ctx.failures, "explain")
        with gr.Accordion("details (JSON)", open=False):
            explain_json = gr.JSON(label="explanations")

    def explain(photo_a, photo_b, face_a, face_b, models, detail_model, request: gr.Request):
        with ctx.failures.reported(request, "explain"):
            result = ctx.service.explain(photo_a, photo_b, models, detail_model, face_index(face_a),
                                     face_index(face_b))
        images = [(p.image, p.caption) for model_panels in result.panels.values() for p in model_panels]
        notes = result.pair.notes + [n for model_notes in result.notes.values() for n in model_notes]
        data = {**result.pair.describe(), "detail_model": result.figure_model,
                "models": {m: {"panels": [p.caption for p in ps], "notes": result.notes[m]}
                           for m, ps in result.panels.items()}}
        return data, images, result.figure, status_text(notes), *downloads.save(data, None, [result.figure], images)

    explain_event = explain_button.click(explain, ctx.pair_inputs + [ctx.model_choice, detail_choice],
                                         [explain_json, panels, detail_plot, explain_status, *downloads.outputs],
                                         api_name="explain")
    explain_event.failure(ctx.failures.shower("explain", 5), None,
                          [explain_status, explain_json, panels, detail_plot, *downloads.outputs],
                          api_visibility="private")
    return [detail_choice]
