"""Embedding the faces of concurrent requests together: one forward pass per model for all of them.

A face costs about as much alone as in a batch on one CPU thread (bench/onnx_runtime.py: batch 2
and 8 within noise), but the convolutions of a 112 px face are too small to keep two cores busy,
so the cores are used by running different models at once, and batching lets eight people who
verify at once share one pass of each model and one turn at the models' lock, rather than
taking it per request and model. Each request queues its crops and the models it wants and
waits; one worker thread takes everything queued so far, runs each model once over the crops of
every request that named it (under the app's model lock: Grad-CAM hooks into the same models),
and hands each request its own rows. The models of one batch run side by side, one thread per
core (onnxruntime and torch release the GIL; one model's batch is too small to use two cores),
the costliest first (by each model's CPU time per face in the batches before): a batch ends when
its last model does, so a slow model started last would leave the other cores idle meanwhile.
Nothing waits on purpose: a lone request is embedded at once, and requests arriving while a
batch runs form the next one.

The last CACHED_EMBEDDINGS (model, face) embeddings are kept, keyed by the crop's content: a photo
verified again, against another photo or after another tab, is not embedded again by a model
(and runtime) that already embedded it.
"""
from __future__ import annotations

import hashlib
import os
import queue
import threading
import time
import weakref
from collections import OrderedDict
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Union

import numpy as np

from .models import ZooEntry

CACHED_EMBEDDINGS = 8192  # (model, face) embeddings: at most 512 floats each, 16 MB in all


@dataclass
class _Request:
    entries: Sequence[ZooEntry]
    crops: np.ndarray  # (N, 112, 112, 3) uint8
    result: Future = field(default_factory=Future)


class FaceBatcher:
    """`embed(entries, crops)` for many threads at once, batched across them (module docstring)."""

    def __init__(self, lock: threading.RLock):
        self._lock = lock
        self._cache: "OrderedDict[tuple, tuple]" = OrderedDict()  # (id(entry), crop digest) -> (entry, embedder, row)
        self._cache_lock = threading.Lock()
        self._queue: "queue.Queue[_Request]" = queue.Queue()
        self._models = ThreadPoolExecutor(len(os.sched_getaffinity(0)), thread_name_prefix="face-batcher-model")
        self._cost: Dict[int, tuple] = {}  # id(entry) -> (weak reference to the entry, its last CPU seconds per face)
        self._worker = threading.Thread(target=self._serve, name="face-batcher", daemon=True)
        self._worker.start()

    def embed(self, entries: Sequence[ZooEntry], crops: np.ndarray) -> List[np.ndarray]:
        """Per entry, the (N, D) L2-normalised embeddings of `crops`; raises what the model raised."""
        crops = np.asarray(crops)
        digests = [hashlib.blake2b(np.ascontiguousarray(crop).data, digest_size=16).digest() for crop in crops]
        known = {id(entry): self._cached(entry, digests) for entry in entries}
        missing = list({id(e): e for e in entries if known[id(e)] is None}.values())
        if missing:
            request = _Request(missing, crops)
            self._queue.put(request)
            for entry, embeddings in zip(missing, request.result.result()):
                known[id(entry)] = embeddings
                self._keep(entry, digests, embeddings)
        return [known[id(entry)] for entry in entries]

    def _cached(self, entry: ZooEntry, digests: List[bytes]) -> Optional[np.ndarray]:
        """`entry`'s embeddings of every crop, if all are kept and its runtime is the one that made them."""
        rows = []
        with self._cache_lock:
            for digest in digests:
                kept = self._cache.get((id(entry), digest))
                if kept is None or kept[0] is not entry or kept[1] is not getattr(entry, "embedder", None):
                    return None
                self._cache.move_to_end((id(entry), digest))
                rows.append(kept[2])
        return np.stack(rows)

    def _keep(self, entry: ZooEntry, digests: List[bytes], embeddings: np.ndarray) -> None:
        with self._cache_lock:
            for digest, row in zip(digests, embeddings):
                self._cache[id(entry), digest] = (entry, getattr(entry, "embedder", None), row.copy())
            while len(self._cache) > CACHED_EMBEDDINGS:
                self._cache.popitem(last=False)

    def _serve(self) -> None:
        while True:
            waiting = [self._queue.get()]
            while not self._queue.empty():
                waiting.append(self._queue.get_nowait())
            try:
                self._run(waiting)
            except BaseException as error:  # the worker must outlive any request: fail this batch only
                for request in waiting:
                    if not request.result.done():
                        request.result.set_exception(error)

    def _costliest_first(self, entries: Dict[int, ZooEntry]) -> List[int]:
        """The keys of `entries` by their last cost per face, highest first; never timed ones (or
        timed as another entry that had the same id) before all, as their cost is unknown."""
        def cost(key: int) -> float:
            timed = self._cost.get(key)
            return timed[1] if timed is not None and timed[0]() is entries[key] else float("inf")
        return sorted(entries, key=cost, reverse=True)

    def _run(self, requests: List[_Request]) -> None:
        """Each model once over the crops of every request that named it (by entry identity: two
        entries of one name, say before and after a pull, stay apart)."""
        by_entry: Dict[int, List[_Request]] = {}
        entries: Dict[int, ZooEntry] = {}
        for request in requests:
            for entry in {id(e): e for e in request.entries}.values():
                by_entry.setdefault(id(entry), []).append(request)
                entries[id(entry)] = entry

        def embed(key: int) -> Union[np.ndarray, BaseException]:
            crops = np.concatenate([r.crops for r in by_entry[key]])
            start = time.thread_time()  # onnxruntime and torch run one thread, the calling one
            try:
                embeddings = entries[key].embed(crops)
            except Exception as error:  # reaches only the requests that asked for this model
                return error
            self._cost[key] = (weakref.ref(entries[key]), (time.thread_time() - start) / len(crops))
            return embeddings

        with self._lock:
            order = self._costliest_first(entries)
            outcomes = dict(zip(order, self._models.map(embed, order)))
        rows: Dict[tuple, np.ndarray] = {}
        failed: Dict[int, BaseException] = {}
        for key, users in by_entry.items():
            if isinstance(outcomes[key], BaseException):
                for request in users:
                    failed.setdefault(id(request), outcomes[key])
                continue
            start = 0
            for request in users:
                rows[id(request), key] = outcomes[key][start:start + len(request.crops)]
                start += len(request.crops)
        for request in requests:
            if id(request) in failed:
                request.result.set_exception(failed[id(request)])
            else:
                request.result.set_result([rows[id(request), id(entry)] for entry in request.entries])
