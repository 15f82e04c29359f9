"""Packed training sets of real LFW faces for the training tests, in train.prepare's .npz layout."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from faces import lfw_identities


def pack_lfw(folder: Path, people: int, per_person: int) -> Path:
    """`folder`/faces.npz: `per_person` faces of each of the first `people` LFW people with as many."""
    images, labels = lfw_identities(people=people, per_person=per_person)
    path = folder / "faces.npz"
    np.savez(path, images=images, labels=labels)
    return path
