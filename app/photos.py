"""Uploaded photos: checked, decoded and their faces found once, then kept by content.

Gradio saves every request's upload under a new path, so the cache is keyed by the hash of
the photo's bytes; detection (not the models) is what a verification would otherwise spend
its time on.
"""
from __future__ import annotations

import hashlib
import io
import threading
import warnings
from collections import OrderedDict
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import cv2
import numpy as np
from PIL import Image

from zoo.data import DEFAULT_ALIGNER, Aligner, decode_image
from zoo.data.align import SIZE, warp_to_template

from .errors import InputError

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
ORIENTATION_TAG = 0x0112
GRAY_MODES = {"1", "L", "LA", "I", "I;16", "I;16B", "I;16L", "F"}
UPLOAD_LABELS = ("photo A", "photo B")


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

    def preview(self, chosen: int = 0) -> np.ndarray:
        """The photo (at most PREVIEW_MAX_SIDE) with numbered face boxes, the chosen one in green."""
        scale = min(1.0, PREVIEW_MAX_SIDE / max(self.image.shape[:2]))
        image = self.image if scale == 1.0 else cv2.resize(self.image, None, fx=scale, fy=scale,
                                                           interpolation=cv2.INTER_AREA)
        image = np.ascontiguousarray(image.copy())
        thickness = max(1, round(max(image.shape[:2]) / 250))
        for k, face in reversed(list(enumerate(self.faces))):
            if face.box is None:
                continue
            left, top, right, bottom = (round(v * scale) for v in face.box)
            colour = (40, 200, 60) if k == chosen else (255, 150, 0)
            cv2.rectangle(image, (left, top), (right, bottom), colour, thickness + (k == chosen))
            cv2.putText(image, str(k + 1), (left + 2, max(top - 4, 12)), cv2.FONT_HERSHEY_SIMPLEX,
                        0.4 * thickness + 0.1, colour, thickness, cv2.LINE_AA)
        return image


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
                        "box": rounded(photo.faces[index].box)}
                for label, photo, index in zip(UPLOAD_LABELS, self.photos, self.indices)}


class PhotoCache:
    """The last PHOTO_CACHE_SIZE photos read, keyed by content.

    Photos decode in the calling thread; the face detector (one object, not thread-safe) runs
    under `detector_lock`, its own, so detecting the next request's faces overlaps the models'
    work on this one's (which holds the app's model lock)."""

    def __init__(self, aligner: Aligner):
        self.aligner = aligner
        self.detector_lock = threading.Lock()
        self._cache_lock = threading.Lock()
        self._photos: "OrderedDict[str, Photo]" = OrderedDict()

    def align(self, image: np.ndarray) -> np.ndarray:
        """The largest face of `image` aligned to 112x112 (else a centre crop), as the evaluation aligns."""
        with self.detector_lock:
            return self.aligner.align(image).image

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
        with self._cache_lock:
            cached = self._photos.get(digest)
            if cached is not None:
                self._photos.move_to_end(digest)
                return cached if cached.name == path.name else replace(cached, name=path.name)
        photo = self._read(data, path.name)  # two requests bringing the same new photo both read it: harmless
        with self._cache_lock:
            self._photos[digest] = photo
            while len(self._photos) > PHOTO_CACHE_SIZE:
                self._photos.popitem(last=False)
        return photo

    def _read(self, data: bytes, name: str) -> Photo:
        """Decode (refusing oversized photos), shrink to WORK_MAX_SIDE and find every face."""
        notes = header_notes(data, name)
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
            with self.detector_lock:
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


def header_notes(data: bytes, name: str) -> List[str]:
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


def rounded(box) -> Optional[List[float]]:
    return None if box is None else [round(v, 1) for v in box]
