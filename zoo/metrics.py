"""Verification metrics in numpy: ROC, AUC, 10-fold accuracy, TAR at FAR.

Conventions (stated once, used everywhere):
- a pair is accepted as "same" when its score is >= the threshold (scores: cosine similarity);
- 10-fold accuracy is LFW's: for each fold the threshold maximising accuracy on the other
  nine folds is applied to it; mean and population std (ddof=0, as the LFW/InsightFace code)
  over folds. Candidate thresholds are midpoints between consecutive distinct scores plus one
  below and one above all scores; among equally good candidates the lowest is taken;
- TAR at FAR f: accept pairs scoring above the (k+1)-th highest negative score, k =
  floor(f * negatives), so at most k negatives are accepted. Only f >= 1/negatives is
  reported: below that the protocol has too few negative pairs to measure the rate;
- AUC: trapezoid rule over the exact ROC (every distinct score is a threshold).
"""
from __future__ import annotations

import math
from typing import Dict, Iterable, List, Sequence, Tuple

import numpy as np

DEFAULT_FARS = (1e-1, 1e-2, 1e-3, 1e-4, 1e-5, 1e-6)
ROC_POINTS = 400


def _check(scores, issame) -> Tuple[np.ndarray, np.ndarray]:
    scores = np.asarray(scores, dtype=np.float64).ravel()
    issame = np.asarray(issame, dtype=bool).ravel()
    if scores.shape != issame.shape:
        raise ValueError(f"{scores.size} scores but {issame.size} labels")
    if not issame.any() or issame.all():
        raise ValueError("verification metrics need both same and different pairs")
    if not np.isfinite(scores).all():
        raise ValueError("scores contain NaN or infinity (did a model return a zero embedding?)")
    return scores, issame


def cosine_scores(first: np.ndarray, second: np.ndarray) -> np.ndarray:
    """Row-wise cosine similarity (re-normalises, so unnormalised embeddings work too)."""
    first = np.asarray(first, dtype=np.float64)
    second = np.asarray(second, dtype=np.float64)
    norms = np.linalg.norm(first, axis=1) * np.linalg.norm(second, axis=1)
    return (first * second).sum(1) / np.maximum(norms, 1e-12)


def roc_curve(scores, issame) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(far, tar, thresholds), thresholds descending from +inf (nothing accepted) to the
    lowest score (everything accepted); point k accepts pairs with score >= thresholds[k]."""
    scores, issame = _check(scores, issame)
    order = np.argsort(-scores, kind="stable")
    sorted_scores, sorted_same = scores[order], issame[order]
    last_of_run = np.r_[np.flatnonzero(np.diff(sorted_scores)), sorted_scores.size - 1]
    true_accepts = np.cumsum(sorted_same)[last_of_run]
    false_accepts = (last_of_run + 1) - true_accepts
    tar = np.r_[0.0, true_accepts / issame.sum()]
    far = np.r_[0.0, false_accepts / (~issame).sum()]
    return far, tar, np.r_[np.inf, sorted_scores[last_of_run]]


def auc(far: np.ndarray, tar: np.ndarray) -> float:
    """Area under the ROC by the trapezoid rule (far ascending)."""
    return float(np.trapezoid(tar, far))


def accuracy(scores, issame, threshold: float) -> float:
    scores = np.asarray(scores, dtype=np.float64)
    return float(np.mean((scores >= threshold) == np.asarray(issame, dtype=bool)))


def best_threshold(scores, issame) -> Tuple[float, float]:
    """(threshold, accuracy) maximising accuracy on these pairs (see module notes)."""
    scores = np.asarray(scores, dtype=np.float64).ravel()
    issame = np.asarray(issame, dtype=bool).ravel()
    distinct = np.unique(scores)
    candidates = np.r_[distinct[0] - 1.0, (distinct[:-1] + distinct[1:]) / 2, distinct[-1] + 1.0]
    # For each candidate: same pairs at or above it are right, different pairs below it are right.
    same_below = np.searchsorted(np.sort(scores[issame]), candidates, side="left")
    diff_below = np.searchsorted(np.sort(scores[~issame]), candidates, side="left")
    correct = (issame.sum() - same_below) + diff_below
    best = int(np.argmax(correct))
    return float(candidates[best]), float(correct[best] / scores.size)


def kfold_accuracy(scores, issame, folds) -> Dict[str, object]:
    """LFW-protocol accuracy: threshold from the other folds, accuracy on each fold."""
    scores, issame = _check(scores, issame)
    folds = np.asarray(folds).ravel()
    fold_ids = np.unique(folds)
    if fold_ids.size < 2:
        raise ValueError("k-fold accuracy needs at least 2 folds")
    accuracies, thresholds = [], []
    for fold in fold_ids:
        test = folds == fold
        threshold, _ = best_threshold(scores[~test], issame[~test])
        thresholds.append(threshold)
        accuracies.append(accuracy(scores[test], issame[test], threshold))
    return {"accuracy": float(np.mean(accuracies)), "accuracy_std": float(np.std(accuracies)),
            "fold_accuracies": accuracies, "fold_thresholds": thresholds}


def supported_fars(num_negatives: int, fars: Iterable[float] = DEFAULT_FARS) -> Tuple[List[float], List[float]]:
    """(reportable, omitted) FAR levels: reportable means >= 1/num_negatives."""
    fars = sorted(set(float(f) for f in fars), reverse=True)
    floor = 1.0 / num_negatives
    return [f for f in fars if f >= floor * (1 - 1e-9)], [f for f in fars if f < floor * (1 - 1e-9)]


def tar_at_far(scores, issame, fars: Iterable[float] = DEFAULT_FARS) -> Dict[str, Dict[str, float]]:
    """{"0.001": {"far", "tar", "threshold", "achieved_far"}} for each reportable FAR
    (threshold None where the FAR allows accepting every pair)."""
    scores, issame = _check(scores, issame)
    negatives = np.sort(scores[~issame])[::-1]
    positives = scores[issame]
    reportable, _ = supported_fars(negatives.size, fars)
    out = {}
    for far in reportable:
        allowed = math.floor(far * negatives.size + 1e-9)
        if allowed >= negatives.size:  # every negative may be accepted: accept everything
            out[far_key(far)] = {"far": far, "tar": 1.0, "threshold": None, "achieved_far": 1.0}
            continue
        threshold = negatives[allowed]
        out[far_key(far)] = {"far": far, "tar": float(np.mean(positives > threshold)),
                             "threshold": float(threshold),
                             "achieved_far": float(np.mean(negatives > threshold))}
    return out


def far_key(far: float) -> str:
    return f"{far:g}"


def downsample_roc(far: np.ndarray, tar: np.ndarray, max_points: int = ROC_POINTS) -> Dict[str, List[float]]:
    """At most `max_points` exact ROC points (nearest to a log-spaced FAR grid, plus the ends),
    small enough for JSON yet every point a real operating point."""
    if far.size <= max_points:
        keep = np.arange(far.size)
    else:
        positive = far[far > 0]
        grid = np.geomspace(positive.min(), 1.0, max_points - 2)
        keep = np.unique(np.r_[0, np.searchsorted(far, grid, side="right") - 1, far.size - 1])
    return {"far": [round(float(v), 8) for v in far[keep]], "tar": [round(float(v), 8) for v in tar[keep]]}


def verification_metrics(scores, issame, folds, fars: Sequence[float] = DEFAULT_FARS) -> Dict[str, object]:
    """Everything one protocol x condition reports, as JSON-ready data."""
    scores, issame = _check(scores, issame)
    far, tar, _ = roc_curve(scores, issame)
    reportable, omitted = supported_fars(int((~issame).sum()), fars)
    return {
        "pairs": int(scores.size), "positives": int(issame.sum()), "negatives": int((~issame).sum()),
        **kfold_accuracy(scores, issame, folds),
        "tar_at_far": tar_at_far(scores, issame, reportable),
        "far_levels_omitted": [far_key(f) for f in omitted],
        "auc": auc(far, tar),
        "roc": downsample_roc(far, tar),
    }
