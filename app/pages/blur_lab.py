"""The Blur lab page: each chosen model's similarity as one face (or both) is degraded step by step."""
from __future__ import annotations

from typing import List

import gradio as gr

from zoo.data.align import SIZE

from ..downloads import Downloads
from ..status import status_text
from ..tabs.blur_lab import MAX_SIGMA, MIN_SIDE, curve_figure
from .context import PageContext, face_index


def page(ctx: PageContext) -> List[gr.Dropdown]:
    with gr.Tab("Blur lab"):
        with gr.Row():
            kind_radio = gr.Radio([("Gaussian blur", "blur"), ("low resolution", "lowres")], value="blur",
                                  label="degradation")
            target_radio = gr.Radio([("photo B only", "second"), ("both photos", "both")], value="second",
                                    label="applied to")
        sigma_slider = gr.Slider(0, MAX_SIGMA, value=3, step=0.5, label="blur sigma (pixels at 112 px)")
        size_slider = gr.Slider(MIN_SIDE, SIZE, value=20, step=1, label="low-resolution side (pixels)",
                                visible=False)
        blur_button = gr.Button("Draw the curves", variant="primary")
        blur_status = gr.Markdown()
        with gr.Row():
            curve_plot = gr.Plot(label="similarity per degradation level", scale=3)
            with gr.Column(scale=1):
                degraded_a = gr.Image(label="photo A's face as the models see it", height=200, format="png",
                                      interactive=False)
                degraded_b = gr.Image(label="photo B's face as the models see it", height=200, format="png",
                                      interactive=False)
        downloads = Downloads(ctx.failures, "blur_curve")
        with gr.Accordion("details (JSON)", open=False):
            blur_json = gr.JSON(label="curves")

    def blur_curve(photo_a, photo_b, face_a, face_b, models, kind, sigma, size, target, request: gr.Request):
        with ctx.failures.reported(request, "blur"):
            curve = ctx.service.blur_curve(photo_a, photo_b, models, kind, sigma if kind == "blur" else size, target,
                                       face_index(face_a), face_index(face_b))
        data, figure = curve.to_dict(), curve_figure(curve)
        rows = [{"model": model, "level": level, "similarity": value}
                for model, values in curve.similarity.items() for level, value in zip(data["levels"], values)]
        faces = [(face, f"photo {label}'s face at {curve.degradation.kind} {curve.degradation.amount:g}")
                 for face, label in zip(curve.faces_at_amount, "AB")]
        return (data, figure, *curve.faces_at_amount, status_text(curve.pair.notes),
                *downloads.save(data, rows, [figure], faces))

    blur_inputs = ctx.pair_inputs + [ctx.model_choice, kind_radio, sigma_slider, size_slider, target_radio]
    blur_outputs = [blur_json, curve_plot, degraded_a, degraded_b, blur_status, *downloads.outputs]
    blur_failure_outputs = [blur_status, blur_json, curve_plot, degraded_a, degraded_b, *downloads.outputs]
    blur_event = blur_button.click(blur_curve, blur_inputs, blur_outputs, api_name="blur_curve")
    blur_event.failure(ctx.failures.shower("blur", 6), None, blur_failure_outputs, api_visibility="private")
    for slider in (sigma_slider, size_slider):
        redraw = slider.release(blur_curve, blur_inputs, blur_outputs, api_visibility="private")
        redraw.failure(ctx.failures.shower("blur", 6), None, blur_failure_outputs, api_visibility="private")
    kind_radio.change(lambda kind: (gr.update(visible=kind == "blur"), gr.update(visible=kind == "lowres")),
                      kind_radio, [sigma_slider, size_slider], api_visibility="private")
    return []
