"""What each model can show, and the error raised when it is asked for something else."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Dict, List, Union

from zoo import FaceModel

# Analyses that need a method's own internals, by the methods that have them.
METHOD_ANALYSES = {
    "scan": ("t-density", "scale-map"),
    "scan-folded": ("t-density", "scale-map"),
    "sranet": ("attention",),
    "hpda": ("attention",),
    "arface": ("attention",),
}
# Analyses that only need embeddings (and, for Grad-CAM, gradients): any model.
ANY_MODEL_ANALYSES = ("gradcam", "correlation", "umap")


class AnalysisError(ValueError):
    """An analysis was asked of a model (or data) that cannot provide it; says what can."""


def available_analyses(model: FaceModel) -> List[str]:
    """The analyses `model` supports, method-specific first."""
    return [*METHOD_ANALYSES.get(model.method, ()), *ANY_MODEL_ANALYSES]


def require(model: FaceModel, analysis: str, what: str) -> None:
    """Raise AnalysisError unless `model` supports `analysis`; `what` names it for people."""
    if analysis not in available_analyses(model):
        owners = sorted(m for m, names in METHOD_ANALYSES.items() if analysis in names)
        raise AnalysisError(
            f"{model.name} (method {model.method!r}) has no {what}: only {', '.join(owners)} models do. "
            f"This model can show: {', '.join(available_analyses(model))}")


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
