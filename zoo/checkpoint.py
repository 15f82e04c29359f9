"""Checkpoints: a folder laid out like a Hugging Face model repo.

    model.safetensors   weights (metadata names the architecture; never a pickle)
    config.json         {"facescope_format": 1, "architecture": ModelConfig, ...extra}
    README.md           the model card

Saving writes a complete folder next to the target and swaps it in, so an interrupted save
never leaves a half-written checkpoint. Loading checks the architecture, the file's
integrity and every key, and says which model and which problem when something is off.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Dict, Optional, Union

from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from .data.paths import atomic_folder
from .model import FaceModel, ModelConfig, build

FORMAT_VERSION = 1
WEIGHTS_FILE = "model.safetensors"
CONFIG_FILE = "config.json"
CARD_FILE = "README.md"
# Optional: every pair's similarity and verdict in the card's evaluation (`zoo.evaluate --pairs`),
# what the app's error browser reads; published and pulled with the checkpoint when present.
PAIR_RESULTS_FILE = "pairs.csv.gz"

PathLike = Union[str, os.PathLike]


class CheckpointError(ValueError):
    """A checkpoint folder that cannot be turned into the model it claims to be."""


def save(model: FaceModel, folder: PathLike, card: Optional[str] = None,
         extra_config: Optional[Dict[str, Any]] = None) -> Path:
    """Write `model` to `folder` (replaced atomically if it exists)."""
    folder = Path(folder)
    with atomic_folder(folder) as staging:
        state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
        save_file(state, str(staging / WEIGHTS_FILE),
                  metadata={"facescope_format": str(FORMAT_VERSION), "architecture": model.name})
        config = {"facescope_format": FORMAT_VERSION, "architecture": model.config.to_dict(), **(extra_config or {})}
        (staging / CONFIG_FILE).write_text(json.dumps(config, indent=2) + "\n")
        (staging / CARD_FILE).write_text(card if card is not None else default_card(model))
    return folder


def read_config(folder: PathLike) -> Dict[str, Any]:
    folder = Path(folder)
    path = folder / CONFIG_FILE
    if not path.is_file():
        raise CheckpointError(f"{folder}: not a FaceScope checkpoint (no {CONFIG_FILE})")
    try:
        config = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise CheckpointError(f"{path}: unreadable JSON ({err})") from None
    if not isinstance(config, dict) or "architecture" not in config:
        raise CheckpointError(f"{path}: no 'architecture' entry; not a FaceScope checkpoint config")
    if config.get("facescope_format") != FORMAT_VERSION:
        raise CheckpointError(f"{path}: checkpoint format {config.get('facescope_format')!r}, "
                              f"this FaceScope reads format {FORMAT_VERSION}")
    return config


def load(folder: PathLike) -> FaceModel:
    """Rebuild the model a checkpoint folder describes and load its weights, in eval mode."""
    folder = Path(folder)
    config = read_config(folder)
    try:
        model = build(ModelConfig.from_dict(config["architecture"]))
    except (KeyError, TypeError, ValueError) as err:
        raise CheckpointError(f"{folder / CONFIG_FILE}: cannot build the architecture it describes: {err}") from None
    load_weights(model, folder / WEIGHTS_FILE)
    return model.eval()


def load_weights(model: FaceModel, path: PathLike) -> None:
    """Load a safetensors file into `model`, refusing any mismatch."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{model.name}: weights file {path} is missing")
    try:
        with safe_open(str(path), framework="pt") as reader:
            stored_arch = (reader.metadata() or {}).get("architecture")
            if stored_arch is not None and stored_arch != model.name:
                raise CheckpointError(f"{path}: holds weights of architecture {stored_arch!r}, "
                                      f"not {model.name!r}")
            state = {key: reader.get_tensor(key) for key in reader.keys()}
    except (SafetensorError, OSError, RuntimeError) as err:
        raise CheckpointError(f"{model.name}: {path} is corrupted or truncated ({err})") from None
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    wrong_shape = sorted(k for k in set(state) & set(expected) if state[k].shape != expected[k].shape)
    problems = []
    if missing:
        problems.append(f"missing {len(missing)} key(s), e.g. {missing[:3]}")
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected key(s), e.g. {unexpected[:3]}")
    if wrong_shape:
        k = wrong_shape[0]
        problems.append(f"{len(wrong_shape)} key(s) of the wrong shape, e.g. {k}: "
                        f"file {tuple(state[k].shape)} vs model {tuple(expected[k].shape)}")
    if problems:
        raise CheckpointError(f"{model.name}: {path} does not match the architecture: " + "; ".join(problems))
    model.load_state_dict(state, strict=True)


def default_card(model: FaceModel) -> str:
    """A card for a model saved without training provenance: says so plainly."""
    return (f"# {model.name}\n\nFaceScope model, method `{model.config.method}`, backbone "
            f"`{model.config.backbone}`, {model.parameter_count():,} parameters.\n\n"
            "No training record was given when this checkpoint was saved: treat its accuracy as unknown.\n\n"
            f"```json\n{json.dumps(model.config.to_dict(), indent=2)}\n```\n")
