"""Where the shared data and the alignment cache live, and the one way FaceScope writes files.

The data root defaults to `../shared/data` next to the repository so a fresh checkout runs
offline; `FACESCOPE_DATA` (or a `--data-root` flag passed through `override`) points it
elsewhere. The cache is gitignored and safe to delete at any time. Every file is written by
`atomic_write` and every folder (checkpoints, published models, training state) by
`atomic_folder`, so an interrupted run never leaves a half-written one.
"""
from __future__ import annotations

import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO, Callable, Iterator, Optional, Union

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


@contextmanager
def atomic_folder(folder: Union[str, Path]) -> Iterator[Path]:
    """Yield an empty staging folder beside `folder`; when the block ends without an exception
    the staging folder replaces `folder` whole, else it is removed and `folder` is untouched."""
    folder = Path(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=folder.parent))
    staging.chmod(0o755)  # mkdtemp's 0700 would make a shared folder unreadable to others
    try:
        yield staging
        for file in staging.iterdir():
            if file.is_file():
                file.chmod(0o644)
        _swap_in(staging, folder)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def _swap_in(staging: Path, folder: Path) -> None:
    """Replace `folder` by the complete `staging` folder with two renames."""
    if folder.exists():
        retired = folder.with_name(f".{folder.name}.old")
        shutil.rmtree(retired, ignore_errors=True)
        folder.rename(retired)
        staging.rename(folder)
        shutil.rmtree(retired)
    else:
        staging.rename(folder)
