"""dlib's ResNet as a peer (`peer:dlib`).

dlib's `dlib_face_recognition_resnet_model_v1.dat` ships inside the PyPI package
`face-recognition-models` and runs through the prebuilt `dlib-bin` wheel, so it installs
offline like the rest of FaceScope. It is NOT a FaceScope-small model: dlib trained it on
about 3 million faces (VGG, FaceScrub and web images; dlib reports 99.38% on LFW), which
likely include people of LFW and CFP. Tables must label it that way.

What it sees. `DlibPeer.embed` takes exactly what every zoo model takes - the aligned 112x112
crops of `zoo.evaluate`, after the same degradation (blur is applied at 112 px, before
the peer touches the crop) - so it is evaluated by the same code on the same pairs and
blur levels. dlib's network wants 150x150 chips framed like `dlib.get_face_chip` frames
them (padding 0.25: the face larger and higher than in the ArcFace template), so each crop
is warped by one fixed similarity that puts the template's five points where dlib's chip
puts them (`CHIP_POINTS`, measured with `measure_chip_points`). A plain 112 -> 150 resize
keeps the ArcFace framing and costs dlib about 11 points of accuracy (88.5% vs 99.5% on
200 LFW View 1 test pairs), so it would measure the adapter, not the model. The chip's
bottom rows (below the chin) lie outside the 112 crop and are filled by edge replication.
dlib's own pipeline (HOG + 5-point predictor + `get_face_chip` on the original photo) scored
98.5% on those pairs, and on the same photo its embedding and the peer's have cosine > 0.98
(tests/test_peer.py): the fixed warp does not handicap it. On all 1,000 LFW View 1 test
pairs the peer scores 98.6% clean, 96.4% at blur 2 and 87.3% at blur 4.
"""
from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Iterable, List

import cv2
import numpy as np

from . import PEERS, Peer
from ..data.align import TEMPLATE_112, landmarks_from_68, model_files, similarity_transform

CHIP_SIZE = 150
CHIP_PADDING = 0.25  # dlib.get_face_chip's default, what the model was trained with
# Where dlib's 150x150 chip (padding 0.25) puts the ArcFace template's five points (eye
# centres, nose tip, mouth corners): the mean over 200 LFW View 1 faces of
# `measure_chip_points` (198 found; the spread between faces is 2-3 px at the eyes, 4-6 px at
# nose and mouth, which is pose, not the frame).
CHIP_POINTS = np.array([[47.1, 46.2], [99.8, 46.4], [73.4, 75.3], [49.6, 103.5], [97.8, 103.7]])
CHIP_WARP = similarity_transform(TEMPLATE_112, CHIP_POINTS)
TRAINED_ON = "about 3 million faces (dlib: VGG, FaceScrub, web images), not FaceScope-small"


def weights_path() -> Path:
    """The ResNet weights inside `face-recognition-models` (found without importing it:
    its __init__ needs pkg_resources, which current setuptools no longer ships)."""
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("the dlib peer needs `pip install dlib-bin face-recognition-models`")
    path = Path(list(spec.submodule_search_locations)[0]) / "models" / "dlib_face_recognition_resnet_model_v1.dat"
    if not path.is_file():
        raise RuntimeError(f"dlib model file missing: {path}; reinstall face-recognition-models")
    return path


def dlib_chips(crops: np.ndarray) -> List[np.ndarray]:
    """Aligned 112x112 uint8 crops -> 150x150 chips in dlib's framing (see the module doc)."""
    return [cv2.warpAffine(crop, CHIP_WARP, (CHIP_SIZE, CHIP_SIZE), flags=cv2.INTER_LINEAR,
                           borderMode=cv2.BORDER_REPLICATE) for crop in crops]


@PEERS.register("dlib")
class DlibPeer(Peer):
    """dlib's pretrained ResNet on the zoo's crops, re-framed as dlib's chips (module doc)."""

    key = "dlib"
    description = "dlib's ResNet (dlib_face_recognition_resnet_model_v1, 128-d), run by dlib on the CPU"
    trained_on = TRAINED_ON
    licence = "model file CC0 (dlib-models), shipped in the PyPI package face-recognition-models; dlib itself: Boost"
    short = "~3M faces (dlib)"
    thread_safe = False  # a dlib net keeps each layer's output in itself while it runs

    def __init__(self):
        super().__init__()
        import dlib

        self._net = dlib.face_recognition_model_v1(str(weights_path()))

    def _embed(self, crops: np.ndarray) -> np.ndarray:
        return np.array([np.asarray(v) for v in self._net.compute_face_descriptor(dlib_chips(crops))])


def measure_chip_points(images: Iterable[np.ndarray]) -> np.ndarray:
    """(M,5,2): where dlib's own `get_face_chip` (150 px, padding 0.25) puts the template's
    five points, for each image of `images` (HxWx3 uint8 RGB) in which HOG finds a face.

    dlib does not expose its chip transform, so it is read off chips of two coordinate
    images (pixel value = its own x, resp. y): bilinear sampling of a linear ramp is exact.
    """
    import dlib

    detector = dlib.get_frontal_face_detector()
    predictor = dlib.shape_predictor(str(model_files()["landmarks68"]))
    grid_v, grid_u = np.mgrid[0:CHIP_SIZE, 0:CHIP_SIZE]
    found = []
    for image in images:
        rects = detector(image, 1)
        if not rects:
            continue
        shape = predictor(image, max(rects, key=lambda r: r.area()))
        height, width = image.shape[:2]
        xs = np.tile(np.arange(width, dtype=np.float32), (height, 1))
        ys = np.tile(np.arange(height, dtype=np.float32)[:, None], (1, width))
        chip_x = dlib.get_face_chip(xs, shape, CHIP_SIZE, CHIP_PADDING)
        chip_y = dlib.get_face_chip(ys, shape, CHIP_SIZE, CHIP_PADDING)
        inside = (chip_x > 1) & (chip_y > 1) & (chip_x < width - 2) & (chip_y < height - 2)
        to_chip = similarity_transform(np.stack([chip_x[inside], chip_y[inside]], 1),
                                       np.stack([grid_u[inside], grid_v[inside]], 1))
        five = landmarks_from_68(np.array([(p.x, p.y) for p in shape.parts()]))
        found.append(five @ to_chip[:, :2].T + to_chip[:, 2])
    return np.array(found).reshape(-1, 5, 2)
