"""The Occlusion page: which part of face A carries its match to face B, for one model."""
from __future__ import annotations

from typing import List

import gradio as gr

import analysis

from ..downloads import Downloads
from ..status import status_text
from ..tabs.occlusion import DEFAULT_PATCH, DEFAULT_STRIDE, PATCH_SIZES, drop_rows, payload, summary
from .context import PageContext, face_index


def page(ctx: PageContext) -> List[gr.Dropdown]:
    with gr.Tab("Occlusion"):
        with gr.Row():
            model = ctx.single_model_chooser()
            patch = gr.Slider(*PATCH_SIZES, value=DEFAULT_PATCH, step=2, label="grey patch side (pixels at 112)")
            stride = gr.Slider(2, PATCH_SIZES[1], value=DEFAULT_STRIDE, step=1, label="stride (pixels)")
        button = gr.Button("Grey out face A, part by part", variant="primary")
        status = gr.Markdown()
        plot = gr.Plot(label="similarity drop over face A, and per landmark patch", elem_id="occlusion-plot")
        downloads = Downloads(ctx.failures, "occlusion")
        with gr.Accordion("details (JSON)", open=False):
            details = gr.JSON(label="occlusion")

    def run(photo_a, photo_b, face_a, face_b, chosen, patch_side, step, request: gr.Request):
        with ctx.failures.reported(request, "occlusion"):
            pair, data = ctx.service.occlusion(photo_a, photo_b, chosen, patch_side, step, face_index(face_a),
                                           face_index(face_b))
        notes = pair.notes + [f"{summary(data)}; {data.drops.size} occluded copies in {data.seconds:.1f} s"]
        shown, figure = payload(pair, data), analysis.occlusion_figure(data)
        return shown, figure, status_text(notes), *downloads.save(shown, drop_rows(data), [figure])

    outputs = [details, plot, status, *downloads.outputs]
    event = button.click(run, ctx.pair_inputs + [model, patch, stride], outputs, api_name="occlusion")
    event.failure(ctx.failures.shower("occlusion", 4), None, [status, details, plot, *downloads.outputs],
                  api_visibility="private")
    return [model]
