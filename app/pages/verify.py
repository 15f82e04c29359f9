"""The Verify page: similarity and verdict of the pair under every chosen model."""
from __future__ import annotations

from typing import List

import gradio as gr

from ..downloads import Downloads
from ..status import status_text
from ..tabs.verify import similarity_figure, verdict_html
from .context import PageContext, face_index


def page(ctx: PageContext) -> List[gr.Dropdown]:
    with gr.Tab("Verify"):
        verify_button = gr.Button("Verify", variant="primary", elem_id="verify-button")
        verify_status = gr.Markdown(elem_id="verify-status")
        with gr.Row():
            verdict = gr.HTML(elem_id="verdict")
            similarity_plot = gr.Plot(label="similarity and threshold per model", elem_id="similarity-plot")
        downloads = Downloads(ctx.failures, "verify")
        with gr.Accordion("details (JSON)", open=False):
            verify_json = gr.JSON(label="verification")

    def verify(photo_a, photo_b, face_a, face_b, models, request: gr.Request):
        with ctx.failures.reported(request, "verify"):
            result = ctx.service.verify(photo_a, photo_b, models, face_index(face_a), face_index(face_b))
        data = {**result.pair.describe(), "models": [v.to_dict() for v in result.verdicts],
                "notes": result.pair.notes, "seconds": round(result.seconds, 4)}
        figure = similarity_figure(result)
        return (data, verdict_html(result), figure, status_text(result.pair.notes),
                *downloads.save(data, data["models"], [figure]))

    verify_event = verify_button.click(verify, ctx.pair_inputs + [ctx.model_choice],
                                       [verify_json, verdict, similarity_plot, verify_status, *downloads.outputs],
                                       api_name="verify")
    verify_event.failure(ctx.failures.shower("verify", 5), None,
                         [verify_status, verify_json, verdict, similarity_plot, *downloads.outputs],
                         api_visibility="private")
    return []
