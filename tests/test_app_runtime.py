"""`python app.py --runtime onnx`: the app verifies a real pair with onnxruntime computing the
embeddings (each model exported once into the cache folder), to torch's similarities, and says
which runtime served each model; the occlusion lab embeds its copies there too, to torch's
drops; Grad-CAM and the methods' maps keep running in torch."""
from __future__ import annotations

import shutil

import numpy as np
import pytest
from gradio_client import Client, handle_file

from app.service import Service
from app_server import EMBEDDED_ZOO, OTHER, SAME_A, SAME_B, running_app, verify

# The two zoo networks that export differently: a plain MobileFaceNet and SCAN (exported folded).
MODELS = ["mobilefacenet.fss-ft", "scan-mobilefacenet.fss-ft"]
SIMILARITY_TOLERANCE = 1e-4  # onnxruntime's embeddings are at cosine >= 0.9999 to torch's (test_export.py)


@pytest.fixture(scope="module")
def zoo_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("zoo")
    for name in MODELS:
        shutil.copytree(EMBEDDED_ZOO / name, folder / name)
    return folder


def test_the_app_verifies_with_onnxruntime_to_torchs_similarities(zoo_dir, tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    monkeypatch.setenv("FACESCOPE_CACHE", str(cache))
    torch_service = Service(zoo_dir=zoo_dir, peers=False)  # the same app code, default runtime: torch
    expected = {pair: {v.model: v for v in torch_service.verify(*pair).verdicts}
                for pair in ((SAME_A, SAME_B), (SAME_A, OTHER))}
    with running_app(zoo_dir, tmp_path, {"FACESCOPE_CACHE": str(cache)}, ["--runtime", "onnx", "--no-peers"]) as url:
        client = Client(url, verbose=False, download_files=str(tmp_path / "downloads"))
        for pair, torch_verdicts in expected.items():
            served = verify(client, *pair, MODELS)[0]["models"]
            assert [entry["model"] for entry in served] == MODELS
            for entry in served:
                reference = torch_verdicts[entry["model"]]
                assert reference.runtime == "torch (cpu)" and entry["runtime"].startswith("onnxruntime (")
                assert entry["similarity"] == pytest.approx(reference.similarity, abs=SIMILARITY_TOLERANCE)
                assert entry["same"] == reference.same
        assert all(verdict.same for verdict in expected[(SAME_A, SAME_B)].values())
        assert not any(verdict.same for verdict in expected[(SAME_A, OTHER)].values())
        occluded = client.predict(handle_file(SAME_A), handle_file(SAME_B), 1, 1, MODELS[1], 16, 8,
                                  api_name="/occlusion")[0]
        _, reference = torch_service.occlusion(SAME_A, SAME_B, MODELS[1], 16, 8)
        assert np.abs(np.array(occluded["drops"]) - reference.drops).max() < 2 * SIMILARITY_TOLERANCE
        assert reference.drops.max() > 0.05  # a map worth comparing
        explained = client.predict(handle_file(SAME_A), handle_file(SAME_B), 1, 1, MODELS, MODELS[1],
                                   api_name="/explain")[0]["models"]
        for name in MODELS:  # Grad-CAM needs gradients: still torch's
            assert sum("Grad-CAM of cos to" in caption for caption in explained[name]["panels"]) == 2
    log = (tmp_path / "app.log").read_text()
    assert all(f"{name}: embeddings by onnxruntime" in log for name in MODELS)
    assert len(list((cache / "onnx").glob("*.onnx"))) == 2  # one export per network, in the cache folder


def test_auto_serves_at_once_and_moves_each_model_to_onnxruntime_in_the_background(zoo_dir, tmp_path, monkeypatch):
    """The app's default runtime: requests are served by torch while each model is exported, then
    by onnxruntime to torch's similarities; peers are offered but not selected by default."""
    monkeypatch.setenv("FACESCOPE_CACHE", str(tmp_path / "cache"))  # nothing exported yet
    service = Service(zoo_dir=zoo_dir)
    assert service.model_names() == MODELS + ["peer:dlib", "peer:sface"] and service.default_model_names() == MODELS
    before = {v.model: v for v in service.verify(SAME_A, SAME_B, MODELS).verdicts}
    service.models.use_runtime("auto", background=True)
    assert not service.models.runtime_ready.is_set()  # the first export takes seconds
    meanwhile = service.verify(SAME_A, SAME_B, MODELS).verdicts  # served by whichever is attached
    assert all(v.similarity == pytest.approx(before[v.model].similarity, abs=SIMILARITY_TOLERANCE) for v in meanwhile)
    assert service.models.runtime_ready.wait(timeout=600)
    after = service.verify(SAME_A, SAME_B, MODELS + ["peer:sface"]).verdicts
    for verdict in after[:len(MODELS)]:
        assert before[verdict.model].runtime == "torch (cpu)" and verdict.runtime.startswith("onnxruntime (")
        assert verdict.similarity == pytest.approx(before[verdict.model].similarity, abs=SIMILARITY_TOLERANCE)
    assert after[-1].runtime == "its own engine (a pretrained peer)"
