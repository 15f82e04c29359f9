"""The evaluation CLI end to end on a registered zoo model, and its error handling."""
import json

import numpy as np
import pytest
import torch

import zoo
from zoo.backbones import to_input
from zoo.evaluate import ModelNotFoundError, embed_images, main, resolve_model


@pytest.fixture(scope="module")
def tiny_model():
    torch.manual_seed(0)
    return zoo.build("ir18", width=0.25).eval()


def _run(capsys, *args):
    code = main(list(args) + ["--quiet"])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_cli_end_to_end_on_a_registered_model(tmp_path, capsys, crop_cache):
    out, table = tmp_path / "results.json", tmp_path / "results.csv"
    code, stdout, stderr = _run(capsys, "--model", "ir18", "--build-option", "width=0.25",
                                "--protocol", "lfw-view1,cfp-ff", "--blur", "0,2", "--lowres", "28",
                                "--max-pairs", "20", "--cache-dir", str(crop_cache.root),
                                "--out", str(out), "--csv", str(table), "--figures", str(tmp_path / "figures"))
    assert code == 0, stderr
    results = json.loads(out.read_text())
    assert results["model"]["resolved_by"] == "zoo.build (untrained)"
    assert results["settings"]["runtime"] == "torch"  # auto: new random weights each run, an export is never reused
    assert results["settings"]["conditions"] == ["blur0", "blur2", "lowres28"]
    for name in ("lfw-view1", "cfp-ff"):
        entry = results["protocols"][name]
        assert entry["pairs_total"] == 20 and entry["pairs_skipped"] == 0 and entry["skipped"] == []
        assert isinstance(entry["fallback_alignments"], int)
        for condition in ("blur0", "blur2", "lowres28"):
            values = entry["conditions"][condition]
            assert values["pairs"] == 20 and len(values["fold_accuracies"]) == 10
            assert 0 <= values["accuracy"] <= 1 and values["accuracy_std"] >= 0 and 0 <= values["auc"] <= 1
            assert list(values["tar_at_far"]) == ["0.1"]  # 10 negatives: nothing lower is measurable
            assert "0.01" in values["far_levels_omitted"]
    lfw = results["protocols"]["lfw-view1"]["conditions"]
    assert lfw["blur0"]["embedded_images"] == 40  # 20 pairs, 40 distinct images, each embedded once
    assert lfw["blur0"]["fold_thresholds"] != lfw["blur2"]["fold_thresholds"]  # blur reached the model
    assert "lfw-view1  blur0" in stdout and "accuracy" in stdout.splitlines()[0]
    assert len(table.read_text().splitlines()) == 7
    assert "lfw-view1 blur0 (AUC" in (tmp_path / "figures" / "roc.html").read_text()
    assert (tmp_path / "figures" / "accuracy_vs_blur.html").stat().st_size > 1000


def test_cli_loads_a_checkpoint_folder(tmp_path, capsys, crop_cache, tiny_model):
    folder = zoo.save(tiny_model, tmp_path / "my-model")
    out = tmp_path / "r.json"
    code, _, stderr = _run(capsys, "--model", str(folder), "--protocol", "lfw-view1", "--max-pairs", "20",
                           "--flip", "--cache-dir", str(crop_cache.root), "--out", str(out))
    assert code == 0, stderr
    results = json.loads(out.read_text())
    assert results["model"]["resolved_by"] == "zoo.load" and results["settings"]["flip_test"] is True


def test_missing_image_pairs_are_skipped_and_explained(tmp_path, capsys, crop_cache, data_root):
    images = data_root / "lfw" / "images"
    listing = tmp_path / "pairs.txt"
    lines = [f"{images}/Zico/Zico_0001.jpg {images}/Zico/Zico_0002.jpg 1",
             f"{images}/Zico/Zico_0001.jpg {images}/Abel_Pacheco/Abel_Pacheco_0001.jpg 0",
             f"{images}/Abel_Pacheco/Abel_Pacheco_0001.jpg {images}/Abel_Pacheco/Abel_Pacheco_0002.jpg 1",
             f"{images}/Zico/Zico_0002.jpg {tmp_path}/gone.jpg 0",
             f"{images}/Zico/Zico_0002.jpg {images}/Abel_Pacheco/Abel_Pacheco_0002.jpg 0"]
    listing.write_text("\n".join(lines) + "\n")
    out = tmp_path / "r.json"
    code, _, stderr = _run(capsys, "--model", "ir18", "--build-option", "width=0.25", "--protocol", str(listing),
                           "--cache-dir", str(crop_cache.root), "--out", str(out))
    assert code == 0, stderr
    entry = json.loads(out.read_text())["protocols"]["pairs"]
    assert entry["pairs_total"] == 5 and entry["pairs_skipped"] == 1
    assert entry["skipped"][0]["pair"] == f"{listing}:4"
    assert "gone.jpg" in entry["skipped"][0]["reason"] and "not found" in entry["skipped"][0]["reason"]
    assert entry["conditions"]["blur0"]["pairs"] == 4

    strict_out = tmp_path / "strict.json"
    code, _, stderr = _run(capsys, "--model", "ir18", "--build-option", "width=0.25", "--protocol", str(listing),
                           "--cache-dir", str(crop_cache.root), "--out", str(strict_out), "--strict")
    assert code == 2 and f"{listing}:4:" in stderr and "gone.jpg" in stderr
    assert not strict_out.exists()  # nothing partial is written on error


@pytest.mark.fast
def test_bad_arguments_fail_with_a_message(tmp_path, capsys):
    code, _, stderr = _run(capsys, "--model", "no-such-model", "--out", str(tmp_path / "r.json"))
    assert code == 2 and "no-such-model" in stderr and "registered models" in stderr
    bad = tmp_path / "bad_pairs.txt"
    bad.write_text("a.jpg b.jpg 1\na.jpg b.jpg perhaps\n")
    code, _, stderr = _run(capsys, "--model", "ir18", "--build-option", "width=0.25", "--protocol", str(bad))
    assert code == 2 and f"{bad}:2:" in stderr
    code, _, stderr = _run(capsys, "--model", "ir18", "--blur", "x")
    assert code == 2 and "unknown degradation" in stderr


@pytest.mark.fast
def test_model_resolution():
    model, how = resolve_model("ir18", {"width": 0.25})
    assert how == "zoo.build (untrained)" and model.name == "ir18"
    with pytest.raises(ModelNotFoundError, match="not in the local zoo.*registered models"):
        resolve_model("ir19")


def test_tensor_convention_and_flip_test(tiny_model):
    crops = np.zeros((2, 112, 112, 3), np.uint8)
    crops[:, :, :56] = 255
    tensor = to_input(crops)
    assert tensor.shape == (2, 3, 112, 112) and tensor.dtype == torch.float32
    assert tensor[0, 0, 0, 0] == pytest.approx((255 - 127.5) / 128) and tensor[0, 0, 0, 111] == pytest.approx(-127.5 / 128)
    rng = np.random.default_rng(0)
    crops = rng.integers(0, 256, (3, 112, 112, 3), dtype=np.uint8)
    plain = embed_images(tiny_model, crops, batch_size=2)
    flipped = embed_images(tiny_model, crops, batch_size=2, flip=True)
    mirror = embed_images(tiny_model, crops[:, :, ::-1], batch_size=2)
    expected = (plain + mirror) / np.linalg.norm(plain + mirror, axis=1, keepdims=True)
    assert plain.shape == (3, 512) and np.allclose(np.linalg.norm(flipped, axis=1), 1, atol=1e-5)
    assert np.allclose(flipped, expected, atol=1e-5)
