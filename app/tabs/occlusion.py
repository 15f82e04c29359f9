"""The Occlusion tab: which part of face A carries its match to face B, for any model (peers
too: it needs only embeddings), as a heatmap over the face and a drop per landmark patch (with a
patch policy's own choice beside them, for a model that has one)."""
from __future__ import annotations

import threading
from dataclasses import replace
from typing import Dict, List

import analysis
from zoo.runtime import TorchEmbedder

from ..errors import InputError
from ..models import ZooEntry
from ..photos import Pair

PATCH_SIZES = (8, 56)  # the slider's range, pixels at 112
DEFAULT_PATCH, DEFAULT_STRIDE = 16, 8


def occlusion(entry: ZooEntry, pair: Pair, patch: int, stride: int, lock: threading.RLock) -> analysis.Occlusion:
    """Occlusion sensitivity of the pair's similarity under `entry`'s model; bad sizes say why."""
    patch, stride = int(patch), int(stride)
    if not PATCH_SIZES[0] <= patch <= PATCH_SIZES[1]:
        raise InputError(f"patch size {patch} px: choose {PATCH_SIZES[0]} to {PATCH_SIZES[1]} (pixels of the 112 px face)")
    if not 2 <= stride <= patch:
        raise InputError(f"stride {stride} px: choose 2 to the patch size ({patch})")
    face_a, face_b = pair.crops
    with lock:
        data = analysis.occlusion_sensitivity(entry.model, face_a, face_b, patch, stride, embed=fast_embed(entry))
    return replace(data, model=entry.name)  # the app's name for it (zoo folder, hub repo or peer)


def fast_embed(entry: ZooEntry):
    """The runtime's embedding when it is not torch (onnxruntime: a third less CPU); else None
    (no embedder yet is torch too), and the occlusion uses its own BatchNorm-folded torch copy."""
    return None if entry.embedder is None or isinstance(entry.embedder, TorchEmbedder) else entry.embed


def summary(data: analysis.Occlusion) -> str:
    """One line: the similarity, the landmark patch that matters most and, for a patch policy, its choice."""
    strongest = max(data.landmarks, key=data.landmarks.get)
    line = (f"{data.model}: similarity {data.similarity:.3f}; greying the {strongest} lowers it most "
            f"({data.landmarks[strongest]:.3f})")
    if data.policy is not None:
        line += (f"; its patch policy drops {', '.join(data.policy.dropped_names) or 'nothing'} "
                 f"(p {data.policy.mode_probability:.2f})")
    return line


def drop_rows(data: analysis.Occlusion) -> List[Dict]:
    """Every greyed region and the similarity drop it caused, one row each (the CSV download)."""
    corners = [k * data.stride for k in range(data.drops.shape[0])]
    rows = [region_row(f"patch at x {x}, y {y}", (x, y, x + data.patch, y + data.patch), data.drops[r, c])
            for r, y in enumerate(corners) for c, x in enumerate(corners)]
    boxes = analysis.landmark_boxes()
    rows += [region_row(f"landmark {name}", boxes[name], drop) for name, drop in data.landmarks.items()]
    if data.policy is not None:
        rows += [region_row(f"policy patch {name} ({'kept' if kept else 'dropped'})", box, drop)
                 for name, box, kept, drop in zip(data.policy.patch_names, data.policy.boxes, data.policy.kept,
                                                  data.policy.patch_drops)]
    return rows


def region_row(region: str, box, drop) -> Dict:
    x0, y0, x1, y1 = (int(v) for v in box)
    return {"region": region, "x0": x0, "y0": y0, "x1": x1, "y1": y1, "drop": float(drop)}


def payload(pair: Pair, data: analysis.Occlusion) -> Dict:
    """The JSON the tab shows and downloads."""
    policy = data.policy
    return {**pair.describe(), "model": data.model, "similarity": round(data.similarity, 6), "patch": data.patch,
            "stride": data.stride, "landmark_drops": {k: round(v, 6) for k, v in data.landmarks.items()},
            "drops": data.drops.round(6).tolist(), "seconds": round(data.seconds, 3),
            "policy": None if policy is None else {
                "patches": policy.patch_names, "kept": policy.kept.tolist(),
                "mode_probability": round(policy.mode_probability, 6),
                "patch_drops": policy.patch_drops.round(6).tolist(),
                "mode_drop": None if policy.mode_drop is None else round(policy.mode_drop, 6)}}
