"""The Gradio layout: two photos on top, one tab per question, each wired to `app.service`.

Every event that does work has an `api_name`, so `gradio_client` can call what the page does
(parameter names are the handlers'; faces are numbered from 1, largest first):

    /detect_faces (photo)                                       -> the faces found, to choose from
    /verify       (photo_a, photo_b, face_a, face_b, models)    -> similarity and verdict per model
    /blur_curve   (..., models, kind, sigma, size, target)      -> similarity per degradation level
    /explain      (..., models, detail_model)                   -> Grad-CAM and each method's own maps
    /embeddings   (photo_a, photo_b, face_a, face_b, model)     -> the gallery's UMAP with the photos in it
    /zoo_list     ()                                            -> models, thresholds and accuracies
    /model_card   (model)                                       -> a model's card
    /pull_model   (repo_id, revision)                           -> pulls a hub checkpoint, usable at once

Each result starts with a JSON of plain data. A failure raises gr.Error with the service's
message: gradio_client raises it as an exception, the browser shows it as a toast and,
through the event's .failure() step, in the tab's status line (`app.status.Failures`).
"""
from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import gradio as gr
import pandas as pd

import analysis

from zoo.data.align import SIZE

from .photos import Photo, rounded
from .service import Service
from .status import Failures, escape, status_text
from .tabs.blur_lab import MAX_SIGMA, MIN_SIDE, curve_figure
from .tabs.occlusion import DEFAULT_PATCH, DEFAULT_STRIDE, PATCH_SIZES
from .tabs.verify import similarity_figure, verdict_html

EXAMPLES_DIR = Path(__file__).resolve().parent / "examples"
EXAMPLES = [("leonardo_dicaprio_1.jpg", "leonardo_dicaprio_2.jpg", "same person"),
            ("leonardo_dicaprio_1.jpg", "condoleezza_rice.jpg", "different people"),
            ("celeba_small_face.jpg", "condoleezza_rice.jpg", "a 36-pixel face"),
            ("cfp_profile.jpg", "leonardo_dicaprio_2.jpg", "a profile")]
INTRO = """# FaceScope
See what each face-recognition model sees. Upload two photos (or pick an example): the faces are
detected and aligned as the models need them; choose a face when a photo holds several. Then
**Verify** compares them with every selected model, **Blur lab** degrades them step by step,
**Explain** shows where each model looks, **Embeddings** places them among a gallery of known
people, and **Zoo** lists the models and pulls more from the Hugging Face Hub.
A threshold marked *uncalibrated* is the default cosine 0.3, not one measured for that model.
Research use only: these models are not fit for decisions about people."""


def _face_index(number) -> int:
    """The UI's 1-based face number as the service's 0-based index (empty means the largest)."""
    return 0 if number in (None, "") else int(number) - 1


def detection_outputs(photo: Photo, number) -> tuple:
    """(faces JSON, preview with boxes, aligned crops, status) of a photo with face `number` chosen."""
    index = _face_index(number)
    face = photo.face(index)
    faces = [(f.crop, f"face {k + 1}" + (" (largest)" if k == 0 and len(photo.faces) > 1 else ""))
             for k, f in enumerate(photo.faces)]
    found = f"{len(photo.faces)} face{'s' if len(photo.faces) > 1 else ''} in {photo.name}"
    where = "pre-aligned crop" if face.box is None else f"{face.detector} detector"
    using = f"using face {index + 1} ({where})"
    if len(photo.faces) > 1:
        using += "; click another face below to use it"
    info = {"name": photo.name, "size": list(photo.original_size), "chosen": index + 1, "notes": list(photo.notes),
            "faces": [{"face": k + 1, "box": rounded(f.box), "detector": f.detector, "score": round(f.score, 4)}
                      for k, f in enumerate(photo.faces)]}
    status = status_text(list(photo.notes), f"{found}: {using}.")
    return info, photo.preview(index), faces, status


def photo_column(service: Service, failures: Failures, label: str):
    """Upload, detected faces and face choice of one photo; returns (file, face number) components."""
    area = f"photo {label}"
    with gr.Column(variant="panel"):
        with gr.Row():
            upload = gr.File(label=f"photo {label}", file_types=["image"], type="filepath", height=200,
                            elem_id=f"photo-{label.lower()}")
            preview = gr.Image(label=f"faces found in photo {label}", interactive=False, height=200, format="png")
        with gr.Row():
            faces = gr.Gallery(label="aligned faces (click one to use it)", columns=5, height=120, format="png",
                               allow_preview=False, object_fit="contain", fit_columns=False, scale=2,
                               elem_id=f"photo-{label.lower()}-faces")
            number = gr.Number(label="face to use (1 = largest)", value=1, precision=0, minimum=1, scale=1)
        status = gr.Markdown(elem_id=f"status-{label.lower()}")
        info = gr.JSON(label=f"faces of photo {label}", visible=False)

    def detect(photo, request: gr.Request):
        if not photo:
            return None, None, None, 1, ""
        with failures.reported(request, area):
            details, image, crops, text = detection_outputs(service.photo(photo, area), 1)
        return details, image, crops, 1, text

    def choose(photo, face, request: gr.Request):
        if not photo:
            return None, None, ""
        with failures.reported(request, area):
            details, image, _, text = detection_outputs(service.photo(photo, area), face)
        return details, image, text

    def pick(event: gr.SelectData):
        return event.index + 1

    # Photo B's detection is the same endpoint as A's: only A's is listed in the API.
    detected = upload.change(detect, upload, [info, preview, faces, number, status],
                            api_name="detect_faces" if label == "A" else None,
                            api_visibility="public" if label == "A" else "private")
    detected.failure(failures.shower(area, 3), None, [status, info, preview, faces], api_visibility="private")
    chosen = number.change(choose, [upload, number], [info, preview, status], api_visibility="private")
    chosen.failure(failures.shower(area, 0), None, status, api_visibility="private")
    faces.select(pick, None, number, api_visibility="private")
    return upload, number


def verify_tab(service: Service, failures: Failures, pair_inputs: list, model_choice: gr.Dropdown) -> None:
    with gr.Tab("Verify"):
        verify_button = gr.Button("Verify", variant="primary", elem_id="verify-button")
        verify_status = gr.Markdown(elem_id="verify-status")
        with gr.Row():
            verdict = gr.HTML(elem_id="verdict")
            similarity_plot = gr.Plot(label="similarity and threshold per model", elem_id="similarity-plot")
        with gr.Accordion("details (JSON)", open=False):
            verify_json = gr.JSON(label="verification")

    def verify(photo_a, photo_b, face_a, face_b, models, request: gr.Request):
        with failures.reported(request, "verify"):
            result = service.verify(photo_a, photo_b, models, _face_index(face_a), _face_index(face_b))
        data = {**result.pair.describe(), "models": [v.to_dict() for v in result.verdicts],
                "notes": result.pair.notes, "seconds": round(result.seconds, 4)}
        return data, verdict_html(result), similarity_figure(result), status_text(result.pair.notes)

    verify_event = verify_button.click(verify, pair_inputs + [model_choice],
                                       [verify_json, verdict, similarity_plot, verify_status], api_name="verify")
    verify_event.failure(failures.shower("verify", 3), None, [verify_status, verify_json, verdict, similarity_plot],
                         api_visibility="private")


def blur_lab_tab(service: Service, failures: Failures, pair_inputs: list, model_choice: gr.Dropdown) -> None:
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
        with gr.Accordion("details (JSON)", open=False):
            blur_json = gr.JSON(label="curves")

    def blur_curve(photo_a, photo_b, face_a, face_b, models, kind, sigma, size, target, request: gr.Request):
        with failures.reported(request, "blur"):
            curve = service.blur_curve(photo_a, photo_b, models, kind, sigma if kind == "blur" else size, target,
                                       _face_index(face_a), _face_index(face_b))
        return (curve.to_dict(), curve_figure(curve), *curve.faces_at_amount, status_text(curve.pair.notes))

    blur_inputs = pair_inputs + [model_choice, kind_radio, sigma_slider, size_slider, target_radio]
    blur_outputs = [blur_json, curve_plot, degraded_a, degraded_b, blur_status]
    blur_failure_outputs = [blur_status, blur_json, curve_plot, degraded_a, degraded_b]
    blur_event = blur_button.click(blur_curve, blur_inputs, blur_outputs, api_name="blur_curve")
    blur_event.failure(failures.shower("blur", 4), None, blur_failure_outputs, api_visibility="private")
    for slider in (sigma_slider, size_slider):
        redraw = slider.release(blur_curve, blur_inputs, blur_outputs, api_visibility="private")
        redraw.failure(failures.shower("blur", 4), None, blur_failure_outputs, api_visibility="private")
    kind_radio.change(lambda kind: (gr.update(visible=kind == "blur"), gr.update(visible=kind == "lowres")),
                      kind_radio, [sigma_slider, size_slider], api_visibility="private")


def explain_tab(service: Service, failures: Failures, pair_inputs: list, model_choice: gr.Dropdown,
                names: List[str]) -> gr.Dropdown:
    """The Explain tab; returns its chooser of the detail model."""
    with gr.Tab("Explain"):
        detail_choice = gr.Dropdown(names, value=names[0] if names else None, allow_custom_value=True,
                                    label="full analysis figure of")
        explain_button = gr.Button("Explain", variant="primary")
        explain_status = gr.Markdown()
        panels = gr.Gallery(label="Grad-CAM of each face's similarity to the other, then each method's "
                                  "own maps", columns=4, height="auto", format="png", object_fit="contain")
        detail_plot = gr.Plot(label="full analysis figure")
        with gr.Accordion("details (JSON)", open=False):
            explain_json = gr.JSON(label="explanations")

    def explain(photo_a, photo_b, face_a, face_b, models, detail_model, request: gr.Request):
        with failures.reported(request, "explain"):
            result = service.explain(photo_a, photo_b, models, detail_model, _face_index(face_a),
                                     _face_index(face_b))
        images = [(p.image, p.caption) for model_panels in result.panels.values() for p in model_panels]
        notes = result.pair.notes + [n for model_notes in result.notes.values() for n in model_notes]
        data = {**result.pair.describe(), "detail_model": result.figure_model,
                "models": {m: {"panels": [p.caption for p in ps], "notes": result.notes[m]}
                           for m, ps in result.panels.items()}}
        return data, images, result.figure, status_text(notes)

    explain_event = explain_button.click(explain, pair_inputs + [model_choice, detail_choice],
                                         [explain_json, panels, detail_plot, explain_status], api_name="explain")
    explain_event.failure(failures.shower("explain", 3), None,
                          [explain_status, explain_json, panels, detail_plot], api_visibility="private")
    return detail_choice


def occlusion_tab(service: Service, failures: Failures, pair_inputs: list, names: List[str]) -> gr.Dropdown:
    """The Occlusion tab; returns its model chooser."""
    with gr.Tab("Occlusion"):
        with gr.Row():
            model = gr.Dropdown(names, value=names[0] if names else None, allow_custom_value=True, label="model")
            patch = gr.Slider(*PATCH_SIZES, value=DEFAULT_PATCH, step=2, label="grey patch side (pixels at 112)")
            stride = gr.Slider(2, PATCH_SIZES[1], value=DEFAULT_STRIDE, step=1, label="stride (pixels)")
        button = gr.Button("Grey out face A, part by part", variant="primary")
        status = gr.Markdown()
        plot = gr.Plot(label="similarity drop over face A, and per landmark patch")
        with gr.Accordion("details (JSON)", open=False):
            details = gr.JSON(label="occlusion")

    def run(photo_a, photo_b, face_a, face_b, chosen, patch_side, step, request: gr.Request):
        with failures.reported(request, "occlusion"):
            pair, data = service.occlusion(photo_a, photo_b, chosen, patch_side, step, _face_index(face_a),
                                           _face_index(face_b))
        strongest = max(data.landmarks, key=data.landmarks.get)
        notes = pair.notes + [f"{data.model}: similarity {data.similarity:.3f}; greying the {strongest} lowers it most "
                              f"({data.landmarks[strongest]:.3f}); {data.drops.size} occluded copies in "
                              f"{data.seconds:.1f} s"]
        payload = {**pair.describe(), "model": data.model, "similarity": round(data.similarity, 6),
                   "patch": data.patch, "stride": data.stride, "landmark_drops": {
                       k: round(v, 6) for k, v in data.landmarks.items()},
                   "drops": data.drops.round(6).tolist(), "seconds": round(data.seconds, 3)}
        return payload, analysis.occlusion_figure(data), status_text(notes)

    event = button.click(run, pair_inputs + [model, patch, stride], [details, plot, status], api_name="occlusion")
    event.failure(failures.shower("occlusion", 2), None, [status, details, plot], api_visibility="private")
    return model


def embeddings_tab(service: Service, failures: Failures, pair_inputs: list, names: List[str]) -> gr.Dropdown:
    """The Embeddings tab; returns its model chooser."""
    with gr.Tab("Embeddings"):
        umap_choice = gr.Dropdown(names, value=names[0] if names else None, allow_custom_value=True, label="model")
        umap_button = gr.Button("Place the photos among the gallery", variant="primary")
        umap_status = gr.Markdown()
        umap_plot = gr.Plot(label="UMAP of the embeddings")
        nearest_text = gr.Markdown()
        with gr.Accordion("details (JSON)", open=False):
            umap_json = gr.JSON(label="placement")

    def embeddings(photo_a, photo_b, face_a, face_b, model, request: gr.Request, progress=gr.Progress()):
        with failures.reported(request, "embeddings"):
            result = service.place_in_gallery(photo_a, photo_b, model, _face_index(face_a), _face_index(face_b),
                                              progress=lambda fraction, text: progress(fraction, desc=text))
        lines = [f"**{label}** lands nearest to " + ", ".join(f"{escape(p)} (best cosine {s:.3f})"
                                                            for p, s in people)
                 for label, people in result.nearest.items()]
        data = {"model": result.model, "nearest": {k: [{"person": p, "cosine": round(s, 6)} for p, s in v]
                                                   for k, v in result.nearest.items()},
                "seconds": {k: round(v, 3) for k, v in result.seconds.items()}, "notes": result.notes}
        text = "\n\n".join(lines) or "Upload a photo to see where it lands among the gallery's people."
        return data, result.figure, text, status_text(result.notes)

    umap_event = umap_button.click(embeddings, pair_inputs + [umap_choice],
                                   [umap_json, umap_plot, nearest_text, umap_status], api_name="embeddings")
    umap_event.failure(failures.shower("embeddings", 3), None, [umap_status, umap_json, umap_plot, nearest_text],
                       api_visibility="private")
    return umap_choice


def zoo_tab(service: Service, failures: Failures, demo: gr.Blocks, choosers: List[gr.Dropdown]) -> None:
    """The Zoo tab; a pull (and every page load) updates `choosers` (the pair's models, the detail
    model, the map's model) and the tab's own card chooser."""
    with gr.Tab("Zoo"):
        zoo_table = gr.Dataframe(label="models (accuracy from each model's card; '-': not measured)",
                                 interactive=False, wrap=True)
        refresh_button = gr.Button("Refresh the list")
        with gr.Group():
            gr.Markdown(f"&nbsp;**Pull a model from a repo on {escape(service.hub_endpoint)} and use it at "
                        "once** (the hub is the server's choice: `python app.py --hub-endpoint URL`)")
            with gr.Row():
                repo_box = gr.Textbox(label="repo id", placeholder="ORG/NAME, e.g. facescope/scan-mobilefacenet.fss-ft")
                revision_box = gr.Textbox(label="revision (optional)", placeholder="branch, tag or commit")
            pull_button = gr.Button("Pull and use", variant="primary")
        pull_status = gr.Markdown()
        entries = [e.name for e in service.entries()]
        card_choice = gr.Dropdown(entries, value=entries[0] if entries else None, allow_custom_value=True,
                                  label="model card of")
        card_text = gr.Markdown()
    choosers = [*choosers, card_choice]

    def zoo_list(request: gr.Request):
        with failures.reported(request, "zoo"):
            headers, rows = service.zoo_table()
        return pd.DataFrame(rows, columns=headers)

    def model_card(model, request: gr.Request):
        if not model:
            return ""
        with failures.reported(request, "zoo"):
            return service.card(model)

    def selectors(selected: Optional[str] = None) -> tuple:
        """Updates of every model chooser, after a pull or when a page (re)loads."""
        usable = service.model_names()
        top = selected or (usable[0] if usable else None)
        singles = [gr.update(choices=usable, value=top) for _ in choosers[1:-1]]  # one model each
        return (gr.update(choices=usable, value=usable), *singles,
                gr.update(choices=[e.name for e in service.entries()], **({"value": selected} if selected else {})))

    def pull_model(repo_id, revision, request: gr.Request):
        with failures.reported(request, "zoo"):
            entry = service.pull(repo_id, revision)
        threshold = (f"threshold {entry.threshold:.4f}" if entry.calibrated else
                     f"uncalibrated threshold {entry.threshold:g}: no evaluation in its config.json")
        status = (f"Pulled **{escape(entry.name)}** ({escape(entry.model.name)}, {threshold}) from "
                  f"{escape(entry.source)}; it is selected in every tab.")
        return (status, zoo_list(request), *selectors(entry.name))

    def refresh(request: gr.Request):
        return (zoo_list(request), *selectors())

    refresh_event = refresh_button.click(zoo_list, None, zoo_table, api_name="zoo_list")
    refresh_event.failure(failures.shower("zoo", 0), None, pull_status, api_visibility="private")
    card_event = card_choice.change(model_card, card_choice, card_text, api_name="model_card")
    card_event.failure(failures.shower("zoo", 0), None, pull_status, api_visibility="private")
    pull_event = pull_button.click(pull_model, [repo_box, revision_box],
                                   [pull_status, zoo_table, *choosers], api_name="pull_model")
    pull_event.failure(failures.shower("zoo", 0), None, pull_status, api_visibility="private")
    demo.load(refresh, None, [zoo_table, *choosers], api_visibility="private")
    demo.load(model_card, card_choice, card_text, api_visibility="private")


def zoo_note(service: Service, names: List[str]) -> str:
    """What the page says under the intro about the models it serves."""
    note = (f"{len(names)} models from `{service.zoo_dir}`." if names else
            f"**The zoo at `{service.zoo_dir}` has no usable model**: pull one in the Zoo tab.")
    imported = [e.name for e in service.entries() if e.model is not None and "imported_from" in e.config]
    if imported:
        note += (f" {', '.join(f'`{escape(n)}`' for n in imported)} (listed first): pretrained weights "
                 "imported unchanged, the reference the other models are compared with.")
    return note


def build(service: Service) -> gr.Blocks:
    """The app's Blocks on `service`: two photos and the model choice on top, then one tab per question."""
    failures = Failures()
    names = service.model_names()
    with gr.Blocks(title="FaceScope", analytics_enabled=False) as demo:
        gr.Markdown(INTRO + "\n\n" + zoo_note(service, names))
        with gr.Row():
            columns = [photo_column(service, failures, label) for label in ("A", "B")]
        photos, numbers = [c[0] for c in columns], [c[1] for c in columns]
        gr.Examples([[str(EXAMPLES_DIR / a), str(EXAMPLES_DIR / b)] for a, b, _ in EXAMPLES], inputs=photos,
                    example_labels=[text for _, _, text in EXAMPLES], label="bundled photos")
        model_choice = gr.Dropdown(names, value=names, multiselect=True, allow_custom_value=True,
                                   label="models to compare", elem_id="models")
        pair_inputs = [photos[0], photos[1], numbers[0], numbers[1]]
        with gr.Tabs():
            verify_tab(service, failures, pair_inputs, model_choice)
            blur_lab_tab(service, failures, pair_inputs, model_choice)
            detail_choice = explain_tab(service, failures, pair_inputs, model_choice, names)
            occlusion_choice = occlusion_tab(service, failures, pair_inputs, names)
            umap_choice = embeddings_tab(service, failures, pair_inputs, names)
            zoo_tab(service, failures, demo, [model_choice, detail_choice, occlusion_choice, umap_choice])
    return demo
