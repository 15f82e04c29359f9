"""Zoo core: every registered model builds, trains a step on real faces, and round-trips."""
import json
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file, save_file

import zoo
from zoo import checkpoint
from faces import lfw_faces

WIDTH = 0.25


@pytest.fixture(scope="module")
def faces():
    return lfw_faces(4, seed=1)


@pytest.mark.parametrize("name", zoo.model_names())
def test_every_model_trains_a_step_on_real_faces(name, faces):
    torch.manual_seed(0)
    model = zoo.build(name, width=WIDTH).train()
    raw = model(faces)
    assert raw.shape == (4, 512)
    # classify the four people through a fixed random projection: a loss that depends on the
    # input (a batch-normalised output's mean square would not)
    classes = torch.randn(512, 4, generator=torch.Generator().manual_seed(0))
    loss = torch.nn.functional.cross_entropy(raw @ classes, torch.arange(4))
    loss = loss + sum(model.auxiliary_losses().values(), torch.tensor(0.0))
    loss.backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad and p.grad is not None]
    assert grads, f"{name}: no parameter received a gradient"
    assert all(torch.isfinite(g).all() for g in grads)
    first_conv = next(m for m in model.backbone.stem.modules() if hasattr(m, "weight") and m.weight.dim() == 4)
    assert first_conv.weight.grad.abs().sum() > 0, f"{name}: the recognition loss does not reach the stem"
    emb = model.embed(faces)
    assert emb.shape == (4, 512)
    assert torch.allclose(emb.norm(dim=1), torch.ones(4), atol=1e-5)
    assert isinstance(model.explain(faces[:1]), zoo.Explanation)


@pytest.mark.parametrize("name", zoo.model_names())
def test_every_model_round_trips_bit_exactly(name, faces, tmp_path):
    torch.manual_seed(0)
    model = zoo.build(name, width=WIDTH)
    model.train()
    model(faces)  # move BatchNorm statistics off their initial values
    model.eval()
    folder = zoo.save(model, tmp_path / name)
    assert sorted(p.name for p in folder.iterdir()) == ["README.md", "config.json", "model.safetensors"]
    loaded = zoo.load(folder)
    assert loaded.config == model.config
    for key, value in model.state_dict().items():
        assert torch.equal(value, loaded.state_dict()[key]), key
    assert torch.equal(model.embed(faces), loaded.embed(faces))


def test_plain_model_explains_nothing(faces):
    explanation = zoo.build("ir18", width=WIDTH).explain(faces)
    assert explanation.maps == {} and explanation.values == {}


def test_a_plain_model_needs_no_method_hooks(faces):
    """The base class's hooks are what a method without its own training, records, analyses
    or inference form inherits: nothing extra anywhere."""
    model = zoo.build("ir18", width=WIDTH)
    assert model.inference_form() is model and model.extra_optimizers({}) == {} and model.epoch_records() == {}
    assert model.extra_losses(torch.ones(4, dtype=torch.bool), {}, {}, lambda value: value) == ({}, {})
    assert model.analyses == () and model.record_keys == {} and model.training_settings == {}


def test_wrong_architecture_is_refused_with_both_names(tmp_path):
    folder = zoo.save(zoo.build("ir18", width=WIDTH), tmp_path / "a")
    with pytest.raises(zoo.CheckpointError, match=r"'ir18'.*not 'ir34'"):
        checkpoint.load_weights(zoo.build("ir34", width=WIDTH), folder / "model.safetensors")
    config = json.loads((folder / "config.json").read_text())
    config["architecture"]["backbone"] = "ir34"
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(zoo.CheckpointError, match="ir34"):
        zoo.load(folder)


def test_same_name_other_width_is_refused_with_shapes(tmp_path):
    folder = zoo.save(zoo.build("ir18", width=WIDTH), tmp_path / "a")
    with pytest.raises(zoo.CheckpointError, match="wrong shape"):
        checkpoint.load_weights(zoo.build("ir18", width=0.5), folder / "model.safetensors")


def test_truncated_weights_are_reported(tmp_path):
    folder = zoo.save(zoo.build("ir18", width=WIDTH), tmp_path / "a")
    weights = folder / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    with pytest.raises(zoo.CheckpointError, match=r"ir18: .*corrupted or truncated"):
        zoo.load(folder)


def test_missing_key_is_named(tmp_path):
    folder = zoo.save(zoo.build("ir18", width=WIDTH), tmp_path / "a")
    weights = folder / "model.safetensors"
    state = load_file(str(weights))
    del state["backbone.head.fc.weight"]
    save_file(state, str(weights), metadata={"facescope_format": "1", "architecture": "ir18"})
    with pytest.raises(zoo.CheckpointError, match=r"missing 1 key.*backbone\.head\.fc\.weight"):
        zoo.load(folder)


def test_folder_without_config_or_weights(tmp_path):
    with pytest.raises(zoo.CheckpointError, match="no config.json"):
        zoo.load_checkpoint(tmp_path)
    folder = zoo.save(zoo.build("ir18", width=WIDTH), tmp_path / "a")
    (folder / "model.safetensors").unlink()
    with pytest.raises(zoo.CheckpointError, match="missing"):
        zoo.load(folder)
    (folder / "config.json").write_text("{not json")
    with pytest.raises(zoo.CheckpointError, match="unreadable JSON"):
        zoo.load(folder)


def test_unknown_names_list_the_known_ones(tmp_path):
    with pytest.raises(KeyError, match="scan-ir18"):
        zoo.build("resnet9000")
    with pytest.raises(FileNotFoundError, match="not in the local zoo"):
        zoo.load(tmp_path / "nothing-here")
    with pytest.raises(ValueError, match="unknown option"):
        zoo.build("scan-ir18", width=WIDTH, shortcutt=False)


def test_failed_save_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    model = zoo.build("ir18", width=WIDTH)
    folder = zoo.save(model, tmp_path / "ckpt")
    before = (folder / "model.safetensors").read_bytes()

    def broken(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(checkpoint, "save_file", broken)
    with pytest.raises(OSError, match="disk full"):
        zoo.save(zoo.build("ir18", width=WIDTH), folder)
    assert (folder / "model.safetensors").read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt"]


def test_bad_image_tensors_are_refused():
    model = zoo.build("ir18", width=WIDTH)
    with pytest.raises(ValueError, match=r"\(N, 3, 112, 112\)"):
        model.embed(torch.zeros(1, 3, 64, 64))
    with pytest.raises(ValueError, match="float"):
        model.embed(torch.zeros(1, 3, 112, 112, dtype=torch.uint8))


def test_zoo_list_cli_prints_every_model():
    out = subprocess.run([sys.executable, "-m", "zoo", "list", "--width", "0.25"],
                         capture_output=True, text=True, check=True).stdout.splitlines()
    rows = [line.split("\t") for line in out]
    assert [r[0] for r in rows] == zoo.model_names()
    for name, method, backbone, params in rows:
        assert zoo.parse_name(name) == (method, backbone)
        assert int(params) == zoo.build(name, width=0.25).parameter_count()


def test_zoo_local_cli_tabulates_the_local_zoo(tmp_path):
    zoo.save(zoo.build("scan-ir18", width=WIDTH).fold(), tmp_path / "my-scan")
    out = subprocess.run([sys.executable, "-m", "zoo", "local"], capture_output=True, text=True, check=True,
                         env={**__import__("os").environ, "FACESCOPE_ZOO": str(tmp_path)}).stdout.splitlines()
    assert out[0].startswith("| model | architecture | params | MB | lfw-view1 blur0")
    row = out[2].split(" | ")
    assert row[0] == "| my-scan" and row[1] == "scan-folded-ir18"
    assert row[2] == f"{zoo.build('ir18', width=WIDTH).parameter_count():,}"
    assert out[2].endswith("| - |")  # saved without an evaluation: no accuracy to show
