"""The Compare page: every chosen model's maps of the pair side by side, and the report button."""
from __future__ import annotations

from pathlib import Path
from typing import List

import gradio as gr

from ..downloads import PNG, Downloads, OnRequest, Saved
from ..status import status_text
from ..tabs.blur_lab import curve_figure
from ..tabs.compare import comparison_figure, payload, report, rows
from ..tabs.occlusion import DEFAULT_PATCH, DEFAULT_STRIDE, PATCH_SIZES
from .context import PageContext, face_index


def write_report(saved: Saved) -> List[Path]:
    """The last comparison as one self-contained HTML page (faces, verdicts, maps, curves, numbers)."""
    path = saved.folder / "facescope-compare-report.html"
    path.write_text(report(saved.source), encoding="utf-8")
    return [path]


def page(ctx: PageContext) -> List[gr.Dropdown]:
    with gr.Tab("Compare"):
        gr.Markdown("Where each model chosen on top looks on face A, one row per model: Grad-CAM of its "
                    "similarity to face B, the similarity drop as a grey patch slides over it (the Occlusion tab), "
                    "the method's own map (the Explain tab) and the drop per landmark patch.")
        with gr.Row():
            patch = gr.Slider(*PATCH_SIZES, value=DEFAULT_PATCH, step=2, label="occlusion: grey patch side (pixels)")
            stride = gr.Slider(2, PATCH_SIZES[1], value=DEFAULT_STRIDE, step=1, label="occlusion: stride (pixels)")
        button = gr.Button("Compare where the models look", variant="primary")
        status = gr.Markdown()
        maps = gr.Plot(label="one row per model", elem_id="compare-maps")
        curve = gr.Plot(label="similarity as face B is blurred")
        downloads = Downloads(ctx.failures, "compare", (PNG, OnRequest("report (one HTML page)", "report",
                                                                        write_report)))
        with gr.Accordion("details (JSON)", open=False):
            details = gr.JSON(label="comparison")

    def run(photo_a, photo_b, face_a, face_b, models, patch_side, step, request: gr.Request, progress=gr.Progress()):
        with ctx.failures.reported(request, "compare"):
            result = ctx.service.compare(photo_a, photo_b, models, patch_side, step, face_index(face_a),
                                         face_index(face_b), lambda done, text: progress(done, desc=text))
        shown, figures = payload(result), [comparison_figure(result), curve_figure(result.curve)]
        notes = result.pair.notes + list(dict.fromkeys(f"{v.verdict.model}: {why}" for v in result.views
                                                       for why in v.missing.values()))
        return (shown, *figures, status_text(notes, f"{len(result.views)} models compared."),
                *downloads.save(shown, rows(result), figures, source=result))

    outputs = [details, maps, curve, status, *downloads.outputs]
    event = button.click(run, ctx.pair_inputs + [ctx.model_choice, patch, stride], outputs, api_name="compare")
    event.failure(ctx.failures.shower("compare", 5), None, [status, details, maps, curve, *downloads.outputs],
                  api_visibility="private")
    return []
