"""The Gradio page: two photos and the models to compare on top, then one tab per question
(`app.pages`, each wired to `app.service`).

Every event that does work has an `api_name`, so `gradio_client` can call what the page does
(parameter names are the handlers'; faces are numbered from 1, largest first):

    /detect_faces (photo)                                       -> the faces found, to choose from
    /verify       (photo_a, photo_b, face_a, face_b, models)    -> similarity and verdict per model
    /blur_curve   (..., models, kind, sigma, size, target)      -> similarity per degradation level
    /explain      (..., models, detail_model)                   -> Grad-CAM and each method's own maps
    /occlusion    (..., model, patch, stride)                   -> similarity drop as parts of face A are greyed
    /compare      (..., models, patch, stride)                  -> per model: verdict, Grad-CAM, occlusion, own map
    /compare_report ()                                          -> the last comparison as one self-contained HTML page
    /<tab>_png    ()  (verify, blur_curve, explain, occlusion, compare, embeddings) -> the tab's last figures as PNG
    /error_browser      (model, protocol, condition, view, rows, models) -> ranked errors or disagreements, matrix
    /error_browser_open (model, protocol, condition, view, rank, models) -> that row's images as photos A and B
    /embeddings   (photo_a, photo_b, face_a, face_b, model)     -> the gallery's UMAP with the photos in it
    /zoo_list     ()                                            -> models, thresholds and accuracies
    /model_card   (model)                                       -> a model's card
    /pull_model   (repo_id, revision)                           -> pulls a hub checkpoint, usable at once

Each result starts with a JSON of plain data; a tab that offers downloads (`app.downloads`) ends
its result with the files (JSON, CSV) and the PNG and report endpoints render the session's last
result. A failure raises gr.Error with the service's
message: gradio_client raises it as an exception, the browser shows it as a toast and,
through the event's .failure() step, in the tab's status line (`app.status.Failures`).
"""
from __future__ import annotations

from pathlib import Path
from typing import List

import gradio as gr

from .pages import PAGES, PageContext, face_index, zoo_page
from .photos import Photo, rounded
from .service import Service
from .status import Failures, escape, status_text

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


def detection_outputs(photo: Photo, number) -> tuple:
    """(faces JSON, preview with boxes, aligned crops, status) of a photo with face `number` chosen."""
    index = face_index(number)
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
        model_choice = gr.Dropdown(names, value=service.default_model_names(), multiselect=True, allow_custom_value=True,
                                   label="models to compare", elem_id="models")
        pair_inputs = [photos[0], photos[1], numbers[0], numbers[1]]
        with gr.Tabs():
            context = PageContext(service, failures, pair_inputs, model_choice, names)
            choosers = [model_choice] + [chooser for page in PAGES for chooser in page(context)]
            zoo_page.page(context, demo, choosers)
    return demo
