"""The app's work without the UI: models, photos, faces, and every result the tabs show.

`Service` returns plain data (numpy crops, floats, plotly figures), so `app.ui` only lays
things out and the logic is testable without a browser. One instance serves the whole app:
- zoo models load once (the local zoo at start, hub pulls on demand) and stay in memory;
- a photo is checked, decoded and its faces detected once, cached by the hash of its bytes:
  gradio saves every request's upload under a new path, so a path cannot key the cache, and
  detection (not the models) is what a verification would otherwise spend its time on;
- model work runs under one lock: Grad-CAM hooks into a model, so two requests must never
  share a model mid-forward, and on a CPU running them in turn costs little throughput.

Bad input raises `InputError`, `zoo.data.DataError`, `analysis.AnalysisError` or
`zoo.hub.HubError`, each with a message meant for the person at the app (`USER_ERRORS`).
"""
from __future__ import annotations

import hashlib
import io
import threading
import time
import warnings
from collections import OrderedDict
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import cv2
import numpy as np
import plotly.graph_objects as go
from PIL import Image

import analysis
from analysis import AnalysisError
import zoo
from zoo import CheckpointError, FaceModel, hub
from zoo.data import DEFAULT_ALIGNER, Aligner, DataError, decode_image, gaussian_blur, load_image, low_resolution, make_aligner
from zoo.data.align import SIZE, warp_to_template
from zoo.evaluate import to_tensor
from zoo.peers import Peer, make_peer, peer_names
from zoo.tables import condition_label, is_clean, protocol_rank

from .panels import own_panels

APP_DIR = Path(__file__).resolve().parent
GALLERY_DIR = APP_DIR / "gallery"
EXAMPLES_DIR = APP_DIR / "examples"

MAX_PIXELS = 50_000_000  # refuse larger photos before decoding them (a 50 MP RGB array is 150 MB)
# Uploaded photos are aligned like the zoo's training and test faces (zoo.data's default,
# YuNet), so the models see the crops they were fine-tuned and measured on.
APP_ALIGNER = DEFAULT_ALIGNER
# The app lists every face of a photo, so it wants precision where dataset alignment (one face
# per image, the largest) wants recall: below this score a detection is listed only when
# nothing in the photo scores higher. In the 5x4 LFW grid YuNet's 20 faces score 0.89 or
# more and its 2-3 background patterns 0.55-0.60; a lone profile face at 0.55 is still found.
LIST_MIN_SCORE = 0.7
WORK_MAX_SIDE = 1600  # larger photos are shrunk before detection (at full size: group photos have small faces)
PREVIEW_MAX_SIDE = 640  # the detection preview shown under each photo
PHOTO_CACHE_SIZE = 32
BLUR_SIGMAS = (0, 1, 2, 3, 4, 6, 8)  # the blur lab's curve; zoo.data's BLUR_LEVELS plus a harsher 8
LOWRES_SIZES = (112, 56, 40, 28, 20, 14, 10, 7)
MAX_SIGMA, MIN_SIDE = 12.0, 4  # past these every model sees mush
TARGETS = ("second", "both")
ORIENTATION_TAG = 0x0112
GRAY_MODES = {"1", "L", "LA", "I", "I;16", "I;16B", "I;16L", "F"}
EXPLAIN_SIZE = 224  # explanation panels are upscaled from 112 px so the maps read at a glance
UPLOAD_LABELS = ("photo A", "photo B")
# The verdict threshold (cosine) of a model whose config.json holds no calibrated one (e.g. an
# imported checkpoint not evaluated yet): typical of ArcFace-family embeddings, and always shown
# marked "uncalibrated", so nobody mistakes it for a measured threshold (see `model_threshold`).
DEFAULT_THRESHOLD = 0.3


class InputError(ValueError):
    """A photo, face choice or model choice the app cannot use; the message says why and what to do."""


USER_ERRORS = (InputError, DataError, AnalysisError, CheckpointError)  # HubError is a CheckpointError


@dataclass(frozen=True)
class Face:
    """One face of a photo: its aligned 112x112 crop and where it was found (None: pre-aligned)."""

    crop: np.ndarray
    box: Optional[Tuple[float, float, float, float]]
    detector: str
    score: float


@dataclass(frozen=True)
class Photo:
    """A decoded, checked photo (shrunk to WORK_MAX_SIDE), every face in it largest first, and
    notes on what was done to it (EXIF rotation, grayscale, transparency, shrinking)."""

    name: str
    image: np.ndarray
    original_size: Tuple[int, int]  # (width, height) after EXIF rotation
    faces: Tuple[Face, ...]
    notes: Tuple[str, ...]

    def face(self, index: int) -> Face:
        """Face `index` (0 = largest), or InputError saying which faces exist."""
        if not self.faces:
            raise InputError(
                f"no face found in {self.name}: the face detector found nothing. Use a photo where "
                "a face is visible and at least about 40 pixels wide; a 112x112 image is taken as an aligned crop")
        if not 0 <= index < len(self.faces):
            raise InputError(f"{self.name} has {len(self.faces)} face(s): there is no face {index + 1}; "
                             f"choose 1 to {len(self.faces)}")
        return self.faces[index]


@dataclass
class ZooEntry:
    """A model the app can use (or one that failed to load, with why)."""

    name: str
    source: str
    folder: Optional[Path]  # None for a pretrained peer
    config: Dict
    model: Optional[FaceModel] = None
    error: Optional[str] = None

    @property
    def threshold(self) -> float:
        """The verdict threshold: calibrated from config.json, else DEFAULT_THRESHOLD (see `model_threshold`)."""
        return model_threshold(self.config)[0]

    @property
    def threshold_from(self) -> str:
        return model_threshold(self.config)[1]

    @property
    def calibrated(self) -> bool:
        return model_threshold(self.config)[2]


def model_threshold(config: Dict) -> Tuple[float, str, bool]:
    """(threshold, where it comes from, calibrated) of a checkpoint's config.json.

    In order: its `threshold` (what train.publish writes from an evaluation: the mean of the
    10-fold accuracy thresholds on the first clean protocol); else that mean read from its
    `metrics` when they hold per-condition thresholds but no top-level one; else
    DEFAULT_THRESHOLD, uncalibrated (e.g. mobilefacenet.y1 as imported, before an evaluation
    is published with it: `python -m train.publish CHECKPOINT --local NAME --eval eval.json`).
    """
    value = config.get("threshold")
    metrics = config.get("metrics") or {}
    if isinstance(value, (int, float)) and not isinstance(value, bool) and np.isfinite(value):
        return float(value), str(metrics.get("threshold_from") or "its config.json"), True
    protocols = metrics.get("protocols") or {}
    for protocol in sorted(protocols, key=lambda p: (protocol_rank(p), p)):
        for condition, values in ((protocols[protocol] or {}).get("conditions") or {}).items():
            found = values.get("threshold")
            if is_clean(values) and isinstance(found, (int, float)) and np.isfinite(found):
                return float(found), f"{protocol} {condition} evaluation: mean of the 10-fold accuracy thresholds", True
    return DEFAULT_THRESHOLD, (f"uncalibrated: no evaluated threshold in its config.json; the default cosine "
                               f"{DEFAULT_THRESHOLD:g}"), False


def zoo_order(entry: "ZooEntry") -> Tuple:
    """Where a model is listed: pretrained imports first (the reference, e.g. mobilefacenet.y1),
    then plain models trained or fine-tuned here, then every method's, by name within each; then
    the pretrained peers; models that failed to load last."""
    if entry.error is not None:
        return (4, entry.name)
    if isinstance(entry.model, Peer):
        return (3, entry.name)
    method = entry.config.get("architecture", {}).get("method")
    return (0 if "imported_from" in entry.config else 1 if method == "plain" else 2, entry.name)


@dataclass
class Verdict:
    """One model's answer for a pair: cosine similarity and, when it has a threshold, same or not
    (`calibrated` False: the threshold is DEFAULT_THRESHOLD, not one measured for the model)."""

    model: str
    similarity: float
    threshold: Optional[float]
    calibrated: bool = True

    @property
    def same(self) -> Optional[bool]:
        return None if self.threshold is None else self.similarity >= self.threshold

    @property
    def text(self) -> str:
        if self.same is None:
            return "no threshold in its card: similarity only"
        verdict = "same person" if self.same else "different people"
        return verdict if self.calibrated else f"{verdict} (uncalibrated threshold)"

    def to_dict(self) -> Dict:
        return {"model": self.model, "similarity": round(self.similarity, 6), "threshold": self.threshold,
                "calibrated": self.calibrated, "same": self.same, "verdict": self.text}


@dataclass
class Pair:
    """The two faces a comparison uses, with what the app should tell the user about them."""

    photos: Tuple[Photo, Photo]
    indices: Tuple[int, int]
    notes: List[str]

    @property
    def crops(self) -> Tuple[np.ndarray, np.ndarray]:
        return tuple(photo.faces[i].crop for photo, i in zip(self.photos, self.indices))

    def describe(self) -> Dict:
        return {label: {"name": photo.name, "face": index + 1, "faces_found": len(photo.faces),
                        "box": _rounded(photo.faces[index].box)}
                for label, photo, index in zip(UPLOAD_LABELS, self.photos, self.indices)}


@dataclass
class Verification:
    pair: Pair
    verdicts: List[Verdict]
    seconds: float


@dataclass
class BlurCurve:
    """Similarity of the pair per model as photo B (or both) is degraded step by step."""

    pair: Pair
    kind: str  # "blur" (sigma in px at 112) or "lowres" (side in px)
    target: str  # "second" or "both"
    amount: float  # the level the slider is at; one of `levels`
    levels: List[float]
    similarity: Dict[str, List[float]]  # model -> one value per level
    thresholds: Dict[str, Optional[float]]
    faces_at_amount: Tuple[np.ndarray, np.ndarray]
    uncalibrated: Tuple[str, ...] = ()  # models whose threshold is DEFAULT_THRESHOLD

    def to_dict(self) -> Dict:
        return {**self.pair.describe(), "kind": self.kind, "target": self.target, "amount": self.amount,
                "levels": self.levels, "similarity": {m: [round(v, 6) for v in values]
                                                      for m, values in self.similarity.items()},
                "thresholds": self.thresholds, "uncalibrated": list(self.uncalibrated)}


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


class Service:
    """Everything the app does; thread-safe (see the module docstring)."""

    def __init__(self, zoo_dir: Optional[Path] = None, gallery_dir: Path = GALLERY_DIR,
                 aligner: Optional[Aligner] = None, hub_endpoint: Optional[str] = None, peers: bool = True):
        self.zoo_dir = Path(zoo_dir) if zoo_dir is not None else zoo.LOCAL_ZOO
        # Server configuration, never a request field: a pull makes the server fetch from this
        # host, so a visitor of an app served on the network must not choose where it goes.
        self.hub_endpoint = hub.endpoint_url(hub_endpoint)
        self.gallery_dir = gallery_dir
        self.aligner = aligner or make_aligner(APP_ALIGNER)
        self._lock = threading.RLock()
        self._photos: "OrderedDict[str, Photo]" = OrderedDict()
        self._entries: Dict[str, ZooEntry] = {}
        self._gallery: Optional[Gallery] = None
        self._umap_compiled = False
        local = [self._load_entry(folder.name, folder, "local zoo")
                 for folder in (sorted(self.zoo_dir.iterdir()) if self.zoo_dir.is_dir() else [])
                 if (folder / "config.json").is_file()]
        if peers:
            local += [self._peer_entry(name) for name in peer_names()]
        for entry in sorted(local, key=zoo_order):
            self._entries[entry.name] = entry

    # ---- models ------------------------------------------------------------------------------

    @staticmethod
    def _load_entry(name: str, folder: Path, source: str) -> ZooEntry:
        """Load one checkpoint; a broken one is kept with its error so the Zoo tab can say why."""
        try:
            return ZooEntry(name, source, folder, zoo.read_config(folder), zoo.load_checkpoint(folder))
        except CheckpointError as err:
            return ZooEntry(name, source, folder, {}, error=str(err))

    @staticmethod
    def _peer_entry(name: str) -> ZooEntry:
        """A pretrained peer as a reference model; one that cannot start is kept with why."""
        try:
            peer = make_peer(name)
        except (ImportError, RuntimeError, OSError) as err:
            return ZooEntry(name, "pretrained peer", None, {}, error=str(err))
        return ZooEntry(name, f"pretrained peer (zoo.peers): {peer.short}", None, peer.checkpoint_config(), peer)

    def model_names(self) -> List[str]:
        """The usable models, local zoo first (in `zoo_order`: the imported reference first), then hub
        pulls in pull order."""
        return [entry.name for entry in self.entries() if entry.model is not None]

    def entries(self) -> List[ZooEntry]:
        with self._lock:  # a pull may be adding one
            return list(self._entries.values())

    def _models(self, names: Optional[Sequence[str]]) -> List[ZooEntry]:
        """The entries of `names` (all usable models when None), or InputError naming the unknown."""
        available = self.model_names()
        if not available:
            raise InputError(f"no models: the zoo at {self.zoo_dir} is empty; pull one from a Hugging Face Hub "
                             "repo in the Zoo tab")
        names = available if names is None else [str(n) for n in names]
        if not names:
            raise InputError("no model selected: choose at least one model")
        entries = {e.name: e for e in self.entries()}
        broken = [entries[n] for n in names if n in entries and entries[n].error is not None]
        if broken:
            raise InputError("; ".join(f"model {e.name} could not be loaded: {e.error}" for e in broken)
                             + f". Usable: {', '.join(available)}")
        unknown = [n for n in names if n not in available]
        if unknown:
            raise InputError(f"unknown model(s) {', '.join(unknown)}; available: {', '.join(available)}")
        return [entries[n] for n in dict.fromkeys(names)]

    def card(self, name: str) -> str:
        """The model card (README.md) without its YAML front matter."""
        entries = {e.name: e for e in self.entries()}
        if name not in entries:
            raise InputError(f"unknown model {name!r}; the zoo has: {', '.join(entries) or 'nothing'}")
        entry = entries[name]
        if isinstance(entry.model, Peer):
            return entry.model.card()
        path = entry.folder / "README.md"
        text = path.read_text() if path.is_file() else f"# {name}\n\nNo model card (README.md) in {entry.folder}."
        if text.startswith("---"):
            text = text.split("---", 2)[2].lstrip()
        if entry.error:
            text = f"**Could not be loaded:** {entry.error}\n\n{text}"
        return text

    def zoo_table(self) -> Tuple[List[str], List[List]]:
        """(headers, rows): each model's architecture, threshold and accuracy per test condition."""
        entries = self.entries()
        columns = _metric_columns([e.config.get("metrics") for e in entries])
        headers = ["model", "method", "backbone", "width", "parameters (M)", "threshold"] + \
                  [label for _, _, label in columns] + ["source"]
        rows = []
        for entry in entries:
            arch = entry.config.get("architecture", {})
            model = entry.model
            protocols = (entry.config.get("metrics") or {}).get("protocols", {})
            accuracy = [protocols.get(p, {}).get("conditions", {}).get(c, {}).get("accuracy") for p, c, _ in columns]
            rows.append([entry.name, model.method if model else arch.get("method", "?"), arch.get("backbone", "?"),
                         arch.get("width", "-"),
                         _millions(model.parameter_count()) if model else "not loaded",
                         round(entry.threshold, 4) if entry.calibrated else f"{entry.threshold:g} (uncalibrated)"]
                        + ["-" if a is None else round(float(a), 4) for a in accuracy]
                        + [entry.source if entry.error is None else f"{entry.source}: {entry.error}"])
        return headers, rows

    def pull(self, repo_id: str, revision: Optional[str] = None) -> ZooEntry:
        """Download a checkpoint from a repo on the app's hub and make it usable at once under `repo_id[@revision]`."""
        repo_id, revision = (repo_id or "").strip(), (revision or "").strip() or None
        if not hub.is_repo_id(repo_id):
            raise InputError(f"{repo_id!r} is not a Hugging Face Hub repo id: write it as ORG/NAME, "
                             "e.g. facescope/scan-mobilefacenet.fss-ft")
        folder = hub.pull(repo_id, revision, endpoint=self.hub_endpoint)
        name = repo_id if revision is None else f"{repo_id}@{revision}"
        entry = self._load_entry(name, folder, f"hub {self.hub_endpoint}: {name} (commit {folder.name})")
        if entry.error is not None:
            raise InputError(f"{name}: pulled, but it is not a usable FaceScope checkpoint: {entry.error}")
        with self._lock:
            self._entries[name] = entry
        return entry

    # ---- photos and faces --------------------------------------------------------------------

    def photo(self, path, label: str = "photo") -> Photo:
        """Read, check and detect the faces of an uploaded photo (cached by content)."""
        if path is None or str(path) == "":
            raise InputError(f"no {label}: upload a photo or pick one of the examples")
        path = Path(path)
        try:
            data = path.read_bytes()
        except OSError as err:
            raise InputError(f"cannot read {path.name}: {err.strerror or err}") from None
        if not data:
            raise InputError(f"{path.name} is empty (0 bytes): upload a photo (JPEG, PNG, WebP, ...)")
        digest = hashlib.blake2b(data, digest_size=16).hexdigest()
        with self._lock:
            cached = self._photos.get(digest)
            if cached is not None:
                self._photos.move_to_end(digest)
                return cached if cached.name == path.name else replace(cached, name=path.name)
            photo = self._read(data, path.name)
            self._photos[digest] = photo
            while len(self._photos) > PHOTO_CACHE_SIZE:
                self._photos.popitem(last=False)
            return photo

    def _read(self, data: bytes, name: str) -> Photo:
        """Decode (refusing oversized photos), shrink to WORK_MAX_SIDE and find every face."""
        notes = _header_notes(data, name)
        image = decode_image(data, source=name)
        height, width = image.shape[:2]
        if max(height, width) > WORK_MAX_SIDE:
            scale = WORK_MAX_SIDE / max(height, width)
            image = cv2.resize(image, (round(width * scale), round(height * scale)), interpolation=cv2.INTER_AREA)
            notes.append(f"shrunk from {width}x{height} to {image.shape[1]}x{image.shape[0]} before detection")
        if image.shape[:2] == (SIZE, SIZE):
            faces = (Face(np.ascontiguousarray(image), None, "pre-aligned", 1.0),)
            notes.append(f"a {SIZE}x{SIZE} image is taken as an already aligned face crop")
        else:
            found = self.aligner.detect(image, max_side=WORK_MAX_SIDE)
            confident = [d for d in found if d.score >= LIST_MIN_SCORE]
            faces = tuple(Face(warp_to_template(image, d.landmarks), tuple(float(v) for v in d.box), d.detector,
                               d.score) for d in (confident or found))
        return Photo(name, image, (width, height), faces, tuple(notes))

    def pair(self, path_a, path_b, index_a: int = 0, index_b: int = 0) -> Pair:
        """The chosen face of each photo, with notes for photos holding several faces."""
        photos = (self.photo(path_a, UPLOAD_LABELS[0]), self.photo(path_b, UPLOAD_LABELS[1]))
        indices = (int(index_a), int(index_b))
        notes = []
        for label, photo, index in zip(UPLOAD_LABELS, photos, indices):
            photo.face(index)
            notes += [f"{label} ({photo.name}): {note}" for note in photo.notes]
            if len(photo.faces) > 1:
                which = " (the largest)" if index == 0 else ""
                notes.append(f"{label} ({photo.name}) holds {len(photo.faces)} faces: using face {index + 1}{which}; "
                             "choose another under the photo")
        return Pair(photos, indices, notes)

    def preview(self, photo: Photo, chosen: int = 0) -> np.ndarray:
        """The photo (at most PREVIEW_MAX_SIDE) with numbered face boxes, the chosen one in green."""
        scale = min(1.0, PREVIEW_MAX_SIDE / max(photo.image.shape[:2]))
        image = photo.image if scale == 1.0 else cv2.resize(photo.image, None, fx=scale, fy=scale,
                                                            interpolation=cv2.INTER_AREA)
        image = np.ascontiguousarray(image.copy())
        thickness = max(1, round(max(image.shape[:2]) / 250))
        for k, face in reversed(list(enumerate(photo.faces))):
            if face.box is None:
                continue
            left, top, right, bottom = (round(v * scale) for v in face.box)
            colour = (40, 200, 60) if k == chosen else (255, 150, 0)
            cv2.rectangle(image, (left, top), (right, bottom), colour, thickness + (k == chosen))
            cv2.putText(image, str(k + 1), (left + 2, max(top - 4, 12)), cv2.FONT_HERSHEY_SIMPLEX,
                        0.4 * thickness + 0.1, colour, thickness, cv2.LINE_AA)
        return image

    # ---- the tabs ----------------------------------------------------------------------------

    def verify(self, path_a, path_b, models: Optional[Sequence[str]] = None, index_a: int = 0,
               index_b: int = 0) -> Verification:
        """Cosine similarity of the chosen faces per model, and its verdict at the card's threshold."""
        start = time.perf_counter()
        entries = self._models(models)
        pair = self.pair(path_a, path_b, index_a, index_b)
        batch = to_tensor(np.stack(pair.crops))
        verdicts = []
        with self._lock:
            for entry in entries:
                embeddings = entry.model.embed(batch)
                verdicts.append(Verdict(entry.name, float(embeddings[0] @ embeddings[1]), entry.threshold,
                                        entry.calibrated))
        return Verification(pair, verdicts, time.perf_counter() - start)

    def blur_curve(self, path_a, path_b, models: Optional[Sequence[str]] = None, kind: str = "blur",
                   amount: float = 2.0, target: str = "second", index_a: int = 0, index_b: int = 0) -> BlurCurve:
        """Similarity per model across degradation levels of photo B's face (or both faces)."""
        if kind not in ("blur", "lowres"):
            raise InputError(f"unknown degradation {kind!r}: use 'blur' (Gaussian) or 'lowres' (low resolution)")
        if target not in TARGETS:
            raise InputError(f"unknown target {target!r}: use 'second' (photo B only) or 'both'")
        if kind == "blur":
            amount = float(amount)
            if not 0 <= amount <= MAX_SIGMA:
                raise InputError(f"blur sigma {amount:g} is out of range: use 0 to {MAX_SIGMA:g} pixels (at 112 px)")
            levels = sorted({float(s) for s in BLUR_SIGMAS} | {amount})
            degrade = gaussian_blur
        else:
            amount = float(round(amount))
            if not MIN_SIDE <= amount <= SIZE:
                raise InputError(f"low-resolution side {amount:g} is out of range: use {MIN_SIDE} to {SIZE} pixels")
            levels = sorted({float(s) for s in LOWRES_SIZES} | {amount}, reverse=True)
            degrade = lambda face, size: low_resolution(face, int(size))  # noqa: E731
        entries = self._models(models)
        pair = self.pair(path_a, path_b, index_a, index_b)
        face_a, face_b = pair.crops
        degraded_b = np.stack([degrade(face_b, level) for level in levels])
        degraded_a = np.stack([degrade(face_a, level) for level in levels]) if target == "both" else face_a[None]
        batch = to_tensor(np.concatenate([degraded_a, degraded_b]))
        similarity = {}
        with self._lock:
            for entry in entries:
                embeddings = entry.model.embed(batch)
                first, second = embeddings[:len(degraded_a)], embeddings[len(degraded_a):]
                similarity[entry.name] = (first * second).sum(dim=1).tolist()
        at = levels.index(amount)
        return BlurCurve(pair, kind, target, amount, levels, similarity, {e.name: e.threshold for e in entries},
                         (degraded_a[at if target == "both" else 0], degraded_b[at]),
                         tuple(e.name for e in entries if not e.calibrated))

    def explain(self, path_a, path_b, models: Optional[Sequence[str]] = None, detail_model: Optional[str] = None,
                index_a: int = 0, index_b: int = 0) -> Explanations:
        """Per model, Grad-CAM of each face's similarity to the other and the method's own maps; and the
        full analysis figure of `detail_model` (default: the first model)."""
        entries = self._models(models)
        explainable = [e for e in entries if not isinstance(e.model, Peer)]
        if detail_model:
            detail = self._models([detail_model])[0]
            if isinstance(detail.model, Peer):
                raise InputError(f"{detail.name} is a pretrained peer: it runs outside torch, so it has no "
                                 "gradients and no maps to explain; choose a zoo model for the detail figure")
        elif explainable:
            detail = explainable[0]
        else:
            raise InputError("only pretrained peers are selected: they run outside torch and cannot be explained; "
                             "select a zoo model too")
        pair = self.pair(path_a, path_b, index_a, index_b)
        face_a, face_b = pair.crops
        panels: Dict[str, List[Panel]] = {}
        notes: Dict[str, List[str]] = {}
        with self._lock:
            for entry in entries:
                if isinstance(entry.model, Peer):
                    panels[entry.name] = []
                    notes[entry.name] = [f"{entry.name} is a pretrained peer run outside torch: no Grad-CAM and no "
                                         "maps of its own; its similarity and verdict are in the Verify tab"]
                    continue
                panels[entry.name], notes[entry.name] = _model_panels(entry.name, entry.model, face_a, face_b)
            figure = _detail_figure(detail.model, face_a, face_b)
        return Explanations(pair, panels, notes, figure, detail.name)

    def gallery(self) -> Gallery:
        if self._gallery is None:
            self._gallery = load_gallery(self.gallery_dir)
        return self._gallery

    def place_in_gallery(self, path_a=None, path_b=None, model: Optional[str] = None, index_a: int = 0,
                         index_b: int = 0, progress: Optional[Callable[[float, str], None]] = None) -> GalleryPlacement:
        """UMAP of the bundled gallery's embeddings with the uploaded faces (either, both or none) in it."""
        report = progress or (lambda fraction, message: None)
        entry = self._models([model] if model else None)[0]
        gallery = self.gallery()
        uploads, notes = [], []
        for label, path, index in zip(UPLOAD_LABELS, (path_a, path_b), (index_a, index_b)):
            if path is not None and str(path) != "":
                photo = self.photo(path, label)
                uploads.append((label, photo.face(int(index)).crop))
                notes += [f"{label} ({photo.name}): {note}" for note in photo.notes]
        faces = np.concatenate([gallery.faces] + [crop[None] for _, crop in uploads])
        labels = np.concatenate([gallery.labels, len(gallery.people) + np.arange(len(uploads))])
        people = gallery.people + [label for label, _ in uploads]
        paths = gallery.paths + [label for label, _ in uploads]
        report(0.1, f"embedding {len(faces)} faces with {entry.name}")
        with self._lock:
            if not self._umap_compiled:
                report(0.3, "compiling UMAP (first use since the app started: about 20 s)")
            data = analysis.embedding_umap(entry.model, faces, labels, people, paths, cache=False)
            self._umap_compiled = True
            embeddings = entry.model.embed(to_tensor(faces))
        report(0.9, "drawing the map")
        nearest = {}
        for k, (label, _) in enumerate(uploads):
            scores = (embeddings[:len(gallery.faces)] @ embeddings[len(gallery.faces) + k]).numpy()
            best = {gallery.people[p]: float(scores[gallery.labels == p].max()) for p in range(len(gallery.people))}
            nearest[label] = sorted(best.items(), key=lambda item: -item[1])[:3]
        return GalleryPlacement(entry.name, _placement_figure(data, [label for label, _ in uploads]), nearest,
                                data.seconds, notes)

    def warm_up(self, path_a: Path, path_b: Path) -> None:
        """Load the detector and run every model once, so the first request pays no start-up cost."""
        if self.model_names():
            self.verify(path_a, path_b)
        else:
            self.photo(path_a)


def _header_notes(data: bytes, name: str) -> List[str]:
    """Refuse photos over MAX_PIXELS before decoding them; note EXIF rotation, grayscale and
    transparency. Unreadable headers pass: decode_image names the problem precisely."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as image:
                (width, height), mode = image.size, image.mode
                orientation = image.getexif().get(ORIENTATION_TAG, 1)
                transparent = mode in ("RGBA", "LA", "PA") or "transparency" in image.info
    except Image.DecompressionBombError as err:
        raise InputError(f"{name} is too large to open ({err}); the app reads photos up to "
                         f"{MAX_PIXELS // 1_000_000} megapixels: scale it down first") from None
    except (OSError, SyntaxError, ValueError):
        return []
    if width * height > MAX_PIXELS:
        raise InputError(f"{name} is {width:,} x {height:,} pixels ({width * height / 1e6:.0f} megapixels); the app "
                         f"reads photos up to {MAX_PIXELS // 1_000_000} megapixels: scale it down first")
    notes = []
    if orientation not in (1, None):
        notes.append(f"turned upright from its EXIF orientation (tag value {orientation})")
    if mode in GRAY_MODES:
        notes.append("grayscale: given to the models as RGB with three equal channels")
    elif mode == "CMYK":
        notes.append("CMYK: converted to RGB")
    if transparent:
        notes.append("transparent pixels were put on a white background")
    return notes


def _rounded(box) -> Optional[List[float]]:
    return None if box is None else [round(v, 1) for v in box]


def _metric_columns(all_metrics: Sequence[Optional[Dict]]) -> List[Tuple[str, str, str]]:
    """(protocol, condition, label) of every accuracy any card reports, protocols in the usual order."""
    seen: Dict[Tuple[str, str], Tuple[Tuple, str]] = {}
    for metrics in all_metrics:
        for protocol, entry in ((metrics or {}).get("protocols") or {}).items():
            for condition, values in (entry.get("conditions") or {}).items():
                label = f"{protocol} {condition_label(condition, values, short=True)}"
                kind_rank = 0 if is_clean(values) else 1 if values.get("kind") == "blur" else 2
                order = (protocol_rank(protocol), protocol, kind_rank, values.get("amount", 0))
                seen[(protocol, condition)] = (order, label)
    return [(p, c, label) for (p, c), (_, label) in sorted(seen.items(), key=lambda item: item[1][0])]


def _millions(count: Optional[int]) -> object:
    return "n/a (not torch)" if count is None else round(count / 1e6, 3)


def _large(image: np.ndarray) -> np.ndarray:
    return np.array(Image.fromarray(image).resize((EXPLAIN_SIZE, EXPLAIN_SIZE), Image.BICUBIC))


def _model_panels(name: str, model: FaceModel, face_a: np.ndarray,
                  face_b: np.ndarray) -> Tuple[List[Panel], List[str]]:
    """Grad-CAM of A's similarity to B and of B's to A, then the method's own maps of both faces
    (app.panels); `name` is the model's name in the app (its zoo folder or hub repo id)."""
    panels, notes = [], []
    for label, face, other in (("A", face_a, face_b), ("B", face_b, face_a)):
        cam = analysis.gradcam_similarity(model, face, other)
        panels.append(Panel(_large(analysis.overlay(face, cam.cams[0], "Jet", 0.45, (0.0, 1.0))),
                            f"{name} · {label} · Grad-CAM of cos to {'B' if label == 'A' else 'A'} "
                            f"({cam.similarity[0]:.3f})"))
    for label, face in (("A", face_a), ("B", face_b)):
        try:
            own = own_panels(model, face, _large)
        except AnalysisError as err:
            notes.append(str(err))
            break
        if own is None:
            notes.append(f"{name} is a plain {model.config.backbone} (method {model.method!r}): it has no maps "
                         "of its own; Grad-CAM shows where its similarity comes from")
            break
        panels += [Panel(image, f"{name} · {label} · {caption}") for image, caption in own]
    return panels, notes


def _detail_figure(model: FaceModel, face_a: np.ndarray, face_b: np.ndarray) -> go.Figure:
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


def _placement_figure(data: analysis.EmbeddingMap, uploads: List[str]) -> go.Figure:
    """The UMAP figure with the uploaded faces drawn as large black-edged stars."""
    figure = analysis.umap_figure(data)
    for trace in figure.data:
        if trace.name in uploads:
            trace.marker.update(size=20, symbol="star", line=dict(width=2, color="black"))
    figure.update_layout(title=f"{data.model}: the bundled gallery (colour = person) and your photos (stars)",
                         width=None, height=600, autosize=True)
    return figure
