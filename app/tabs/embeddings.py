"""The Embeddings tab: the bundled gallery of known people on a UMAP, the uploaded faces among
them, and the people each upload lands nearest to."""
from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
import plotly.graph_objects as go

import analysis
from zoo.data import load_image

from ..errors import InputError
from ..models import ZooEntry
from ..photos import UPLOAD_LABELS, PhotoCache

GALLERY_DIR = Path(__file__).resolve().parents[1] / "gallery"

Progress = Callable[[float, str], None]


@dataclass
class GalleryPlacement:
    """The UMAP of the bundled gallery with the uploaded faces in it, and each upload's nearest people."""

    model: str
    figure: go.Figure
    nearest: Dict[str, List[Tuple[str, float]]]  # upload label -> [(person, best cosine)], best first
    seconds: Dict[str, float]
    notes: List[str]


@dataclass
class Gallery:
    faces: np.ndarray  # (N, 112, 112, 3) uint8
    labels: np.ndarray  # (N,)
    people: List[str]
    paths: List[str]


def load_gallery(folder: Path = GALLERY_DIR) -> Gallery:
    """The bundled labelled crops: one sub-folder per person (see app.build_gallery)."""
    people = sorted(p.name for p in folder.iterdir() if p.is_dir()) if folder.is_dir() else []
    files = [(k, f) for k, person in enumerate(people) for f in sorted((folder / person).glob("*.jpg"))]
    if not files:
        raise InputError(f"the face gallery {folder} is missing or empty: rebuild it with "
                         "`python -m app.build_gallery`")
    return Gallery(np.stack([load_image(f) for _, f in files]), np.array([k for k, _ in files]), people,
                   [str(f.relative_to(folder)) for _, f in files])


class GalleryMap:
    """The gallery, read on first use, and whether UMAP has been compiled yet (the first map
    since the app started takes about 20 s more, which the progress bar says)."""

    def __init__(self, folder: Path = GALLERY_DIR):
        self.folder = folder
        self._gallery: Optional[Gallery] = None
        self._umap_compiled = False

    def gallery(self) -> Gallery:
        if self._gallery is None:
            self._gallery = load_gallery(self.folder)
        return self._gallery

    def place(self, entry: ZooEntry, photos: PhotoCache, photo_paths: Sequence, indices: Sequence[int],
              lock: threading.RLock, progress: Optional[Progress] = None) -> GalleryPlacement:
        """UMAP of the gallery's embeddings by `entry` with the chosen faces of the given photos
        (either, both or none: an empty path is skipped) in it."""
        report = progress or (lambda fraction, message: None)
        gallery = self.gallery()
        uploads, notes = [], []
        for label, path, index in zip(UPLOAD_LABELS, photo_paths, indices):
            if path is not None and str(path) != "":
                photo = photos.photo(path, label)
                uploads.append((label, photo.face(int(index)).crop))
                notes += [f"{label} ({photo.name}): {note}" for note in photo.notes]
        faces = np.concatenate([gallery.faces] + [crop[None] for _, crop in uploads])
        labels = np.concatenate([gallery.labels, len(gallery.people) + np.arange(len(uploads))])
        people = gallery.people + [label for label, _ in uploads]
        paths = gallery.paths + [label for label, _ in uploads]
        report(0.1, f"embedding {len(faces)} faces with {entry.name}")
        with lock:
            if not self._umap_compiled:
                report(0.3, "compiling UMAP (first use since the app started: about 20 s)")
            data = analysis.embedding_umap(entry.model, faces, labels, people, paths, cache=False)
            self._umap_compiled = True
            embeddings = entry.model.embed(entry.model.preprocess(faces))
        report(0.9, "drawing the map")
        nearest = {}
        for k, (label, _) in enumerate(uploads):
            scores = (embeddings[:len(gallery.faces)] @ embeddings[len(gallery.faces) + k]).numpy()
            best = {gallery.people[p]: float(scores[gallery.labels == p].max()) for p in range(len(gallery.people))}
            nearest[label] = sorted(best.items(), key=lambda item: -item[1])[:3]
        return GalleryPlacement(entry.name, placement_figure(data, [label for label, _ in uploads]), nearest,
                                data.seconds, notes)


def placement_figure(data: analysis.EmbeddingMap, uploads: List[str]) -> go.Figure:
    """The UMAP figure with the uploaded faces drawn as large black-edged stars."""
    figure = analysis.umap_figure(data)
    for trace in figure.data:
        if trace.name in uploads:
            trace.marker.update(size=20, symbol="star", line=dict(width=2, color="black"))
    figure.update_layout(title=f"{data.model}: the bundled gallery (colour = person) and your photos (stars)",
                         width=None, height=600, autosize=True)
    return figure
