"""Embeddings of a labelled face set, cached on disk, and their UMAP map.

Embedding is the slow part of every set-level analysis, and the app redraws the same set
many times, so embeddings are cached as plain .npy files (never pickles) under
`<cache>/embeddings/` (cache/ by default, see zoo.data.paths.cache_root), keyed by:
- the model: a hash of its config and every weight, so a retrained checkpoint or another
  random initialisation never reads a stale entry, whatever name it is loaded under;
- the images: a hash of the aligned uint8 crops themselves (order included);
- the degradation (`clean`, `blur2`, ...), applied to the crops before embedding.

UMAP (umap-learn, n_neighbors 15, fixed random_state) runs on the L2-normalised embeddings
with the euclidean metric, which ranks neighbours exactly as cosine similarity does. Its
first call in a process pays numba's compilation (tens of seconds); later calls take
well under a second for a few hundred faces.

Hover thumbnails: plotly's hover label shows text only, so a face cannot appear in it (in
a browser that takes a Dash/JS hover callback). `umap_figure` puts each point's thumbnail,
the face as it was embedded (blurred for blurred points), as a JPEG data URI in its
customdata, and the data keeps the thumbnails as arrays, so an app can show the hovered
face beside the plot; the hover label itself shows identity, path and blur level.
"""
from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Union

import numpy as np
import plotly.graph_objects as go
import torch
from plotly.colors import qualitative

from zoo import FaceModel
from zoo.data import parse_degradation
from zoo.data.paths import atomic_write, cache_root
from zoo.evaluate import embed_images

from .common import AnalysisError
from .images import as_faces, jpeg_data_uri, thumbnail

SYMBOLS = ("circle", "square", "diamond", "triangle-up", "x", "star", "cross", "pentagon")


def model_fingerprint(model: FaceModel) -> str:
    """Hash of the model's config and weights: the same for the same model however it was loaded."""
    digest = hashlib.blake2b(digest_size=12)
    digest.update(json.dumps(model.config.to_dict(), sort_keys=True, default=str).encode())
    for key, tensor in sorted(model.state_dict().items()):
        digest.update(key.encode())
        digest.update(str((tuple(tensor.shape), str(tensor.dtype))).encode())
        digest.update(tensor.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def images_fingerprint(faces: np.ndarray) -> str:
    """Hash of a stack of aligned uint8 crops (shape and pixels)."""
    digest = hashlib.blake2b(digest_size=12)
    digest.update(str(faces.shape).encode())
    digest.update(np.ascontiguousarray(faces).tobytes())
    return digest.hexdigest()


class EmbeddingCache:
    """`.npy` embeddings under `root` (default `<cache>/embeddings`), one file per key."""

    def __init__(self, root: Optional[Union[str, Path]] = None):
        self.root = Path(root) if root is not None else cache_root() / "embeddings"

    def path(self, model: FaceModel, faces: np.ndarray, degradation: str) -> Path:
        return self.root / f"{model.name}-{model_fingerprint(model)}" / f"{images_fingerprint(faces)}-{degradation}.npy"

    def load(self, path: Path, count: int, dim: int) -> Optional[np.ndarray]:
        """The cached array, or None if absent or not (count, dim) float32 (then it is remade);
        `dim` is the model's embedding size (`model.config.embedding_dim`: 128 or 512 in the zoo)."""
        try:
            array = np.load(path, allow_pickle=False)
        except (OSError, ValueError):
            return None
        return array if array.shape == (count, dim) and array.dtype == np.float32 else None

    def store(self, path: Path, embeddings: np.ndarray) -> None:
        atomic_write(path, lambda out: np.save(out, embeddings, allow_pickle=False))


def embed_faces(model: FaceModel, faces, degradation: str = "clean", cache: Union[bool, EmbeddingCache] = True,
                batch_size: int = 64, progress: bool = False) -> np.ndarray:
    """(N, D) float32 L2-normalised embeddings of the degraded faces (D = `model.config.embedding_dim`),
    from the cache when possible."""
    faces = as_faces(faces)
    condition = parse_degradation(degradation)
    store = EmbeddingCache() if cache is True else (cache or None)
    path = store.path(model, faces, condition.name) if store is not None else None
    if path is not None:
        cached = store.load(path, len(faces), model.config.embedding_dim)
        if cached is not None:
            return cached
    embeddings = embed_images(model, condition.apply_batch(faces), batch_size=batch_size, progress=progress,
                              desc=f"embed {condition.name}").astype(np.float32)
    if path is not None:
        store.store(path, embeddings)
    return embeddings


@dataclass
class EmbeddingMap:
    """A 2-D UMAP of embeddings: point k is face `index[k]` at blur `blur[k]`."""

    model: str
    xy: np.ndarray  # (M, 2)
    index: np.ndarray  # (M,) into the face set
    labels: np.ndarray  # (M,) identity label of each point
    blur: np.ndarray  # (M,) blur sigma of each point
    identities: List[str]  # name of each label
    paths: List[str]  # (N,) source of each face ("" when unknown)
    thumbnails: np.ndarray  # (M, 48, 48, 3) uint8: each point's face as embedded (blurred or not)
    seconds: Dict[str, float] = field(default_factory=dict)  # embed, umap

    json_skip = ("thumbnails",)


def _umap(embeddings: np.ndarray, n_neighbors: int, random_state: int) -> np.ndarray:
    import umap  # imported on use: numba and pynndescent take seconds to import

    # n_jobs=1: a fixed random_state makes umap-learn single-threaded anyway (and warn otherwise)
    reducer = umap.UMAP(n_neighbors=min(n_neighbors, len(embeddings) - 1), min_dist=0.1, metric="euclidean",
                        random_state=random_state, n_jobs=1)
    return reducer.fit_transform(embeddings).astype(np.float64)


def embedding_umap(model: FaceModel, faces, labels: Sequence[int], identities: Optional[Sequence[str]] = None,
                   paths: Optional[Sequence[str]] = None, blur_levels: Sequence[float] = (0,),
                   n_neighbors: int = 15, random_state: int = 0, cache: Union[bool, EmbeddingCache] = True,
                   progress: bool = False) -> EmbeddingMap:
    """UMAP of the embeddings of `faces` (each at every blur level) coloured by identity."""
    faces = as_faces(faces)
    labels = np.asarray(labels, dtype=np.int64)
    if len(labels) != len(faces):
        raise AnalysisError(f"{len(faces)} faces but {len(labels)} labels")
    count = len(faces) * len(blur_levels)
    if count < 4:
        raise AnalysisError(f"UMAP needs at least 4 embeddings, got {count}")
    identities = list(identities) if identities is not None else [str(i) for i in range(int(labels.max()) + 1)]
    if labels.min() < 0 or labels.max() >= len(identities):
        raise AnalysisError(f"labels must index the {len(identities)} identities, got range "
                            f"[{labels.min()}, {labels.max()}]")
    start = time.perf_counter()
    conditions = [parse_degradation(f"blur{s:g}") for s in blur_levels]
    embeddings = np.concatenate([embed_faces(model, faces, c.name, cache, progress=progress) for c in conditions])
    embedded = time.perf_counter()
    xy = _umap(embeddings, n_neighbors, random_state)
    seconds = {"embed": embedded - start, "umap": time.perf_counter() - embedded}
    return EmbeddingMap(model.name, xy, np.tile(np.arange(len(faces)), len(blur_levels)), np.tile(labels, len(blur_levels)),
                        np.repeat(np.asarray(blur_levels, dtype=np.float64), len(faces)), identities,
                        [str(p) for p in paths] if paths is not None else [""] * len(faces),
                        np.stack([thumbnail(f) for c in conditions for f in c.apply_batch(faces)]), seconds)


def umap_figure(data: EmbeddingMap, max_legend: int = 30) -> go.Figure:
    """One trace per identity (colour), marker symbol per blur level; customdata per point:
    [identity, path, blur, face index, thumbnail data URI]."""
    levels = sorted(set(data.blur.tolist()))
    palette = qualitative.Dark24 + qualitative.Light24
    fig = go.Figure()
    for label in np.unique(data.labels):
        points = np.flatnonzero(data.labels == label)
        name = data.identities[label]
        customdata = [[name, data.paths[data.index[k]], data.blur[k], int(data.index[k]),
                       jpeg_data_uri(data.thumbnails[k])] for k in points]
        fig.add_trace(go.Scatter(
            x=data.xy[points, 0], y=data.xy[points, 1], mode="markers", name=name, customdata=customdata,
            marker=dict(color=palette[label % len(palette)], size=8, line=dict(width=0.5, color="white"),
                        symbol=[SYMBOLS[levels.index(b) % len(SYMBOLS)] for b in data.blur[points]]),
            hovertemplate="%{customdata[0]}<br>%{customdata[1]}<br>blur sigma %{customdata[2]:g}<extra></extra>"))
    blur_note = ("; marker = blur sigma " + ", ".join(f"{SYMBOLS[i % len(SYMBOLS)]} {b:g}" for i, b in enumerate(levels))
                 if len(levels) > 1 else "")
    fig.update_layout(title=f"{data.model}: UMAP of {len(data.xy)} embeddings, colour = identity{blur_note}",
                      xaxis_title="UMAP 1", yaxis_title="UMAP 2", template="plotly_white", width=900, height=700,
                      showlegend=len(data.identities) <= max_legend)
    return fig
