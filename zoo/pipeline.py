"""The evaluation's work on images, in parallel: align (through the crop cache), degrade, embed.

One `Pipeline` serves one model's whole run (every protocol). With `workers` > 1 it starts that
many processes on first need (spawned, one thread each: on a shared 2-core machine intra-op
threads spin against each other and against the neighbours' work, separate processes do not)
and keeps them to the end; each holds its own aligner and the model's embedder
(`zoo.runtime`). Alignment comes back from the workers as crops (no cache re-read); an embedding
task takes a chunk of crops and returns their embeddings under every test condition, so each
image is degraded and embedded once per condition. With one worker, or a model on a GPU, the
same functions run in this process.

Measured on MobileFaceNet, one thread (`bench/eval_time.py` times the whole run): most of an
evaluation is embedding, and small batches are much faster than large ones on a CPU (the
activations of 8 faces stay in cache; 64 faces' do not): `DEFAULT_BATCH`.
"""
from __future__ import annotations

import multiprocessing
from concurrent.futures import ProcessPoolExecutor
from functools import partial
from pathlib import Path
from typing import Dict, Optional, Sequence

import numpy as np
import torch
from tqdm import tqdm

from .data import AlignedImages, CropCache, Degradation, align_files
from .data.cache import _worker_init as _start_aligner
from .runtime import Embedder, TorchEmbedder

DEFAULT_BATCH = 8  # faces per forward pass: torch takes 8.7 CPU ms per MobileFaceNet face at 8, 17.3 at 64
CHUNK = 32  # crops per embedding task: a second or two of work, so both workers finish together
MIN_PARALLEL = 128  # images; fewer are done here: starting the workers takes seconds of CPU each


def embed_images(model, images: np.ndarray, batch_size: int = DEFAULT_BATCH, flip: bool = False,
                 device: str = "cpu", progress: bool = False, desc: str = "embed") -> np.ndarray:
    """(N,D) float32 L2-normalised embeddings of (N,112,112,3) uint8 crops by `model` (a model,
    run by torch on `device`, or any `zoo.runtime.Embedder`); flip-test adds the mirrored crop's
    embedding before normalising (normalise(e(x) + e(flip(x))))."""
    embedder = model if isinstance(model, Embedder) else TorchEmbedder(model, device=device)
    out = []
    for start in tqdm(range(0, len(images), batch_size), desc=desc, unit="batch", disable=not progress, leave=False):
        batch = images[start:start + batch_size]
        embedding = embedder.embed(batch)
        if flip:
            embedding = embedding + embedder.embed(np.ascontiguousarray(batch[:, :, ::-1]))
        out.append(embedding / np.linalg.norm(embedding, axis=1, keepdims=True).clip(min=1e-12))
    return np.concatenate(out).astype(np.float32, copy=False) if out else np.zeros((0, 512), np.float32)


def embed_conditions(embedder: Embedder, crops: np.ndarray, conditions: Sequence[Degradation],
                     batch_size: int = DEFAULT_BATCH, flip: bool = False) -> Dict[str, np.ndarray]:
    """Condition name -> embeddings of `crops` degraded by that condition."""
    return {c.name: embed_images(embedder, c.apply_batch(crops), batch_size, flip) for c in conditions}


_WORKER_EMBEDDER: Optional[Embedder] = None


def _start_worker(cache_args: tuple, embedder: Optional[Embedder]) -> None:
    global _WORKER_EMBEDDER
    torch.set_num_threads(1)
    _start_aligner(*cache_args)
    _WORKER_EMBEDDER = embedder


def _worker_embed(crops: np.ndarray, conditions: Sequence[Degradation], batch_size: int,
                  flip: bool) -> Dict[str, np.ndarray]:
    return embed_conditions(_WORKER_EMBEDDER, crops, conditions, batch_size, flip)


class Pipeline:
    """Align and embed for one model (see the module docstring); use it as a context manager so
    its workers stop with it."""

    def __init__(self, embedder: Optional[Embedder], cache: CropCache, workers: int = 1,
                 batch_size: int = DEFAULT_BATCH, flip: bool = False, device: str = "cpu"):
        if batch_size < 1:
            raise ValueError(f"--batch-size must be at least 1, got {batch_size}")
        self.embedder, self.cache, self.workers = embedder, cache, max(1, int(workers))
        self.batch_size, self.flip = batch_size, flip
        self.embed_in_workers = device == "cpu"  # one GPU is fed by this process
        self._pool: Optional[ProcessPoolExecutor] = None

    def __enter__(self) -> "Pipeline":
        return self

    def __exit__(self, *exc) -> None:
        if self._pool is not None:
            self._pool.shutdown(cancel_futures=True)
            self._pool = None

    def _parallel(self, items: int) -> Optional[ProcessPoolExecutor]:
        """The worker pool (started on first need), or None when this process should do `items` itself."""
        if self.workers < 2 or items < MIN_PARALLEL:
            return None
        if self._pool is None:
            self._pool = ProcessPoolExecutor(self.workers, mp_context=multiprocessing.get_context("spawn"),
                                             initializer=_start_worker,
                                             initargs=(self.cache.worker_args(), self.embedder))
        return self._pool

    def align(self, paths: Sequence[Path], progress: bool = True, desc: str = "align") -> AlignedImages:
        """Every image's crop: from the cache, else aligned (by the workers) and cached. The workers
        start here even when the cache holds every crop: the embedding that follows needs them."""
        return align_files(paths, self.cache, progress=progress, desc=desc, pool=self._parallel(len(paths)))

    def embed(self, crops: np.ndarray, conditions: Sequence[Degradation], progress: bool = True,
              desc: str = "embed") -> Dict[str, np.ndarray]:
        """Condition name -> (N,D) embeddings of `crops` degraded by it."""
        if self.embedder is None:
            raise ValueError("this pipeline has no model to embed with")
        pool = self._parallel(len(crops)) if self.embed_in_workers else None
        if pool is None:
            return embed_conditions(self.embedder, crops, conditions, self.batch_size, self.flip)
        chunks = [crops[start:start + CHUNK] for start in range(0, len(crops), CHUNK)]
        task = partial(_worker_embed, conditions=conditions, batch_size=self.batch_size, flip=self.flip)
        parts = []
        with tqdm(total=len(crops), desc=desc, unit="img", disable=not progress, leave=False) as bar:
            for chunk, part in zip(chunks, pool.map(task, chunks)):
                parts.append(part)
                bar.update(len(chunk))
        return {c.name: np.concatenate([part[c.name] for part in parts]) for c in conditions}
