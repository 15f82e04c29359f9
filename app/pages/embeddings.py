"""The Embeddings page: the pair's faces placed in a UMAP of the bundled gallery."""
from __future__ import annotations

from typing import List

import gradio as gr

from ..downloads import Downloads
from ..status import escape, status_text
from .context import PageContext, face_index


def page(ctx: PageContext) -> List[gr.Dropdown]:
    with gr.Tab("Embeddings"):
        umap_choice = ctx.single_model_chooser()
        umap_button = gr.Button("Place the photos among the gallery", variant="primary")
        umap_status = gr.Markdown()
        umap_plot = gr.Plot(label="UMAP of the embeddings")
        nearest_text = gr.Markdown()
        downloads = Downloads(ctx.failures, "embeddings")
        with gr.Accordion("details (JSON)", open=False):
            umap_json = gr.JSON(label="placement")

    def embeddings(photo_a, photo_b, face_a, face_b, model, request: gr.Request, progress=gr.Progress()):
        with ctx.failures.reported(request, "embeddings"):
            result = ctx.service.place_in_gallery(photo_a, photo_b, model, face_index(face_a), face_index(face_b),
                                              progress=lambda fraction, text: progress(fraction, desc=text))
        lines = [f"**{label}** lands nearest to " + ", ".join(f"{escape(p)} (best cosine {s:.3f})"
                                                            for p, s in people)
                 for label, people in result.nearest.items()]
        data = {"model": result.model, "nearest": {k: [{"person": p, "cosine": round(s, 6)} for p, s in v]
                                                   for k, v in result.nearest.items()},
                "seconds": {k: round(v, 3) for k, v in result.seconds.items()}, "notes": result.notes}
        text = "\n\n".join(lines) or "Upload a photo to see where it lands among the gallery's people."
        points = [{"person": trace.name, "image": point[1], "x": x, "y": y}
                  for trace in result.figure.data for x, y, point in zip(trace.x, trace.y, trace.customdata)]
        return (data, result.figure, text, status_text(result.notes),
                *downloads.save(data, points, [result.figure]))

    umap_outputs = [umap_json, umap_plot, nearest_text, umap_status, *downloads.outputs]
    umap_event = umap_button.click(embeddings, ctx.pair_inputs + [umap_choice], umap_outputs, api_name="embeddings")
    umap_event.failure(ctx.failures.shower("embeddings", 5), None,
                       [umap_status, umap_json, umap_plot, nearest_text, *downloads.outputs], api_visibility="private")
    return [umap_choice]
