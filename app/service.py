"""The app's work without the UI, in one object the whole app shares.

`Service` holds the photo cache (`app.photos`), the model set (`app.models`) and one lock,
picks the models and faces each request names, and hands them to the tab's module
(`app.tabs`), which returns plain data (numpy crops, floats, plotly figures): `app.pages` only
lays things out, and the logic is testable without a browser. Model work runs under the lock:
Grad-CAM hooks into a model, so two requests must never share a model mid-forward, and on a
CPU running them in turn costs little throughput. Face detection has a lock of its own (the
photo cache's), so new photos are read while the models work.

Bad input raises one of `USER_ERRORS` (`app.errors`), with a message meant for the person at the app.
"""
from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import analysis
import zoo
from zoo.data import Aligner, make_aligner

from .batching import FaceBatcher
from .models import ModelSet, ZooEntry
from .photos import APP_ALIGNER, Pair, Photo, PhotoCache
from .tabs.blur_lab import BlurCurve, blur_curve, degradation
from .tabs.compare import Comparison, compare
from .tabs.error_browser import (DEFAULT_CONDITION, DEFAULT_PROTOCOL, DEFAULT_ROWS, ErrorBrowser, browse, pair_files,
                                 stored_results)
from .tabs.embeddings import GALLERY_DIR, GalleryMap, GalleryPlacement, Progress
from .tabs.explain import Explanations, detail_entry, explain
from .tabs.occlusion import occlusion
from .tabs.verify import Verification, verdicts
from .tabs.zoo_tab import card, zoo_table


class Service:
    """Everything the app does; thread-safe (see the module docstring)."""

    def __init__(self, zoo_dir: Optional[Path] = None, gallery_dir: Path = GALLERY_DIR,
                 aligner: Optional[Aligner] = None, hub_endpoint: Optional[str] = None, peers: bool = True):
        self._lock = threading.RLock()
        self.models = ModelSet(Path(zoo_dir) if zoo_dir is not None else zoo.LOCAL_ZOO, hub_endpoint, self._lock,
                               peers)
        self.zoo_dir, self.hub_endpoint = self.models.zoo_dir, self.models.hub_endpoint
        self._batcher = FaceBatcher(self._lock)  # concurrent verifications share forward passes
        self.photos = PhotoCache(aligner or make_aligner(APP_ALIGNER))
        self.gallery_map = GalleryMap(gallery_dir)

    # ---- models and photos -------------------------------------------------------------------

    def model_names(self) -> List[str]:
        """The usable models, local zoo first (in `zoo_order`: the imported reference first), then hub
        pulls in pull order."""
        return self.models.names()

    def default_model_names(self) -> List[str]:
        """The models selected when the page opens: the zoo's, without the peers (`ModelSet.default_names`)."""
        return self.models.default_names()

    def entries(self) -> List[ZooEntry]:
        return self.models.entries()

    def pull(self, repo_id: str, revision: Optional[str] = None) -> ZooEntry:
        return self.models.pull(repo_id, revision)

    def photo(self, path, label: str = "photo") -> Photo:
        return self.photos.photo(path, label)

    def pair(self, path_a, path_b, index_a: int = 0, index_b: int = 0) -> Pair:
        return self.photos.pair(path_a, path_b, index_a, index_b)

    # ---- the tabs ----------------------------------------------------------------------------

    def verify(self, path_a, path_b, models: Optional[Sequence[str]] = None, index_a: int = 0,
               index_b: int = 0) -> Verification:
        """Cosine similarity of the chosen faces per model, and its verdict at the card's threshold."""
        start = time.perf_counter()
        entries = self.models.select(models)
        pair = self.pair(path_a, path_b, index_a, index_b)
        return Verification(pair, verdicts(entries, pair, self._lock, self._batcher), time.perf_counter() - start)

    def blur_curve(self, path_a, path_b, models: Optional[Sequence[str]] = None, kind: str = "blur",
                   amount: float = 2.0, target: str = "second", index_a: int = 0, index_b: int = 0) -> BlurCurve:
        """Similarity per model across degradation levels of photo B's face (or both faces)."""
        degraded = degradation(kind, amount, target)
        entries = self.models.select(models)
        return blur_curve(entries, self.pair(path_a, path_b, index_a, index_b), degraded, self._lock)

    def explain(self, path_a, path_b, models: Optional[Sequence[str]] = None, detail_model: Optional[str] = None,
                index_a: int = 0, index_b: int = 0) -> Explanations:
        """Per model, Grad-CAM of each face's similarity to the other and the method's own maps; and the
        full analysis figure of `detail_model` (default: the first model)."""
        entries = self.models.select(models)
        detail = detail_entry(entries, self.models.select([detail_model])[0] if detail_model else None)
        return explain(entries, detail, self.pair(path_a, path_b, index_a, index_b), self._lock)

    def occlusion(self, path_a, path_b, model: Optional[str] = None, patch: int = 16, stride: int = 8,
                  index_a: int = 0, index_b: int = 0) -> Tuple[Pair, "analysis.Occlusion"]:
        """How face A's similarity to face B drops as each part of A is greyed out (any model)."""
        entry = self.models.select([model] if model else None)[0]
        pair = self.pair(path_a, path_b, index_a, index_b)
        return pair, occlusion(entry, pair, patch, stride, self._lock)

    def compare(self, path_a, path_b, models: Optional[Sequence[str]] = None, patch: int = 16, stride: int = 8,
                index_a: int = 0, index_b: int = 0, progress: Optional[Progress] = None) -> Comparison:
        """Side by side, per model: its verdict, Grad-CAM, occlusion and own map of face A, its landmark
        drops; and every model's similarity as face B is blurred."""
        entries = self.models.select(models)
        return compare(entries, self.pair(path_a, path_b, index_a, index_b), patch, stride, self._lock, progress)

    def error_browser(self, model: Optional[str] = None, protocol: str = DEFAULT_PROTOCOL,
                      condition: str = DEFAULT_CONDITION, view: str = "errors", rows: int = DEFAULT_ROWS,
                      models: Optional[Sequence[str]] = None) -> ErrorBrowser:
        """`model`'s errors (or disagreements) on a protocol and condition among `models`, ranked, with the
        first `rows` rows' faces and the disagreement matrix, from the per-pair results stored beside them."""
        entry = self.models.select([model] if model else None)[0]
        return browse(self.models.select(models), entry, protocol, condition, view, rows, self.photos.align)

    def error_browser_pair(self, model: Optional[str], protocol: str, condition: str, view: str, rank: int,
                           models: Optional[Sequence[str]] = None) -> Tuple[Path, Path, Dict]:
        """The image files of row `rank` of the error browser's list, and the row."""
        entry = self.models.select([model] if model else None)[0]
        return pair_files(self.models.select(models), entry, protocol, condition, view, rank)

    def error_browser_protocols(self) -> Dict[str, List[str]]:
        """Every protocol (-> its conditions) in the usable models' stored per-pair results."""
        return stored_results([e for e in self.entries() if e.model is not None]).protocols()

    def place_in_gallery(self, path_a=None, path_b=None, model: Optional[str] = None, index_a: int = 0,
                         index_b: int = 0, progress: Optional[Progress] = None) -> GalleryPlacement:
        """UMAP of the bundled gallery's embeddings with the uploaded faces (either, both or none) in it."""
        entry = self.models.select([model] if model else None)[0]
        return self.gallery_map.place(entry, self.photos, (path_a, path_b), (index_a, index_b), self._lock, progress)

    def zoo_table(self) -> Tuple[List[str], List[List]]:
        """(headers, rows): each model's architecture, threshold and accuracy per test condition."""
        return zoo_table(self.entries())

    def card(self, name: str) -> str:
        """The model card (README.md) without its YAML front matter."""
        return card(self.entries(), name)

    def warm_up(self, path_a: Path, path_b: Path) -> None:
        """Load the detector and run every model once, so the first request pays no start-up cost."""
        if self.model_names():
            self.verify(path_a, path_b)
        else:
            self.photo(path_a)
