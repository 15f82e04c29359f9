"""The app's FaceBatcher: concurrent requests share forward passes and each gets its own faces'
embeddings, equal to embedding them alone; a failing model fails only the requests that named it;
a face one model (and runtime) embedded before is not embedded again."""
from __future__ import annotations

import threading
import time

import numpy as np
import pytest

import zoo
from app.batching import FaceBatcher
from app.models import load_entry
from faces import lfw_identities

REQUESTS = 8


@pytest.fixture(scope="module")
def entries():
    return [load_entry(name, zoo.LOCAL_ZOO / name, "local zoo")
            for name in ("mobilefacenet.y1", "scan-mobilefacenet.fss-ft")]


@pytest.fixture(scope="module")
def pairs():
    faces, _ = lfw_identities(REQUESTS, 2)  # one real same-person pair per request
    return [faces[2 * k:2 * k + 2] for k in range(REQUESTS)]


class Counted:
    """An entry whose forward passes are counted (and which can be made to fail)."""

    def __init__(self, entry, fail: bool = False):
        self.entry, self.fail, self.batches = entry, fail, []

    def embed(self, crops):
        self.batches.append(len(crops))
        if self.fail:
            raise RuntimeError("this model is broken")
        return self.entry.embed(crops)


def submit_together(batcher, lock, jobs):
    """Run `jobs` (entries, crops) on threads while the worker is held at the lock, so all of them
    queue before any batch runs; returns each job's result or exception."""
    results = [None] * len(jobs)

    def call(k):
        try:
            results[k] = batcher.embed(*jobs[k])
        except Exception as error:
            results[k] = error

    with lock:
        threads = [threading.Thread(target=call, args=(k,)) for k in range(len(jobs))]
        for thread in threads:
            thread.start()
        deadline = time.monotonic() + 60
        while batcher._queue.qsize() < len(jobs) - 1 and time.monotonic() < deadline:  # one is in the worker
            time.sleep(0.01)
    for thread in threads:
        thread.join(timeout=120)
    return results


def test_concurrent_requests_share_forward_passes_and_get_their_own_embeddings(entries, pairs):
    lock = threading.RLock()
    batcher = FaceBatcher(lock)
    counted = [Counted(e) for e in entries]
    results = submit_together(batcher, lock, [(counted, crops) for crops in pairs])
    for crops, result in zip(pairs, results):
        assert len(result) == len(entries)
        for entry, embeddings in zip(entries, result):
            alone = entry.embed(crops)
            np.testing.assert_allclose(embeddings, alone, atol=1e-5)
            assert float(embeddings[0] @ embeddings[1]) > 0.3  # the same person, recognised
    for model in counted:  # what the worker took before the lock, then everything queued behind it
        assert sum(model.batches) == 2 * REQUESTS and len(model.batches) <= 2, model.batches


def test_a_failing_model_fails_only_its_requests_and_the_worker_goes_on(entries, pairs):
    lock = threading.RLock()
    batcher = FaceBatcher(lock)
    good, broken = Counted(entries[0]), Counted(entries[1], fail=True)
    results = submit_together(batcher, lock, [([good, broken] if k % 2 else [good], pairs[k]) for k in range(4)])
    assert [isinstance(r, RuntimeError) for r in results] == [False, True, False, True]
    assert "this model is broken" in str(results[1])
    again = batcher.embed([good], pairs[0])  # the worker survived
    np.testing.assert_allclose(again[0], entries[0].embed(pairs[0]), atol=1e-5)


def test_a_face_seen_before_is_not_embedded_again_by_the_same_model_and_runtime(entries, pairs):
    batcher = FaceBatcher(threading.RLock())
    model = Counted(entries[0])
    first = batcher.embed([model], pairs[0])[0]
    again = batcher.embed([model], pairs[0][::-1])[0]  # the same two faces, the other way round
    assert model.batches == [2]
    np.testing.assert_array_equal(again, first[::-1])
    mixed = batcher.embed([model], np.stack([pairs[0][0], pairs[1][0]]))[0]  # one face new: both embedded
    assert model.batches == [2, 2]
    np.testing.assert_allclose(mixed[0], first[0], atol=1e-5)
    other = Counted(entries[1])  # another model embeds for itself
    batcher.embed([other], pairs[0])
    assert other.batches == [2]
    model.embedder = object()  # the runtime changed (say torch to onnxruntime): embedded anew
    batcher.embed([model], pairs[0])
    assert model.batches == [2, 2, 2]


class Burning:
    """An entry that spends `seconds` of CPU per face, so its measured cost is known."""

    def __init__(self, seconds: float):
        self.seconds = seconds

    def embed(self, crops):
        end = time.thread_time() + self.seconds * len(crops)
        while time.thread_time() < end:
            pass
        return np.zeros((len(crops), 4), np.float32)


def test_costliest_model_starts_first_and_an_untimed_one_before_all(pairs):
    """A batch ends with its last model, so the models go to the cores by their last CPU time per
    face, highest first; one never timed (new, or pulled in place of one) goes first of all."""
    cheap, costly, new = Burning(0.001), Burning(0.03), Burning(0.0)
    batcher = FaceBatcher(threading.RLock())
    batcher.embed([cheap, costly], pairs[0])
    keys = {id(cheap): cheap, id(costly): costly, id(new): new}
    assert batcher._costliest_first(keys) == [id(new), id(costly), id(cheap)]
    batcher.embed([new], pairs[1])
    assert batcher._costliest_first(keys) == [id(costly), id(cheap), id(new)]
