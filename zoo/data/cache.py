"""Aligned crops cached on disk, so only the first evaluation of a dataset pays for detection.

One lossless PNG per source image under `<cache>/aligned/<aligner version>/`, named by a hash
of the aligner's version, the source's absolute path, size and modification time: an edited
image, another aligner (each has its own version string, e.g. YuNet's and dlib's) or a new
aligner version misses the cache instead of serving a stale crop. How the crop was made
(landmarks / pre-aligned / center-crop) is stored in the PNG's text metadata. Writes are
atomic (temp file + rename), so parallel workers and interrupted runs never leave half files.
"""
from __future__ import annotations

import hashlib
import multiprocessing
import time
from concurrent.futures import Executor, ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Iterator, List, Optional, Sequence, Tuple, Union

import cv2
import numpy as np
from PIL import Image, PngImagePlugin
from tqdm import tqdm

from .align import SIZE, AlignedFace, Aligner, make_aligner
from .errors import DataError, PathLike
from .images import load_image
from .paths import atomic_write, cache_root

_METHOD_KEY = "facescope-alignment"


class CropCache:
    """Get-or-make aligned crops for image files.

    `aligner` is an aligner instance or a registered name ("yunet", "dlib"); None is the
    default aligner (`zoo.data.align.DEFAULT_ALIGNER`).
    """

    def __init__(self, root: Optional[PathLike] = None, aligner: Union[Aligner, str, None] = None):
        self.root = cache_root(root)
        self.aligner = aligner if isinstance(aligner, Aligner) else make_aligner(aligner)
        self.folder = self.root / "aligned" / self.aligner.version

    @property
    def aligner_name(self) -> str:
        return self.aligner.name

    def worker_args(self) -> tuple:
        """`_worker_init`'s arguments that rebuild this cache (same folder, same aligner) in a worker."""
        return str(self.root), self.aligner.name, self.aligner.options(), self.aligner.version

    def path_for(self, source: PathLike) -> Path:
        source = Path(source).resolve()
        stat = source.stat()
        key = hashlib.sha1(f"{self.aligner.version}|{source}|{stat.st_size}|{stat.st_mtime_ns}".encode()).hexdigest()
        return self.folder / key[:2] / f"{key}.png"

    def load(self, source: PathLike) -> Optional[AlignedFace]:
        """The cached crop, or None when there is none (or it is unreadable: it is remade)."""
        try:
            cached = self.path_for(source)
            with Image.open(cached) as image:
                image.load()
                method = image.text.get(_METHOD_KEY)
                array = np.asarray(image.convert("RGB"))
        except (OSError, ValueError):
            return None
        if method is None or array.shape != (SIZE, SIZE, 3):
            return None
        return AlignedFace(array, method)

    def store(self, source: PathLike, face: AlignedFace) -> None:
        info = PngImagePlugin.PngInfo()
        info.add_text(_METHOD_KEY, face.method)
        atomic_write(self.path_for(source),
                     lambda out: Image.fromarray(face.image).save(out, format="PNG", pnginfo=info, compress_level=1))

    def get(self, source: PathLike) -> AlignedFace:
        """Cached crop, else load + align + store. Raises DataError for missing/bad images."""
        cached = self.load(source) if Path(source).is_file() else None
        if cached is not None:
            return cached
        face = self.aligner.align(load_image(source))
        self.store(source, face)
        return face


@dataclass
class AlignedImages:
    """Crops of many files: `images[i]` is the crop of `paths[i]`; failures listed apart.
    `cpu_seconds`: this process's and its alignment workers' CPU time (what a busy machine
    distorts less than the wall time, `seconds`)."""

    paths: List[Path]
    images: np.ndarray
    methods: List[str]
    errors: Dict[Path, DataError]
    seconds: float
    cpu_seconds: float
    aligned_now: int

    def index(self) -> Dict[Path, int]:
        return {p: i for i, p in enumerate(self.paths)}

    @property
    def fallbacks(self) -> int:
        return sum(m == "center-crop" for m in self.methods)


_WORKER_CACHE: Optional[CropCache] = None


def _worker_init(root: str, aligner: str = None, options: Optional[dict] = None,
                 version: Optional[str] = None) -> None:
    """Each worker builds its own aligner by registered name (+ the parent's settings): a
    detector is never shared between processes, and the crops match the parent's key. OpenCV
    gets one thread: the workers are the parallelism."""
    global _WORKER_CACHE
    cv2.setNumThreads(1)
    _WORKER_CACHE = CropCache(root, make_aligner(aligner, **(options or {})))
    if version is not None and _WORKER_CACHE.aligner.version != version:
        raise RuntimeError(f"worker aligner {_WORKER_CACHE.aligner.version} != parent's {version}")


def _worker_align(source: Path) -> Tuple[Union[AlignedFace, DataError], float]:
    """Align into the cache in a worker process: the crop (or the error to report) and the CPU
    seconds it took (a pool that outlives the call is not in RUSAGE_CHILDREN yet)."""
    start = time.process_time()
    return _align_or_error(_WORKER_CACHE, source), time.process_time() - start


def _align_or_error(cache: CropCache, source: Path) -> Union[AlignedFace, DataError]:
    try:
        return cache.get(source)
    except DataError as error:
        return error


def _aligned(missing: List[Path], cache: CropCache, workers: int,
             pool: Optional[Executor]) -> Iterator[Tuple[Union[AlignedFace, DataError], float]]:
    """(crop or error, CPU seconds spent in another process) of each of `missing`, in order: in
    `pool`, else in `workers` processes started for this call, else here (0 s elsewhere)."""
    if pool is None and workers > 1 and len(missing) > workers:
        with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"), initializer=_worker_init,
                                 initargs=cache.worker_args()) as own:
            yield from own.map(_worker_align, missing, chunksize=16)
    elif pool is not None:
        yield from pool.map(_worker_align, missing, chunksize=16)
    else:
        for source in missing:
            yield _align_or_error(cache, source), 0.0


def align_files(sources: Sequence[PathLike], cache: CropCache, workers: int = 1, progress: bool = True,
                desc: str = "align", pool: Optional[Executor] = None) -> AlignedImages:
    """Crops for every source, aligning the uncached ones in `pool` (processes set up by
    `_worker_init`, e.g. the evaluation's), else in `workers` new processes if > 1, else here.

    Bad files do not stop the run: they are returned in `errors` so the caller decides
    whether to skip (evaluation reports them) or fail (strict mode).
    """
    start, cpu = time.perf_counter(), -time.process_time()
    sources = list(dict.fromkeys(Path(s) for s in sources))
    faces: Dict[Path, AlignedFace] = {}
    errors: Dict[Path, DataError] = {}
    missing = []
    for source in sources:
        cached = cache.load(source) if source.is_file() else None
        if cached is not None:
            faces[source] = cached
        else:
            missing.append(source)
    bar = tqdm(total=len(sources), initial=len(faces), desc=desc, unit="img", disable=not progress, leave=False)
    for source, (result, seconds) in zip(missing, _aligned(missing, cache, workers, pool)):
        if isinstance(result, DataError):
            errors[source] = result
        else:
            faces[source] = result
        cpu += seconds
        bar.update()
    bar.close()
    good = [s for s in sources if s in faces]
    images = np.stack([faces[s].image for s in good]) if good else np.zeros((0, SIZE, SIZE, 3), np.uint8)
    return AlignedImages(good, images, [faces[s].method for s in good], errors, time.perf_counter() - start,
                         cpu + time.process_time(), len(missing) - len(errors))
