"""Where embeddings are computed: in torch (the model itself) or in onnxruntime (its ONNX export).

    embedder = make_embedder("onnx", zoo.load("mobilefacenet.fss-ft"))
    vectors = embedder.embed(crops)      # (N,112,112,3) uint8 RGB crops -> (N,D) L2-normalised float32

`RUNTIMES` registers both by the name `--runtime` takes (`python -m zoo.evaluate`, `python app.py`);
`auto`, the evaluation's default, is onnx on the CPU and torch on a GPU.
"onnx" exports the model's inference form once (`zoo.export`) into `<cache>/onnx/`, named by a
hash of the network's weights and config, so a retrained checkpoint never reuses a stale file,
and runs it with one onnxruntime thread (callers parallelise by processes). A pretrained peer is
not a torch network and cannot export: it always runs on its own engine (dlib, onnxruntime), which
`served_by` says. Analyses that need gradients (Grad-CAM, the methods' maps) use the torch model
whatever the runtime.

An embedder pickles into what rebuilds it in another process (the evaluation's workers): a torch
model travels whole, a peer by its name, an ONNX embedder by its file.
"""
from __future__ import annotations

import hashlib
import json
import warnings
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Callable, Optional, Union

import numpy as np
import torch

from .backbones import to_input
from .data.paths import cache_root
from .registry import Registry

DEFAULT_RUNTIME = "torch"
AUTO = "auto"  # zoo.evaluate's default: onnx where it can, else torch (`make_embedder`)
# Part of every ONNX file's key: bump it when zoo.export changes the graphs it writes.
EXPORT_VERSION = "5"  # 2: PReLU as relu ops; 3: as depthwise convolutions (zoo.export.ReluFormPReLU); 4: SRANet as it computes now
# (projections as products, no ceil_mode where sides divide); 5: modules' graph_form (SRANet channel-first, BN folded)


class Embedder(ABC):
    """Aligned uint8 crops -> L2-normalised embeddings, whatever computes them."""

    runtime = "base"  # the name results record: a RUNTIMES name, or "own" for a peer's engine

    @property
    @abstractmethod
    def served_by(self) -> str:
        """What computes the embeddings, in words (the app and the results JSON show it)."""

    @abstractmethod
    def embed(self, crops: np.ndarray) -> np.ndarray:
        """(N,112,112,3) uint8 RGB crops -> (N,D) float32 L2-normalised embeddings."""


RUNTIMES: Registry[Callable[..., Embedder]] = Registry("runtime")


@RUNTIMES.register("torch")
class TorchEmbedder(Embedder):
    """The model's own `preprocess` and `embed` (a peer's are its own engine's)."""

    runtime = "torch"

    def __init__(self, model: torch.nn.Module, cache_dir=None, device: str = "cpu"):
        from .peers import Peer

        self.model, self.device = model, device
        if isinstance(model, Peer):
            self.runtime = "own"  # dlib, or onnxruntime on the peer's own file: not torch

    @property
    def served_by(self) -> str:
        return self.describe(self.model, self.device)

    @staticmethod
    def describe(model: torch.nn.Module, device: str = "cpu") -> str:
        """`served_by` of a TorchEmbedder of `model`, without making one."""
        from .peers import Peer

        return "its own engine (a pretrained peer)" if isinstance(model, Peer) else f"torch ({device})"

    @torch.no_grad()
    def embed(self, crops: np.ndarray) -> np.ndarray:
        images = getattr(self.model, "preprocess", to_input)(crops).to(self.device)
        return self.model.embed(images).float().cpu().numpy()

    def __reduce__(self):
        from .peers import Peer

        if isinstance(self.model, Peer):  # holds dlib / onnxruntime objects, which do not pickle
            return _peer_embedder, (self.model.name,)
        return TorchEmbedder, (self.model, None, self.device)


def _peer_embedder(name: str) -> TorchEmbedder:
    import zoo

    return TorchEmbedder(zoo.load(name))


@RUNTIMES.register("onnx")
class OnnxEmbedder(Embedder):
    """onnxruntime on the model's ONNX export (`exported_onnx`), fed as its metadata says."""

    runtime = "onnx"

    def __init__(self, model: Union[torch.nn.Module, Path, str], cache_dir=None, device: str = "cpu"):
        import onnx
        import onnxruntime

        if device != "cpu":
            raise ValueError(f"--runtime onnx runs on the CPU, not on {device!r}: use --runtime torch for a GPU")
        self.path = Path(model) if isinstance(model, (str, Path)) else exported_onnx(model, cache_dir)
        metadata = {p.key: p.value for p in onnx.load(str(self.path), load_external_data=False).metadata_props}
        self.mean, self.std = float(metadata["input_mean"]), float(metadata["input_std"])
        self.channel_order, self.name = metadata["channel_order"], metadata.get("source", self.path.stem)
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = options.inter_op_num_threads = 1
        self.session = onnxruntime.InferenceSession(str(self.path), options, providers=["CPUExecutionProvider"])

    @property
    def served_by(self) -> str:
        return f"onnxruntime ({self.path.name})"

    def embed(self, crops: np.ndarray) -> np.ndarray:
        faces = to_input(crops, self.mean, self.std, self.channel_order).numpy()
        return self.session.run(None, {"faces": faces})[0]

    def __reduce__(self):
        return OnnxEmbedder, (self.path,)


def weights_digest(model: torch.nn.Module) -> str:
    """SHA-256 of a network's config and every tensor of its state (names, dtypes, shapes, bytes):
    the content of its checkpoint, also for a model that never was saved."""
    digest = hashlib.sha256(json.dumps(model.config.to_dict(), sort_keys=True).encode())
    for name, tensor in sorted(model.state_dict().items()):
        tensor = tensor.detach().cpu().contiguous()
        digest.update(f"{name}|{tensor.dtype}|{tuple(tensor.shape)}".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def exported_onnx(model: torch.nn.Module, cache_dir=None) -> Path:
    """The ONNX export of `model`'s inference form under `<cache>/onnx/`, written the first time
    (atomically: concurrent processes may both export, one rename wins) and reused after."""
    from .export import OPSET, export_onnx
    from .model import FaceModel

    if not isinstance(model, FaceModel):
        raise TypeError(f"{getattr(model, 'name', type(model).__name__)} is not a torch zoo model and has no ONNX export")
    network = model.inference_form()
    key = hashlib.sha256(f"{weights_digest(network)}|opset{OPSET}|export{EXPORT_VERSION}|torch{torch.__version__}"
                         .encode()).hexdigest()[:16]
    path = cache_root(cache_dir) / "onnx" / f"{network.name}-{key}.onnx"
    if not path.is_file():
        export_onnx(model, path, source=model.name)
    return path


def make_embedder(runtime: Optional[str], model: torch.nn.Module, cache_dir=None, device: str = "cpu") -> Embedder:
    """The `runtime` embedder of `model` (`DEFAULT_RUNTIME` when None); a peer keeps its own engine.

    AUTO: onnxruntime for a zoo model on the CPU (MobileFaceNet: 5.6 CPU ms per face against
    torch's 8.7 at batch 8, `bench/eval_time.py`), torch on a GPU, and torch with a warning when
    the export fails."""
    from .model import FaceModel
    from .peers import Peer

    name = DEFAULT_RUNTIME if runtime is None else runtime
    if isinstance(model, Peer):
        return TorchEmbedder(model, device=device)
    if name != AUTO:
        return RUNTIMES.get(name)(model, cache_dir, device)  # unknown names fail here, listing the known ones
    if device != "cpu" or not isinstance(model, FaceModel):
        return TorchEmbedder(model, device=device)
    try:
        return OnnxEmbedder(model, cache_dir, device)
    except Exception as error:  # noqa: BLE001 - whatever stops the exporter, torch computes the same embeddings
        warnings.warn(f"{model.name}: no ONNX export ({type(error).__name__}: {str(error)[:300]}); embedding with torch",
                      RuntimeWarning, stacklevel=2)
        return TorchEmbedder(model, device=device)


def runtime_names(auto: bool = False):
    """Registered runtimes, the default first (argparse choices); `auto` puts AUTO in front."""
    names = [DEFAULT_RUNTIME] + [n for n in RUNTIMES if n != DEFAULT_RUNTIME]
    return [AUTO] + names if auto else names
