"""One protocol's verification results: align its images, embed them, score every pair, metrics.

`protocol_results` does it with a `zoo.pipeline.Pipeline` (the run's workers and embedder);
`evaluate_protocol` is the same for one protocol and a model run by torch (what
`bench/accuracy.py` and the tests call); `pair_results` / `write_pair_results` keep every pair's
similarity and verdict (`python -m zoo.evaluate --pairs`).
"""
from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from . import metrics, report
from .data import CropCache, DataError, Degradation, PairList
from .data.paths import atomic_write
from .pipeline import DEFAULT_BATCH, Pipeline
from .runtime import DEFAULT_RUNTIME, make_embedder

WARN_FALLBACK = 0.05  # a larger share of faceless images is printed as a warning


def evaluate_protocol(model, pairs: PairList, conditions: Sequence[Degradation], cache: CropCache,
                      flip: bool = False, batch_size: int = DEFAULT_BATCH, device: str = "cpu",
                      strict: bool = False, workers: int = 1, progress: bool = True,
                      memo: Optional[Dict[Tuple[str, Path], np.ndarray]] = None,
                      max_fallback: Optional[float] = None, preview: Optional[Path] = None,
                      pair_rows: Optional[List[Dict[str, object]]] = None) -> Dict[str, object]:
    """One protocol with `model` run by torch (None when `memo` holds every embedding):
    `protocol_results` with a pipeline of its own (`run` shares one across protocols)."""
    embedder = None if model is None else make_embedder(DEFAULT_RUNTIME, model, cache.root, device)
    with Pipeline(embedder, cache, workers, batch_size, flip, device) as pipeline:
        return protocol_results(pipeline, pairs, conditions, strict, progress, memo, max_fallback, preview, pair_rows)


def protocol_results(pipeline: Pipeline, pairs: PairList, conditions: Sequence[Degradation], strict: bool = False,
                     progress: bool = True, memo: Optional[Dict[Tuple[str, Path], np.ndarray]] = None,
                     max_fallback: Optional[float] = None, preview: Optional[Path] = None,
                     pair_rows: Optional[List[Dict[str, object]]] = None) -> Dict[str, object]:
    """Metrics of one protocol under each condition, as JSON-ready data.

    `memo` (condition name, image) -> embedding lets protocols that share images (CFP-FF and
    CFP-FP share the frontal faces) embed them once per run. Alignment comes first and is
    reported before any embedding: above WARN_FALLBACK of images without a detected face a
    warning is printed, above `max_fallback` the run stops (DataError); `preview` (a folder)
    gets `<protocol>-alignment.png`, a grid of sample crops and of the faceless images.
    `pair_rows`, when given, receives one row per pair and condition (`pair_results`).
    """
    memo = {} if memo is None else memo
    aligned = pipeline.align(pairs.images(), progress, desc=f"align {pairs.name}")
    if preview is not None:
        report.alignment_preview(aligned, Path(preview) / f"{pairs.name}-alignment.png")
    fraction = aligned.fallbacks / max(len(aligned.paths), 1)
    if max_fallback is not None and fraction > max_fallback:
        raise DataError(f"{aligned.fallbacks} of {len(aligned.paths)} images ({100 * fraction:.1f}%) have no detected "
                        f"face, above --max-fallback {max_fallback:g}; the centre crops would measure the detector, "
                        "not the model. Look at them with --preview, or try --aligner dlib", pairs.origins[0][0])
    if fraction > WARN_FALLBACK:
        print(f"warning: {pairs.name}: {aligned.fallbacks} of {len(aligned.paths)} images ({100 * fraction:.1f}%) have "
              f"no detected face and are centre-cropped (the JSON lists them all; --preview shows them)",
              file=sys.stderr, flush=True)
    skipped, valid = [], []
    for k, (a, b) in enumerate(zip(pairs.first, pairs.second)):
        bad = [aligned.errors[p] for p in (a, b) if p in aligned.errors]
        if not bad:
            valid.append(k)
            continue
        if strict:
            raise DataError(f"pair needs an unusable image: {bad[0]}", *pairs.origins[k])
        skipped.append({"pair": pairs.where(k), "reason": str(bad[0])})
    result: Dict[str, object] = {
        "name": pairs.name, "source": sorted({f for f, _ in pairs.origins}), "pairs_total": len(pairs),
        "pairs_skipped": len(skipped), "skipped": skipped, "images": len(pairs.images()),
        "fallback_alignments": aligned.fallbacks,
        "fallback_fraction": round(aligned.fallbacks / max(len(aligned.paths), 1), 6),
        "fallback_images": [str(p) for p, m in zip(aligned.paths, aligned.methods) if m == "center-crop"],
        "align_seconds": round(aligned.seconds, 2), "conditions": {},
    }
    if progress:
        rate = f", {aligned.aligned_now / aligned.seconds:.0f} img/s" if aligned.aligned_now and aligned.seconds else ""
        print(f"{pairs.name}: {len(aligned.paths)} images aligned by {pipeline.cache.aligner.name} ({aligned.aligned_now} "
              f"new in {aligned.seconds:.1f} s{rate}; the rest from the crop cache, shared by every model); "
              f"{aligned.fallbacks} without a detected face ({100 * result['fallback_fraction']:.1f}%)",
              file=sys.stderr, flush=True)
    if not valid:
        raise DataError("every pair of the protocol was skipped (no usable images); "
                        f"first reason: {skipped[0]['reason']}", pairs.origins[0][0])
    start = time.perf_counter()
    todo = [p for p in aligned.paths if any((c.name, p) not in memo for c in conditions)]
    if todo:
        index = aligned.index()
        embedded = pipeline.embed(aligned.images[[index[p] for p in todo]], conditions, progress,
                                  desc=f"embed {pairs.name}")
        for name, vectors in embedded.items():
            memo.update({(name, p): v for p, v in zip(todo, vectors)})
    result["embed_seconds"] = round(time.perf_counter() - start, 2)
    used = pairs.select(valid)
    for condition in conditions:
        first = np.stack([memo[(condition.name, p)] for p in used.first])
        second = np.stack([memo[(condition.name, p)] for p in used.second])
        scores = metrics.cosine_scores(first, second)
        values = metrics.verification_metrics(scores, used.issame, used.folds)
        result["conditions"][condition.name] = {
            "degradation": {"kind": condition.kind, "amount": condition.amount}, **values, "embedded_images": len(todo)}
        if pair_rows is not None:
            pair_rows += pair_results(used, condition.name, scores, values["fold_thresholds"])
    return result


def pair_results(pairs: PairList, condition: str, scores: np.ndarray,
                 fold_thresholds: Sequence[float]) -> List[Dict[str, object]]:
    """Every pair's similarity, its fold's threshold (learnt on the other 9 folds) and the
    verdict: what an error browser or a disagreement count needs without recomputing."""
    folds = np.unique(pairs.folds)
    threshold_of = {int(f): float(t) for f, t in zip(folds, fold_thresholds)}
    rows = []
    for k, (a, b, same, fold, score) in enumerate(zip(pairs.first, pairs.second, pairs.issame, pairs.folds, scores)):
        threshold = threshold_of[int(fold)]
        rows.append({"protocol": pairs.name, "condition": condition, "line": pairs.where(k), "first": str(a),
                     "second": str(b), "same": bool(same), "fold": int(fold), "similarity": round(float(score), 6),
                     "threshold": round(threshold, 6), "verdict_same": bool(score >= threshold),
                     "correct": bool((score >= threshold) == same)})
    return rows


def write_pair_results(path: Path, rows: List[Dict[str, object]], root: Optional[Path] = None) -> None:
    """Gzipped CSV (a 7,000-pair protocol at three conditions is about 0.5 MB). Image and pair-list
    paths under `root` (the data root) are written relative to it, so the file works on any machine
    that has the data (an error browser resolves them against its own data root)."""
    import csv
    import gzip
    import io

    def portable(value: str) -> str:
        path = Path(value.rsplit(":", 1)[0]) if root is not None else None
        if path is not None and path.is_absolute() and path.is_relative_to(root):
            return str(Path(value).relative_to(root))
        return value

    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=list(rows[0]) if rows else ["protocol"])
    writer.writeheader()
    writer.writerows({**row, **{key: portable(row[key]) for key in ("first", "second", "line")}} for row in rows)
    atomic_write(path, lambda out: out.write(gzip.compress(text.getvalue().encode(), mtime=0)))
