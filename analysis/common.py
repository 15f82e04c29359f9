"""What each model can show, and the error raised when it is asked for something else.

A method declares the analyses of its own internals (`FaceModel.analyses`) by the names the
analysis modules implement them under; each module registers those names here with the name
people ask for them by (the command of `python -m analysis`, what `available_analyses`
lists): every method's attention reader is asked for as "attention".
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Dict, List, Optional, Set, Tuple, Union

from zoo import METHODS, FaceModel

# Analysis -> the name people ask for it by; filled by the analysis modules as they load.
ASKED_AS: Dict[str, str] = {}
# Analyses that only need embeddings (and, for Grad-CAM, gradients): any model.
ANY_MODEL_ANALYSES = ("gradcam", "correlation", "umap")


class AnalysisError(ValueError):
    """An analysis was asked of a model (or data) that cannot provide it; says what can."""


def register(name: str, asked_as: Optional[str] = None) -> None:
    """Make `name` an analysis a method can declare, asked for as `asked_as` (default: itself)."""
    ASKED_AS[name] = asked_as or name


def declared(model: FaceModel) -> Tuple[str, ...]:
    """The analyses of `model`'s own internals; a pretrained peer (zoo.peers, no FaceModel) has none."""
    return getattr(model, "analyses", ())


def available_analyses(model: FaceModel) -> List[str]:
    """The analyses `model` supports, by the names people ask for them, method-specific first."""
    return [*dict.fromkeys(ASKED_AS[name] for name in declared(model)), *ANY_MODEL_ANALYSES]


def methods_showing(analysis: str) -> List[str]:
    """The registered methods whose models support `analysis` (either name)."""
    return sorted(name for name, method in METHODS.items() if analysis in _shown_by(method.analyses))


def _shown_by(analyses: Tuple[str, ...]) -> Set[str]:
    return {*analyses, *(ASKED_AS[name] for name in analyses)}


def require(model: FaceModel, analysis: str, what: str) -> None:
    """Raise AnalysisError unless `model` supports `analysis` (either name); `what` names it for people."""
    if analysis not in _shown_by(declared(model)) | set(ANY_MODEL_ANALYSES):
        raise AnalysisError(
            f"{model.name} (method {model.method!r}) has no {what}: only {', '.join(methods_showing(analysis))} "
            "models do. "
            f"This model can show: {', '.join(available_analyses(model))}")


def record_key(analysis: str) -> str:
    """The records.jsonl key under which training logs what `analysis` reads (`FaceModel.record_keys`)."""
    return next(method.record_keys[analysis] for _, method in METHODS.items() if analysis in method.record_keys)


def read_records(path: Union[str, Path], key: str, missing: str) -> Dict[int, Any]:
    """epoch -> the `key` entry of a training run's records.jsonl (the last record of an epoch
    wins, so a resumed run that logged an epoch twice counts it once); `missing` explains an
    absent key."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no records file {path} (a training run writes RUN/records.jsonl)")
    by_epoch: Dict[int, Any] = {}
    for number, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as error:
            raise AnalysisError(f"{path}:{number}: not a JSON line ({error})") from None
        if key in record:
            by_epoch[int(record["epoch"])] = record[key]
    if not by_epoch:
        raise AnalysisError(f"{path} has no `{key}` entries: {missing}")
    return by_epoch
