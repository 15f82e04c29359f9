"""ONNX export: every embedded zoo model runs in onnxruntime with torch's embeddings, on real
faces, and the file says how to feed it."""
from __future__ import annotations

import subprocess
import sys

import numpy as np
import onnx
import onnxruntime
import pytest

import zoo
from zoo.export import export_onnx
from faces import lfw_faces


def _one_per_inference_network():
    """One zoo model per network it exports as (plain, folded SCAN, SRANet, HPDA, ARFace)."""
    chosen = {}
    for name in zoo.local_models():
        chosen.setdefault(zoo.read_config(zoo.LOCAL_ZOO / name)["architecture"]["name"].replace("scan-", "scan-folded-")
                          .replace("scan-folded-folded-", "scan-folded-"), name)
    return sorted(chosen.values())


@pytest.mark.parametrize("name", _one_per_inference_network())
def test_every_zoo_model_exports_and_onnxruntime_agrees(name, tmp_path):
    model = zoo.load(name).eval()
    path = export_onnx(model, tmp_path / f"{name}.onnx", source=name)
    faces = lfw_faces(6, seed=3)
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    ours = session.run(None, {"faces": faces.numpy()})[0]
    reference = model.embed(faces).numpy()
    cosine = np.sum(ours * reference, axis=1)
    assert ours.shape == reference.shape == (6, model.config.embedding_dim)
    assert cosine.min() >= 0.9999, cosine
    metadata = {p.key: p.value for p in onnx.load(str(path)).metadata_props}
    assert metadata["input_mean"] == "127.5" and metadata["input_std"] == "128" and metadata["channel_order"] == "RGB"
    assert metadata["embedding_dim"] == str(model.config.embedding_dim) and metadata["source"] == name
    assert metadata["architecture"] == model.inference_form().name  # SCAN exports as its folded, plain network
    single = session.run(None, {"faces": faces[:1].numpy()})[0]  # any batch size
    assert np.allclose(single, ours[:1], atol=1e-5)


def test_export_cli_and_what_cannot_export(tmp_path):
    out = tmp_path / "y1.onnx"
    done = subprocess.run([sys.executable, "-m", "zoo", "export", "mobilefacenet.y1", "--out", str(out)],
                          capture_output=True, text=True)
    assert done.returncode == 0 and out.stat().st_size > 1_000_000 and "128-d L2-normalised" in done.stdout
    refused = subprocess.run([sys.executable, "-m", "zoo", "export", "peer:sface", "--out", str(tmp_path / "p.onnx")],
                             capture_output=True, text=True)
    assert refused.returncode == 2 and "not a torch zoo model" in refused.stderr
    assert not (tmp_path / "p.onnx").exists() and not list(tmp_path.glob(".*"))  # nothing half-written
