"""Runtimes (zoo/runtime.py): the ONNX export is made once per weights and kept in the cache
folder, embedders rebuild themselves in worker processes, and `--runtime onnx` evaluates real
pairs to torch's accuracies.

Stated tolerance for onnxruntime against torch: every pair's cosine similarity within 1e-4 (the
export test measures embeddings at cosine >= 0.9999 to torch's), every accuracy within one pair
(a pair whose similarity sits on its fold's threshold may land on the other side)."""
from __future__ import annotations

import copy
import csv
import gzip
import json
import pickle

import numpy as np
import pytest
import torch

import zoo
from zoo.evaluate import main
from zoo.runtime import OnnxEmbedder, TorchEmbedder, exported_onnx, make_embedder
from faces import lfw_identities

SIMILARITY_TOLERANCE = 1e-4


@pytest.fixture(scope="module")
def small_model():
    torch.manual_seed(0)
    return zoo.build("mobilefacenet", width=0.25, embedding_dim=128).eval()


def test_the_onnx_export_is_made_once_per_weights(tmp_path, small_model):
    first = exported_onnx(small_model, tmp_path)
    assert first.parent == tmp_path / "onnx" and first.name.startswith("mobilefacenet-")
    written = first.stat().st_mtime_ns
    reloaded = zoo.load(zoo.save(small_model, tmp_path / "saved"))  # same weights, another object
    assert exported_onnx(reloaded, tmp_path) == first and first.stat().st_mtime_ns == written
    with torch.no_grad():
        reloaded.backbone.head[0][0].weight.mul_(1.01)
    changed = exported_onnx(reloaded, tmp_path)
    assert changed != first and changed.is_file()
    assert sorted(p.name for p in (tmp_path / "onnx").iterdir()) == sorted([first.name, changed.name])  # no scratch


def test_embedders_agree_and_travel_to_other_processes(tmp_path, small_model):
    crops, _ = lfw_identities(4, 2)
    torch_embedder, onnx_embedder = make_embedder("torch", small_model), make_embedder("onnx", small_model, tmp_path)
    assert isinstance(onnx_embedder, OnnxEmbedder) and "onnxruntime" in onnx_embedder.served_by
    reference = torch_embedder.embed(crops)
    assert reference.shape == (8, 128) and np.allclose(np.linalg.norm(reference, axis=1), 1, atol=1e-5)
    assert np.sum(reference * onnx_embedder.embed(crops), axis=1).min() >= 0.9999
    for embedder in (torch_embedder, onnx_embedder):  # what a spawned worker unpickles
        assert np.allclose(pickle.loads(pickle.dumps(embedder)).embed(crops), embedder.embed(crops), atol=1e-6)


def test_runtime_choices_and_what_cannot_run_in_onnx(tmp_path, small_model):
    with pytest.raises(KeyError, match="onnx, torch"):
        make_embedder("tensorrt", small_model)
    with pytest.raises(ValueError, match="CPU"):
        make_embedder("onnx", small_model, tmp_path, device="cuda")
    peer = zoo.load("peer:sface")
    embedder = make_embedder("onnx", peer, tmp_path)  # not a torch network: its own engine, said so
    assert isinstance(embedder, TorchEmbedder) and "own engine" in embedder.served_by and embedder.runtime == "own"
    crops, _ = lfw_identities(1, 2)
    assert np.allclose(pickle.loads(pickle.dumps(embedder)).embed(crops), embedder.embed(crops), atol=1e-6)
    assert not (tmp_path / "onnx").exists()


def test_auto_is_onnxruntime_where_it_can_be(tmp_path, small_model, monkeypatch):
    assert isinstance(make_embedder("auto", small_model, tmp_path), OnnxEmbedder)
    assert isinstance(make_embedder("auto", small_model, tmp_path, device="cuda"), TorchEmbedder)  # CPU only

    def broken_exporter(*args, **kwargs):
        raise RuntimeError("the exporter cannot trace this forward")

    monkeypatch.setattr("zoo.export.export_onnx", broken_exporter)
    retrained = copy.deepcopy(small_model)
    with torch.no_grad():
        retrained.backbone.head[0][0].weight.mul_(1.01)  # new weights: no export on disk yet
    with pytest.warns(RuntimeWarning, match="no ONNX export.*cannot trace.*embedding with torch"):
        embedder = make_embedder("auto", retrained, tmp_path)
    assert isinstance(embedder, TorchEmbedder)
    with pytest.raises(RuntimeError, match="cannot trace"):  # asked for by name: no quiet fallback
        make_embedder("onnx", retrained, tmp_path)


def _similarities(path):
    with gzip.open(path, "rt", newline="") as handle:
        return {(r["protocol"], r["condition"], r["line"]): float(r["similarity"]) for r in csv.DictReader(handle)}


def test_evaluation_with_onnxruntime_gives_torchs_accuracies(tmp_path, capsys):
    results = {}
    for runtime in ("torch", "onnx"):
        out = tmp_path / f"{runtime}.json"
        code = main(["--model", "mobilefacenet.fss-ft", "--protocol", "lfw-view1", "--blur", "0,4", "--max-pairs", "60",
                     "--workers", "1", "--cache-dir", str(tmp_path / "cache"), "--runtime", runtime, "--pairs",
                     "--out", str(out), "--quiet"])
        assert code == 0, capsys.readouterr().err
        results[runtime] = json.loads(out.read_text()), _similarities(out.with_suffix(".pairs.csv.gz"))
    (torch_results, torch_pairs), (onnx_results, onnx_pairs) = results["torch"], results["onnx"]
    assert onnx_results["settings"]["runtime"] == "onnx" and "onnxruntime" in onnx_results["settings"]["embedded_by"]
    assert torch_results["settings"]["embedded_by"] == "torch (cpu)"
    assert len(list((tmp_path / "cache" / "onnx").glob("mobilefacenet-*.onnx"))) == 1
    assert torch_pairs.keys() == onnx_pairs.keys() and len(torch_pairs) == 120
    assert max(abs(torch_pairs[k] - onnx_pairs[k]) for k in torch_pairs) < SIMILARITY_TOLERANCE
    for condition, values in torch_results["protocols"]["lfw-view1"]["conditions"].items():
        ours = onnx_results["protocols"]["lfw-view1"]["conditions"][condition]
        assert abs(ours["accuracy"] - values["accuracy"]) <= 1 / values["pairs"] + 1e-12, condition
        assert ours["auc"] == pytest.approx(values["auc"], abs=1e-3)
