"""One exception family for bad data, so callers catch `DataError` and show its message.

Every message names the file (and the line or byte offset when there is one): a researcher
with 13,000 images needs to know which one is broken, not just that one is.
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional, Union

PathLike = Union[str, Path]


class DataError(ValueError):
    """A dataset file is missing, unreadable or malformed."""

    def __init__(self, message: str, path: Optional[PathLike] = None, line: Optional[int] = None):
        self.path = None if path is None else str(path)
        self.line = line
        where = ""
        if self.path is not None:
            where = f"{self.path}:{line}: " if line is not None else f"{self.path}: "
        super().__init__(where + message)


class MissingFileError(DataError):
    """A file or folder the dataset refers to does not exist."""


class ImageDecodeError(DataError):
    """A file exists but is not a decodable image (truncated, not an image, unsupported)."""


class FormatError(DataError):
    """A protocol, list or container file does not follow its format (bad line, bad magic)."""


class EmptyDatasetError(DataError):
    """A dataset or pair list holds nothing to train or evaluate on."""


def require_file(path: PathLike, what: str = "file") -> Path:
    """Return `path` as a Path, or raise MissingFileError saying what was expected there."""
    path = Path(path)
    if not path.is_file():
        raise MissingFileError(f"{what} not found", path)
    return path
