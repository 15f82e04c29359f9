"""The parallel evaluation pipeline (zoo/pipeline.py) gives the results of the plain path it
replaced: every image aligned here, each condition embedded by the model in batches of 64, a
cosine per pair, the metrics. Real CFP pairs, a cold crop cache, two worker processes, with the
default runtime (onnxruntime on the CPU) and with torch: the same accuracies and thresholds, every
pair's similarity within 1e-5."""
from __future__ import annotations

import csv
import gzip
import json

import numpy as np
import pytest
import torch

import zoo
from zoo import metrics
from zoo.data import CropCache, load_protocol, parse_degradation
from zoo.evaluate import main
from zoo.pipeline import MIN_PARALLEL

MODEL, CONDITIONS, MAX_PAIRS = "mobilefacenet.fss-ft", ("blur0", "blur3"), 100


def old_path(model, pairs, conditions, cache):
    """The evaluation as it was: align in this process, then per condition embed every crop in
    batches of 64 with the model's own preprocess, cosine per pair, metrics."""
    crops = {path: cache.get(path).image for path in pairs.images()}
    results = {}
    for condition in conditions:
        vectors = {}
        paths = list(crops)
        for start in range(0, len(paths), 64):
            batch = condition.apply_batch(np.stack([crops[p] for p in paths[start:start + 64]]))
            with torch.no_grad():
                vectors.update(zip(paths[start:start + 64], model.embed(model.preprocess(batch)).numpy()))
        scores = np.array([vectors[a] @ vectors[b] for a, b in zip(pairs.first, pairs.second)])
        results[condition.name] = (scores, metrics.verification_metrics(scores, pairs.issame, pairs.folds))
    return crops, results


@pytest.mark.parametrize("runtime", ["auto", "torch"])
def test_parallel_pipeline_gives_the_old_paths_results(runtime, tmp_path, data_root):
    out = tmp_path / "results.json"
    code = main(["--model", MODEL, "--protocol", "cfp-ff,cfp-fp", "--blur", "0,3", "--max-pairs", str(MAX_PAIRS),
                 "--workers", "2", "--runtime", runtime, "--cache-dir", str(tmp_path / "cold"), "--pairs",
                 "--out", str(out), "--quiet"])
    assert code == 0
    results = json.loads(out.read_text())
    assert results["settings"]["runtime"] == {"auto": "onnx", "torch": "torch"}[runtime]
    with gzip.open(out.with_suffix(".pairs.csv.gz"), "rt", newline="") as handle:
        rows = list(csv.DictReader(handle))
    model = zoo.load(MODEL).eval()
    conditions = [parse_degradation(c) for c in CONDITIONS]
    reference_cache = CropCache(tmp_path / "reference", "yunet")
    frontal = set()
    for name in ("cfp-ff", "cfp-fp"):
        pairs = load_protocol(name, data_root).subset(MAX_PAIRS)
        assert len(pairs.images()) >= MIN_PARALLEL  # so the workers, not this process, aligned and embedded
        crops, reference = old_path(model, pairs, conditions, reference_cache)
        worker_cache = CropCache(tmp_path / "cold", "yunet")
        assert all(np.array_equal(worker_cache.load(p).image, crop) for p, crop in crops.items())
        entry = results["protocols"][name]
        for condition, (scores, values) in reference.items():
            ours = entry["conditions"][condition]
            assert ours["accuracy"] == values["accuracy"] and ours["fold_thresholds"] == pytest.approx(
                values["fold_thresholds"], abs=1e-5)
            assert ours["auc"] == pytest.approx(values["auc"], abs=1e-9)
            similarities = [float(r["similarity"]) for r in rows if r["protocol"] == name and r["condition"] == condition]
            assert np.abs(np.array(similarities) - scores).max() < 1e-5  # the CSV rounds to 6 decimals
        # CFP-FP's frontal faces that CFP-FF already embedded are not embedded again
        assert entry["conditions"]["blur0"]["embedded_images"] == len(set(pairs.images()) - frontal)
        frontal = set(pairs.images())
    assert 0 < results["protocols"]["cfp-fp"]["conditions"]["blur0"]["embedded_images"] < len(frontal)
