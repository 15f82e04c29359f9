"""Shared fixtures: where the real data is, and one face aligner / crop cache per session.

The dlib models take seconds to load and alignment dominates test time, so both are
session-scoped; the cache lives in a pytest temp folder so tests never touch `cache/`.
"""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

# One thread count on every machine: float sums in conv and matmul kernels depend on how work
# is split, so a test that trains must see the same arithmetic wherever it runs (CI and the
# developers' machines have 2 cores).
TORCH_THREADS = 2
torch.set_num_threads(TORCH_THREADS)

from zoo.data import CropCache, FaceAligner, data_root as resolve_data_root


@pytest.fixture(scope="session")
def data_root() -> Path:
    """The shared data folder ($FACESCOPE_DATA or ../shared/data); fails loudly if absent."""
    root = resolve_data_root()
    if not (root / "lfw" / "images").is_dir():
        pytest.fail(f"shared face data not found at {root}; set FACESCOPE_DATA")
    return root


@pytest.fixture(scope="session")
def face_aligner() -> FaceAligner:
    return FaceAligner()


@pytest.fixture(scope="session")
def crop_cache(tmp_path_factory, face_aligner) -> CropCache:
    return CropCache(tmp_path_factory.mktemp("crop-cache"), face_aligner)
