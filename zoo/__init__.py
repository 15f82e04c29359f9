"""FaceScope model zoo: everything that turns a photo into an embedding and a pair list into
numbers, and nothing that trains.

    import zoo
    model = zoo.build("scan-mobilefacenet")       # an untrained registered architecture
    model = zoo.load("mobilefacenet.y1")          # a local checkpoint; also peer:sface, hf-hub:ORG/NAME
    emb = model.embed(images)                     # (N, D), L2-normalised

Inside: `backbones/` and `methods/` (registries), `model.py` (the interface), `checkpoint.py`,
`hub.py`, `importers/`, `peers/`, `data/` (readers, alignment, degradations, protocols),
`evaluate.py` / `metrics.py` / `report.py` / `make_pairs.py` (evaluation), `checkpoints/` (the
embedded zoo). May import: torch, numpy, OpenCV, PIL and the other third-party libraries; never
`train`, `analysis` or `app` (tests/test_layers.py).
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import List, Optional, Union

from . import methods  # noqa: F401  (registers every method)
from .checkpoint import CheckpointError, load as load_checkpoint, read_config, save
from .model import METHODS, Explanation, FaceModel, ModelConfig, build, model_names, parse_name
from .backbones import BACKBONES

LOCAL_ZOO = Path(os.environ.get("FACESCOPE_ZOO", Path(__file__).resolve().parent / "checkpoints"))


def local_models() -> List[str]:
    """Names of the trained checkpoints in the local (embedded) zoo."""
    if not LOCAL_ZOO.is_dir():
        return []
    return sorted(p.name for p in LOCAL_ZOO.iterdir() if (p / "config.json").is_file())


HUB_PREFIX = "hf-hub:"


def load(name_or_path: Union[str, os.PathLike], revision: Optional[str] = None) -> FaceModel:
    """Load a trained model, named without guessing:
    - `peer:NAME`: a pretrained peer (`peer:dlib`, `peer:sface`; see zoo.peers);
    - `hf-hub:ORG/NAME`: a Hugging Face Hub repo (see zoo.hub); `revision` pins a branch, tag
      or commit and only exists there;
    - otherwise a local zoo name, else a checkpoint folder.
    """
    text = str(name_or_path)
    if text.startswith("peer:"):
        from . import peers  # on demand: dlib and onnxruntime load only when a peer is asked for

        try:
            return peers.make_peer(text)
        except KeyError as unknown:
            raise FileNotFoundError(f"no model {text!r}: {unknown.args[0]}") from None
    if text.startswith(HUB_PREFIX):
        from . import hub  # on demand: the local zoo never needs huggingface_hub

        return hub.load(text[len(HUB_PREFIX):], revision=revision)
    if revision is not None:
        raise ValueError(f"revision {revision!r} only applies to a Hub repo: write {HUB_PREFIX}{text}")
    candidate = LOCAL_ZOO / text
    if (candidate / "config.json").is_file():
        return load_checkpoint(candidate)
    if Path(name_or_path).is_dir():
        return load_checkpoint(Path(name_or_path))
    hint = f"; for the Hugging Face Hub repo write {HUB_PREFIX}{text}" if text.count("/") == 1 else ""
    raise FileNotFoundError(
        f"no model {text!r}: not in the local zoo ({', '.join(local_models()) or 'empty'}) and not a checkpoint "
        f"folder{hint}; pretrained peers are peer:dlib and peer:sface, Hub repos hf-hub:ORG/NAME")


__all__ = ["BACKBONES", "METHODS", "CheckpointError", "Explanation", "FaceModel", "ModelConfig", "build",
           "load", "load_checkpoint", "local_models", "model_names", "parse_name", "read_config", "save"]
