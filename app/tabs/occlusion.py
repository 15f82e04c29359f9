"""The Occlusion tab: which part of face A carries its match to face B, for any model (peers
too: it needs only embeddings), as a heatmap over the face and a drop per landmark patch."""
from __future__ import annotations

import threading
from dataclasses import replace

import analysis

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
        data = analysis.occlusion_sensitivity(entry.model, face_a, face_b, patch, stride)
    return replace(data, model=entry.name)  # the app's name for it (zoo folder, hub repo or peer)
