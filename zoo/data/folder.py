"""Image-folder datasets (`root/IDENTITY/*.<any image type>`) and the `ImageList` every
file-based set uses.

The identity is the folder name, so LFW's `images/` and most scraped datasets read as-is.
Every suffix in `images.IMAGE_EXTENSIONS` counts (JPEG, PNG, PGM, TIFF, ...).
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import List, Sequence, Tuple

import numpy as np

from .errors import EmptyDatasetError, MissingFileError, PathLike
from .images import IMAGE_EXTENSIONS, load_image


@dataclass(frozen=True)
class ImageList:
    """Image files with integer labels; `classes[label]` is the identity's name."""

    paths: Tuple[Path, ...]
    labels: np.ndarray
    classes: Tuple[str, ...]
    source: str

    def __post_init__(self):
        if len(self.paths) == 0:
            raise EmptyDatasetError("dataset has no images", self.source)
        if len(self.paths) != len(self.labels):
            raise ValueError("paths and labels differ in length")

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> Tuple[np.ndarray, int]:
        return load_image(self.paths[index]), int(self.labels[index])

    def identities(self) -> List[str]:
        return [self.classes[i] for i in np.unique(self.labels)]

    @classmethod
    def from_pairs(cls, items: Sequence[Tuple[PathLike, str]], source: str) -> "ImageList":
        """Build from (path, identity name) pairs; labels follow the sorted identity names."""
        classes = tuple(sorted({name for _, name in items}))
        index = {name: i for i, name in enumerate(classes)}
        paths = tuple(Path(p) for p, _ in items)
        labels = np.array([index[name] for _, name in items], dtype=np.int64)
        return cls(paths, labels, classes, source)


def read_image_folder(root: PathLike, min_images: int = 1) -> ImageList:
    """One sub-folder per identity; identities with fewer than `min_images` images are left out.

    When nothing qualifies, the error says what the folder does hold (sub-folders, file types,
    images per identity), so a wrong root or an unexpected layout is plain at once.
    """
    root = Path(root)
    if not root.is_dir():
        raise MissingFileError("image folder not found", root)
    items, seen, counts = [], Counter(), []
    folders = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    for folder in folders:
        files = sorted(f for f in folder.iterdir() if f.is_file() and not f.name.startswith("."))
        seen.update(f.suffix.lower() or "(no suffix)" for f in files)
        images = [f for f in files if f.suffix.lower() in IMAGE_EXTENSIONS]
        counts.append(len(images))
        if len(images) >= min_images:
            items.extend((f, folder.name) for f in images)
    if not items:
        loose = Counter(f.suffix.lower() or "(no suffix)" for f in root.iterdir() if f.is_file())
        found = (f"{len(folders)} sub-folder(s) holding {_describe(seen)}, the fullest with "
                 f"{max(counts, default=0)} image(s)" if folders else f"no sub-folders; loose files: {_describe(loose)}")
        raise EmptyDatasetError(
            f"no identity folder with at least {min_images} image(s): expected ROOT/IDENTITY/IMAGE with an image "
            f"suffix PIL reads (e.g. .jpg, .png, .pgm, .tif); found {found}", root)
    return ImageList.from_pairs(items, str(root))


def _describe(suffixes: Counter) -> str:
    return ", ".join(f"{n} {s}" for s, n in suffixes.most_common(6)) or "no files"
