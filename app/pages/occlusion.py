"""The Occlusion page: which part of face A carries its match to face B, for one model."""
from __future__ import annotations

from typing import List

import gradio as gr

import analysis

from ..status import status_text
from ..tabs.occlusion import DEFAULT_PATCH, DEFAULT_STRIDE, PATCH_SIZES
from .context import PageContext, face_index


def page(ctx: PageContext) -> List[gr.Dropdown]:
    with gr.Tab("Occlusion"):
        with gr.Row():
            model = ctx.single_model_chooser()
            patch = gr.Slider(*PATCH_SIZES, value=DEFAULT_PATCH, step=2, label="grey patch side (pixels at 112)")
            stride = gr.Slider(2, PATCH_SIZES[1], value=DEFAULT_STRIDE, step=1, label="stride (pixels)")
        button = gr.Button("Grey out face A, part by part", variant="primary")
        status = gr.Markdown()
        plot = gr.Plot(label="similarity drop over face A, and per landmark patch")
        with gr.Accordion("details (JSON)", open=False):
            details = gr.JSON(label="occlusion")

    def run(photo_a, photo_b, face_a, face_b, chosen, patch_side, step, request: gr.Request):
        with ctx.failures.reported(request, "occlusion"):
            pair, data = ctx.service.occlusion(photo_a, photo_b, chosen, patch_side, step, face_index(face_a),
                                           face_index(face_b))
        strongest = max(data.landmarks, key=data.landmarks.get)
        notes = pair.notes + [f"{data.model}: similarity {data.similarity:.3f}; greying the {strongest} lowers it most "
                              f"({data.landmarks[strongest]:.3f}); {data.drops.size} occluded copies in "
                              f"{data.seconds:.1f} s"]
        payload = {**pair.describe(), "model": data.model, "similarity": round(data.similarity, 6),
                   "patch": data.patch, "stride": data.stride, "landmark_drops": {
                       k: round(v, 6) for k, v in data.landmarks.items()},
                   "drops": data.drops.round(6).tolist(), "seconds": round(data.seconds, 3)}
        return payload, analysis.occlusion_figure(data), status_text(notes)

    event = button.click(run, ctx.pair_inputs + [model, patch, stride], [details, plot, status], api_name="occlusion")
    event.failure(ctx.failures.shower("occlusion", 2), None, [status, details, plot], api_visibility="private")
    return [model]
