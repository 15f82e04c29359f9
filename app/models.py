"""The models the app serves: the local zoo and the pretrained peers, loaded once at start, and
hub pulls added while it runs; with each model's verdict threshold, listing order and runtime.

The runtime (`python app.py --runtime`, `ModelSet.use_runtime`) computes the embeddings that
verification, the blur lab and the occlusion lab compare (`ZooEntry.embed`): torch, or
onnxruntime on each model's ONNX export (`zoo.runtime`, exported once into the cache folder);
`auto`, the app's default, is onnxruntime on the CPU, attached in the background: the app serves
every model by torch at once and moves each to onnxruntime when its export is ready (10-20 s a
model the first time, a moment once cached). The analyses that need gradients or a model's
internals (Grad-CAM, the methods' maps) use the torch model whatever the runtime;
`ZooEntry.served_by` says what computed a model's embeddings."""
from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

import zoo
from zoo import CheckpointError, FaceModel, hub
from zoo.peers import Peer, make_peer, peer_names
from zoo.runtime import DEFAULT_RUNTIME, Embedder, TorchEmbedder, make_embedder
from zoo.tables import is_clean, protocol_rank

from .errors import InputError

# The verdict threshold (cosine) of a model whose config.json holds no calibrated one (e.g. an
# imported checkpoint not evaluated yet): typical of ArcFace-family embeddings, and always shown
# marked "uncalibrated", so nobody mistakes it for a measured threshold (see `model_threshold`).
DEFAULT_THRESHOLD = 0.3
log = logging.getLogger("facescope.app")


@dataclass
class ZooEntry:
    """A model the app can use (or one that failed to load, with why)."""

    name: str
    source: str
    folder: Optional[Path]  # None for a pretrained peer
    config: Dict
    model: Optional[FaceModel] = None
    error: Optional[str] = None
    embedder: Optional[Embedder] = None  # None: torch, made on first use
    runtime_note: str = ""  # why the embedder is not the set's runtime, when it is not

    def embed(self, crops: np.ndarray) -> np.ndarray:
        """(N,D) L2-normalised embeddings of aligned uint8 crops, computed by the entry's runtime."""
        if self.embedder is None:  # made on first use: torch's copy of the model
            self.embedder = TorchEmbedder(self.model)
        return self.embedder.embed(crops)

    @property
    def is_peer(self) -> bool:
        """A pretrained peer: a reference model, offered but not selected by default."""
        return isinstance(self.model, Peer)

    @property
    def served_by(self) -> str:
        """What computes this model's embeddings, in words (shown with every verdict)."""
        served = self.embedder.served_by if self.embedder is not None else TorchEmbedder.describe(self.model)
        return f"{served} ({self.runtime_note})" if self.runtime_note else served

    @property
    def threshold(self) -> float:
        """The verdict threshold: calibrated from config.json, else DEFAULT_THRESHOLD (see `model_threshold`)."""
        return model_threshold(self.config)[0]

    @property
    def threshold_from(self) -> str:
        return model_threshold(self.config)[1]

    @property
    def calibrated(self) -> bool:
        return model_threshold(self.config)[2]


def model_threshold(config: Dict) -> Tuple[float, str, bool]:
    """(threshold, where it comes from, calibrated) of a checkpoint's config.json.

    In order: its `threshold` (what train.publish writes from an evaluation: the mean of the
    10-fold accuracy thresholds on the first clean protocol); else that mean read from its
    `metrics` when they hold per-condition thresholds but no top-level one; else
    DEFAULT_THRESHOLD, uncalibrated (e.g. mobilefacenet.y1 as imported, before an evaluation
    is published with it: `python -m train.publish CHECKPOINT --local NAME --eval eval.json`).
    """
    value = config.get("threshold")
    metrics = config.get("metrics") or {}
    if isinstance(value, (int, float)) and not isinstance(value, bool) and np.isfinite(value):
        return float(value), str(metrics.get("threshold_from") or "its config.json"), True
    protocols = metrics.get("protocols") or {}
    for protocol in sorted(protocols, key=lambda p: (protocol_rank(p), p)):
        for condition, values in ((protocols[protocol] or {}).get("conditions") or {}).items():
            found = values.get("threshold")
            if is_clean(values) and isinstance(found, (int, float)) and np.isfinite(found):
                return float(found), f"{protocol} {condition} evaluation: mean of the 10-fold accuracy thresholds", True
    return DEFAULT_THRESHOLD, (f"uncalibrated: no evaluated threshold in its config.json; the default cosine "
                               f"{DEFAULT_THRESHOLD:g}"), False


def zoo_order(entry: ZooEntry) -> Tuple:
    """Where a model is listed: pretrained imports first (the reference, e.g. mobilefacenet.y1),
    then plain models trained or fine-tuned here, then every method's, by name within each; then
    the pretrained peers; models that failed to load last."""
    if entry.error is not None:
        return (4, entry.name)
    if isinstance(entry.model, Peer):
        return (3, entry.name)
    method = entry.config.get("architecture", {}).get("method")
    return (0 if "imported_from" in entry.config else 1 if method == "plain" else 2, entry.name)


def load_entry(name: str, folder: Path, source: str) -> ZooEntry:
    """Load one checkpoint; a broken one is kept with its error so the Zoo tab can say why."""
    try:
        return ZooEntry(name, source, folder, zoo.read_config(folder), zoo.load_checkpoint(folder))
    except CheckpointError as err:
        return ZooEntry(name, source, folder, {}, error=str(err))


def peer_entry(name: str) -> ZooEntry:
    """A pretrained peer as a reference model; one that cannot start is kept with why."""
    try:
        peer = make_peer(name)
    except (ImportError, RuntimeError, OSError) as err:
        return ZooEntry(name, "pretrained peer", None, {}, error=str(err))
    return ZooEntry(name, f"pretrained peer (zoo.peers): {peer.short}", None, peer.checkpoint_config(), peer)


class ModelSet:
    """Every model of the app by name, in `zoo_order`, then hub pulls in pull order.

    `hub_endpoint` is server configuration, never a request field: a pull makes the server
    fetch from this host, so a visitor of an app served on the network must not choose where
    it goes. `lock` guards the set while a pull adds to it."""

    def __init__(self, zoo_dir: Path, hub_endpoint: Optional[str], lock: threading.RLock, peers: bool = True):
        self.zoo_dir = zoo_dir
        self.hub_endpoint = hub.endpoint_url(hub_endpoint)
        self.runtime = DEFAULT_RUNTIME
        self._lock = lock
        local = [load_entry(folder.name, folder, "local zoo")
                 for folder in (sorted(zoo_dir.iterdir()) if zoo_dir.is_dir() else [])
                 if (folder / "config.json").is_file()]
        if peers:
            local += [peer_entry(name) for name in peer_names()]
        self._entries: Dict[str, ZooEntry] = {entry.name: entry for entry in sorted(local, key=zoo_order)}
        self.runtime_ready = threading.Event()  # cleared while a background `use_runtime` is attaching
        self.runtime_ready.set()

    def entries(self) -> List[ZooEntry]:
        with self._lock:  # a pull may be adding one
            return list(self._entries.values())

    def names(self) -> List[str]:
        """The usable models, in listing order."""
        return [entry.name for entry in self.entries() if entry.model is not None]

    def default_names(self) -> List[str]:
        """What the app selects at start: the zoo's models (peers, at 50-100 ms a face on their own
        engines, are references a user adds), or every usable model when there are only peers."""
        names = [entry.name for entry in self.entries() if entry.model is not None and not entry.is_peer]
        return names or self.names()

    def select(self, names: Optional[Sequence[str]]) -> List[ZooEntry]:
        """The entries of `names` (all usable models when None), or InputError naming the unknown."""
        available = self.names()
        if not available:
            raise InputError(f"no models: the zoo at {self.zoo_dir} is empty; pull one from a Hugging Face Hub "
                             "repo in the Zoo tab")
        names = available if names is None else [str(n) for n in names]
        if not names:
            raise InputError("no model selected: choose at least one model")
        entries = {e.name: e for e in self.entries()}
        broken = [entries[n] for n in names if n in entries and entries[n].error is not None]
        if broken:
            raise InputError("; ".join(f"model {e.name} could not be loaded: {e.error}" for e in broken)
                             + f". Usable: {', '.join(available)}")
        unknown = [n for n in names if n not in available]
        if unknown:
            raise InputError(f"unknown model(s) {', '.join(unknown)}; available: {', '.join(available)}")
        return [entries[n] for n in dict.fromkeys(names)]

    def use_runtime(self, runtime: str, background: bool = False) -> None:
        """Compute every model's embeddings with `runtime` (a zoo.runtime name or "auto"), now and
        for models pulled later. A model the runtime cannot take (a peer, a failed export) keeps its
        own engine or torch, and its `served_by` says why. `background`: return at once and attach
        the models one by one in a thread (each serves as before until its turn; `runtime_ready`
        is set when all are done)."""
        with self._lock:
            self.runtime = runtime
            entries = [entry for entry in self._entries.values() if entry.model is not None]
        if not background:
            for entry in entries:
                self._attach(entry)
            return
        self.runtime_ready.clear()
        threading.Thread(target=self._attach_all, args=(entries,), name="runtime-attach", daemon=True).start()

    def _attach_all(self, entries: Sequence[ZooEntry]) -> None:
        try:
            for entry in entries:
                self._attach(entry)
        finally:
            self.runtime_ready.set()

    def _attach(self, entry: ZooEntry) -> ZooEntry:
        """Give a loaded entry the set's runtime. The embedder (an ONNX export, the first time, takes
        seconds) is made outside the lock, so requests go on meanwhile, and swapped in whole."""
        if entry.model is None:
            return entry
        try:
            embedder, note = make_embedder(self.runtime, entry.model), ""
        except Exception as err:  # noqa: BLE001 - any exporter failure: serve the model by torch, and say so
            embedder, note = TorchEmbedder(entry.model), f"{self.runtime} failed: {type(err).__name__}: {str(err)[:200]}"
        with self._lock:
            entry.embedder, entry.runtime_note = embedder, note
        log.info("%s: embeddings by %s", entry.name, entry.served_by)
        return entry

    def pull(self, repo_id: str, revision: Optional[str] = None) -> ZooEntry:
        """Download a checkpoint from a repo on the app's hub and make it usable at once under `repo_id[@revision]`."""
        repo_id, revision = (repo_id or "").strip(), (revision or "").strip() or None
        if not hub.is_repo_id(repo_id):
            raise InputError(f"{repo_id!r} is not a Hugging Face Hub repo id: write it as ORG/NAME, "
                             "e.g. facescope/scan-mobilefacenet.fss-ft")
        folder = hub.pull(repo_id, revision, endpoint=self.hub_endpoint)
        name = repo_id if revision is None else f"{repo_id}@{revision}"
        entry = load_entry(name, folder, f"hub {self.hub_endpoint}: {name} (commit {folder.name})")
        if entry.error is not None:
            raise InputError(f"{name}: pulled, but it is not a usable FaceScope checkpoint: {entry.error}")
        self._attach(entry)
        with self._lock:
            self._entries[name] = entry
        return entry
