"""The Explain tab: per model, Grad-CAM of each face's similarity to the other and the method's
own maps (`app.panels`), and one model's full analysis figure."""
from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import plotly.graph_objects as go
from PIL import Image

import analysis
from analysis import AnalysisError
from zoo import FaceModel
from zoo.peers import Peer

from ..errors import InputError
from ..models import ZooEntry
from ..panels import own_panels
from ..photos import Pair

EXPLAIN_SIZE = 224  # explanation panels are upscaled from 112 px so the maps read at a glance


@dataclass
class Panel:
    image: np.ndarray
    caption: str


@dataclass
class Explanations:
    """Per model: Grad-CAM of each face's similarity to the other, then the method's own maps."""

    pair: Pair
    panels: Dict[str, List[Panel]]
    notes: Dict[str, List[str]]
    figure: go.Figure  # the detail model's full analysis figure
    figure_model: str


def detail_entry(entries: Sequence[ZooEntry], chosen: Optional[ZooEntry]) -> ZooEntry:
    """The model whose full figure is drawn: `chosen`, else the first explainable of `entries`;
    InputError when that is a pretrained peer (no gradients) or there is none."""
    if chosen is not None:
        if isinstance(chosen.model, Peer):
            raise InputError(f"{chosen.name} is a pretrained peer: it runs outside torch, so it has no "
                             "gradients and no maps to explain; choose a zoo model for the detail figure")
        return chosen
    explainable = [e for e in entries if not isinstance(e.model, Peer)]
    if not explainable:
        raise InputError("only pretrained peers are selected: they run outside torch and cannot be explained; "
                         "select a zoo model too")
    return explainable[0]


def explain(entries: Sequence[ZooEntry], detail: ZooEntry, pair: Pair, lock: threading.RLock) -> Explanations:
    """Each model's panels and notes for the pair, and `detail`'s full analysis figure."""
    face_a, face_b = pair.crops
    panels: Dict[str, List[Panel]] = {}
    notes: Dict[str, List[str]] = {}
    with lock:
        for entry in entries:
            if isinstance(entry.model, Peer):
                panels[entry.name] = []
                notes[entry.name] = [f"{entry.name} is a pretrained peer run outside torch: no Grad-CAM and no "
                                     "maps of its own; its similarity and verdict are in the Verify tab"]
                continue
            panels[entry.name], notes[entry.name] = model_panels(entry.name, entry.model, face_a, face_b)
        figure = detail_figure(detail.model, face_a, face_b)
    return Explanations(pair, panels, notes, figure, detail.name)


def enlarge(image: np.ndarray) -> np.ndarray:
    return np.array(Image.fromarray(image).resize((EXPLAIN_SIZE, EXPLAIN_SIZE), Image.BICUBIC))


def model_panels(name: str, model: FaceModel, face_a: np.ndarray,
                 face_b: np.ndarray) -> Tuple[List[Panel], List[str]]:
    """Grad-CAM of A's similarity to B and of B's to A, then the method's own maps of both faces
    (app.panels); `name` is the model's name in the app (its zoo folder or hub repo id)."""
    panels, notes = [], []
    for label, face, other in (("A", face_a, face_b), ("B", face_b, face_a)):
        cam = analysis.gradcam_similarity(model, face, other)
        panels.append(Panel(enlarge(analysis.overlay(face, cam.cams[0], "Jet", 0.45, (0.0, 1.0))),
                            f"{name} · {label} · Grad-CAM of cos to {'B' if label == 'A' else 'A'} "
                            f"({cam.similarity[0]:.3f})"))
    for label, face in (("A", face_a), ("B", face_b)):
        try:
            own = own_panels(model, face, enlarge)
        except AnalysisError as err:
            notes.append(str(err))
            break
        if own is None:
            notes.append(f"{name} is a plain {model.config.backbone} (method {model.method!r}): it has no maps "
                         "of its own; Grad-CAM shows where its similarity comes from")
            break
        panels += [Panel(image, f"{name} · {label} · {caption}") for image, caption in own]
    return panels, notes


def detail_figure(model: FaceModel, face_a: np.ndarray, face_b: np.ndarray) -> go.Figure:
    """The analysis layer's own figure for the model: the blur sweep of its scale maps, its
    attention figure, or (models without either) Grad-CAM of A against B."""
    available = analysis.available_analyses(model)
    if "scale-map" in available:
        return analysis.scale_maps_figure(analysis.scale_sweep(model, face_a))
    if "attention" in available:
        try:
            return analysis.attention_figure(analysis.attention(model, face_a))
        except AnalysisError:
            pass  # e.g. pyramid masks of a model without a local branch: Grad-CAM still explains it
    return analysis.gradcam_figure(analysis.gradcam_similarity(model, face_a, face_b))
