"""FaceScope model zoo: registered architectures, checkpoints and the local/hub zoo.

    import zoo
    model = zoo.build("scan-ir18", width=0.25)   # an untrained registered architecture
    model = zoo.load("ir18-arcface")            # a trained checkpoint from the local zoo
    emb = model.embed(images)                   # (N, 512), L2-normalised
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


def load(name_or_path: Union[str, os.PathLike], revision: Optional[str] = None) -> FaceModel:
    """Load a trained model: a pretrained peer (`peer:dlib`, `peer:sface`; see zoo.peers), a
    local zoo name, else a checkpoint folder, else a Hugging Face Hub repo id (ORG/NAME, see
    zoo.hub). A `revision` (branch, tag, commit) only exists on the hub, so it skips the
    local look-ups."""
    if isinstance(name_or_path, str) and name_or_path.startswith("peer:"):
        from . import peers  # on demand: dlib and onnxruntime load only when a peer is asked for

        try:
            return peers.make_peer(name_or_path)
        except KeyError as unknown:
            raise FileNotFoundError(f"no model {name_or_path!r}: {unknown.args[0]}") from None
    if revision is None:
        candidate = LOCAL_ZOO / str(name_or_path)
        if (candidate / "config.json").is_file():
            return load_checkpoint(candidate)
        path = Path(name_or_path)
        if path.is_dir():
            return load_checkpoint(path)
    from . import hub  # on demand: the local zoo never needs huggingface_hub

    if hub.is_repo_id(str(name_or_path)):
        return hub.load(str(name_or_path), revision=revision)
    raise FileNotFoundError(
        f"no model {str(name_or_path)!r}: not in the local zoo ({', '.join(local_models()) or 'empty'}), "
        f"not a pretrained peer (peer:dlib, peer:sface), not a checkpoint folder and not a Hugging Face Hub "
        f"repo id (ORG/NAME)")


__all__ = ["BACKBONES", "METHODS", "CheckpointError", "Explanation", "FaceModel", "ModelConfig", "build",
           "load", "load_checkpoint", "local_models", "model_names", "parse_name", "read_config", "save"]
