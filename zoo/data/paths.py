"""Where the shared data and the alignment cache live.

The data root defaults to `../shared/data` next to the repository so a fresh checkout runs
offline; `FACESCOPE_DATA` (or a `--data-root` flag passed through `override`) points it
elsewhere. The cache is gitignored and safe to delete at any time.
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import BinaryIO, Callable, Optional, Union

REPO_ROOT = Path(__file__).resolve().parents[2]


def data_root(override: Optional[Union[str, Path]] = None) -> Path:
    """The shared data folder: `override`, else $FACESCOPE_DATA, else ../shared/data."""
    chosen = override or os.environ.get("FACESCOPE_DATA") or REPO_ROOT.parent / "shared" / "data"
    return Path(chosen).expanduser().resolve()


def cache_root(override: Optional[Union[str, Path]] = None) -> Path:
    """The aligned-crop cache: `override`, else $FACESCOPE_CACHE, else <repo>/cache."""
    chosen = override or os.environ.get("FACESCOPE_CACHE") or REPO_ROOT / "cache"
    return Path(chosen).expanduser().resolve()


def atomic_write(path: Union[str, Path], write: Callable[[BinaryIO], None]) -> None:
    """Call `write(handle)` on a temp file beside `path`, then rename it into place.

    A crash or an exception leaves the previous file (or none), never a partial one; the
    rename is atomic, so concurrent writers of the same cache entry cannot mix bytes.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "wb") as out:
            write(out)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(temp, 0o666 & ~umask)  # mkstemp's 0600 would hide results from other users
        os.replace(temp, path)
    except BaseException:
        if os.path.exists(temp):
            os.unlink(temp)
        raise
