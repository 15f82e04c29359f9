"""Hub pull and publish through huggingface_hub's real code paths, against a local Hub stand-in.

Nothing here needs the internet: HF_ENDPOINT points at `hub_server.LocalHub` on 127.0.0.1
and the hub cache lives in a temp folder, so create_repo, upload_folder, snapshot_download
and hf_hub_download all run for real, and HF_HUB_OFFLINE=1 is tested in a fresh process.
"""
import csv
import gzip
import json
import os
import socket
import subprocess
import sys
from pathlib import Path
from statistics import mean

import numpy as np
import pytest
import torch
from huggingface_hub import HfApi, ModelCard, constants
from PIL import Image
from safetensors.torch import load_file

import zoo
from faces import lfw_faces, lfw_paths
from hub_server import LocalHub
from train import publish as publish_cli
from zoo import card, hub
from zoo import evaluate
from zoo.hub import HubError

ROOT = Path(__file__).resolve().parents[1]
WIDTH = 0.25
REPO = "facescope/ir18"
HUB_REPO = f"hf-hub:{REPO}"  # how zoo.load names a Hub repo


@pytest.fixture(scope="module")
def server():
    with LocalHub() as local_hub:
        yield local_hub


@pytest.fixture(scope="module")
def faces():
    return lfw_faces(4, seed=1)


@pytest.fixture
def hub_cache(server, tmp_path, monkeypatch):
    """HF_ENDPOINT at the local hub and an empty hub cache, as a user would set them."""
    monkeypatch.setenv("HF_ENDPOINT", server.url)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hf-cache"))
    return tmp_path / "hf-cache"


def trained_ir18(seed, faces):
    """An ir18 whose BatchNorm statistics moved off their initial values, so every tensor matters."""
    torch.manual_seed(seed)
    model = zoo.build("ir18", width=WIDTH).train()
    model(faces)
    return model.eval()


@pytest.fixture(scope="module")
def published(server, faces, tmp_path_factory):
    """REPO with two commits on main (v1 then v2) and v1 again on branch `first`."""
    root = tmp_path_factory.mktemp("published")
    models = {}
    for version, seed in (("v1", 0), ("v2", 1)):
        model = trained_ir18(seed, faces)
        folder = zoo.save(model, root / version)
        models[version] = (model, folder, hub.publish(folder, REPO, endpoint=server.url).oid)
    hub.publish(models["v1"][1], REPO, revision="first", endpoint=server.url)
    return models


def assert_same_weights(expected, actual):
    assert actual.config == expected.config
    state = actual.state_dict()
    assert state.keys() == expected.state_dict().keys()
    for key, value in expected.state_dict().items():
        assert torch.equal(value, state[key]), key


def upload_raw(server, repo_id, folder):
    """Upload a folder without FaceScope's checks, as any other tool could."""
    api = HfApi(endpoint=server.url)
    api.create_repo(repo_id)
    api.upload_folder(repo_id=repo_id, folder_path=folder)


def test_pull_round_trips_bit_exactly(published, faces, hub_cache, server):
    model, _, oid = published["v2"]
    loaded = zoo.load(HUB_REPO)
    assert_same_weights(model, loaded)
    assert torch.equal(model.embed(faces), loaded.embed(faces))
    folder = hub.pull(REPO)
    assert folder == hub_cache / "models--facescope--ir18" / "snapshots" / oid
    assert sorted(p.name for p in folder.iterdir()) == sorted(hub.REQUIRED_FILES)  # no pairs.csv.gz published
    assert f"POST /api/models/{REPO}/commit/main" in server.requests


def test_revision_pins_older_weights(published, hub_cache):
    older, _, oid = published["v1"]
    assert_same_weights(older, zoo.load(HUB_REPO, revision=oid))
    assert_same_weights(older, zoo.load(HUB_REPO, revision="first"))
    assert oid != published["v2"][2]


def test_second_pull_works_offline_from_the_cache(published, hub_cache, server, tmp_path):
    hub.pull(REPO)
    requests_before = len(server.requests)
    script = ("import sys, zoo\n"
              "from safetensors.torch import save_file\n"
              "save_file({k: v.contiguous() for k, v in zoo.load(sys.argv[1]).state_dict().items()}, sys.argv[2])\n"
              "try:\n    zoo.load('hf-hub:facescope/never-pulled')\n"
              "except zoo.CheckpointError as err:\n    print(err)\n")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(hub_cache), "HF_ENDPOINT": server.url,
           "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, "-c", script, HUB_REPO, str(tmp_path / "state.safetensors")], env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    state = load_file(str(tmp_path / "state.safetensors"))
    for key, value in published["v2"][0].state_dict().items():
        assert torch.equal(value, state[key]), key
    assert "HF_HUB_OFFLINE is set and facescope/never-pulled@main is not in the hub cache" in done.stdout
    assert len(server.requests) == requests_before


def test_missing_repo_and_revision_say_so(published, hub_cache, server):
    with pytest.raises(HubError, match=f"no model repository facescope/absent on {server.url}"):
        zoo.load("hf-hub:facescope/absent")
    with pytest.raises(HubError, match=f"{REPO} on {server.url} has no revision 'no-such-branch'"):
        zoo.load(HUB_REPO, revision="no-such-branch")
    with pytest.raises(FileNotFoundError, match="no model 'no-such-model': not in the local zoo"):
        zoo.load("no-such-model")
    with pytest.raises(FileNotFoundError, match=f"for the Hugging Face Hub repo write hf-hub:{REPO}"):
        zoo.load(REPO)  # a repo id is never guessed from a bare name
    with pytest.raises(ValueError, match="only applies to a Hub repo"):
        zoo.load("mobilefacenet.y1", revision="main")


def test_repo_without_safetensors_weights_is_refused(server, hub_cache, faces, tmp_path):
    folder = zoo.save(zoo.build("ir18", width=WIDTH), tmp_path / "pickled")
    (folder / "model.safetensors").rename(folder / "pytorch_model.bin")
    upload_raw(server, "facescope/pickled", folder)
    with pytest.raises(HubError, match=r"facescope/pickled@main .* has no model\.safetensors \(the repo holds: "
                                       r"\.gitattributes, README\.md, config\.json, pytorch_model\.bin\): "
                                       "FaceScope loads safetensors weights only"):
        zoo.load("hf-hub:facescope/pickled")
    assert not list(hub_cache.rglob("*.bin"))


def test_wrong_architecture_names_the_repo_and_both_architectures(server, hub_cache, tmp_path):
    folder = zoo.save(zoo.build("ir18", width=WIDTH), tmp_path / "mismatched")
    config = json.loads((folder / "config.json").read_text())
    config["architecture"] = zoo.build("ir34", width=WIDTH).config.to_dict()
    (folder / "config.json").write_text(json.dumps(config))
    upload_raw(server, "facescope/mismatched", folder)
    with pytest.raises(zoo.CheckpointError, match=r"facescope/mismatched@main \(commit [0-9a-f]{40}\): .* holds "
                                                  "weights of architecture 'ir18', not 'ir34'"):
        zoo.load("hf-hub:facescope/mismatched")


def test_no_network_and_nothing_cached(hub_cache, monkeypatch):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed = f"http://127.0.0.1:{probe.getsockname()[1]}"
    monkeypatch.setenv("HF_ENDPOINT", closed)
    with pytest.raises(HubError, match=f"cannot reach the Hugging Face Hub at {closed} .* and {REPO}@main is not "
                                       "in the hub cache .*; the local zoo .* has: "):
        zoo.load(HUB_REPO)


def packed_faces(path: Path) -> Path:
    """A tiny training set in train.engine's PackedFaces layout, from real LFW faces."""
    images = np.stack([np.asarray(Image.open(p).convert("RGB").resize((112, 112), Image.BILINEAR))
                       for p in lfw_paths(4, seed=5)])
    np.savez(path, images=images, labels=np.array([0, 1, 0, 1]))
    return path


def test_publish_cli_end_to_end(server, hub_cache, published, faces, tmp_path, monkeypatch, capsys, crop_cache):
    from train import run

    monkeypatch.setattr(zoo, "LOCAL_ZOO", tmp_path / "zoo")
    run_dir = tmp_path / "run"
    assert run.main(["scan", "--data", str(packed_faces(tmp_path / "lfw-sample.npz")), "--out", str(run_dir),
                     "--device", "cpu", "--no-progress", "--set", "model.name=scan-ir18",
                     "--set", f"model.width={WIDTH}", "--set", "optim.batch_size=2", "--set", "run.max_steps=2"]) == 0
    assert publish_cli.main([str(run_dir), "--local", "scan-ir18"]) == 0
    assert evaluate.main(["--model", "scan-ir18", "--protocol", "lfw-view1", "--blur", "0,2", "--max-pairs", "20",
                          "--cache-dir", str(crop_cache.root), "--quiet", "--out", str(run_dir / "eval.json"),
                          "--pairs"]) == 0
    assert publish_cli.main([str(run_dir), "--repo-id", "lab/scan-ir18"]) == 0
    assert "POST /api/models/lab/scan-ir18/preupload/main" in server.requests

    folded, training = publish_cli.read_run(run_dir)
    pulled = zoo.load("hf-hub:lab/scan-ir18")
    assert pulled.config.method == "scan-folded" and training["folded_from"] == "scan-ir18"
    assert_same_weights(folded, pulled)
    assert torch.equal(folded.embed(faces), pulled.embed(faces))

    folder = hub.pull("lab/scan-ir18")
    config = zoo.read_config(folder)
    clean = json.loads((run_dir / "eval.json").read_text())["protocols"]["lfw-view1"]["conditions"]["blur0"]
    assert config["threshold"] == pytest.approx(mean(clean["fold_thresholds"]))
    assert config["training"]["data"]["images"] == 4 and config["training"]["steps"] == 2
    model_card = ModelCard.load(folder / "README.md")
    assert model_card.data.library_name == "facescope" and "scan-folded" in model_card.data.tags
    assert model_card.data.base_model is None  # trained from scratch
    with gzip.open(folder / "pairs.csv.gz", "rt") as text:  # the evaluation's pairs travel with the checkpoint
        rows = list(csv.DictReader(text))
    assert len(rows) == 2 * clean["pairs"] and {r["condition"] for r in rows} == {"blur0", "blur2"}
    for text in ("Published folded: the trained `scan-ir18`", "4 aligned faces of 2 identities (`lfw-sample.npz`)",
                 "Not the FaceScope-small split", "| recipe | `scan` (train/configs) |", "| steps | 2 of 2 |",
                 "| lfw-view1 | clean | 20 |", "Gaussian blur σ=2 px", "Only 20 pairs per protocol",
                 "Verification threshold", "## Intended use", "Not for identification or verification decisions",
                 "Demographic bias is untested", "non-commercial research only"):
        assert text in model_card.text, text
    small = dict(training, data={**training["data"], "path": "cache/packed/facescope-small-train.npz"})
    small_card = card.render(folded, small, None, name="lab/scan-ir18")
    assert "The FaceScope-small training split" in small_card and "- celeba" in small_card

    capsys.readouterr()
    plain = str(published["v1"][1])
    assert publish_cli.main([plain, "--repo-id", "lab/scan-ir18"]) == 2
    assert (f"lab/scan-ir18@main on {server.url} holds scan-folded-ir18 (width 0.25, default head), this checkpoint "
            "is ir18 (width 0.25, default head): refusing to overwrite a different architecture") in capsys.readouterr().err
    assert publish_cli.main([plain, "--local", "scan-ir18"]) == 2
    assert "refusing to overwrite a different architecture" in capsys.readouterr().err
    assert publish_cli.main([plain, "--repo-id", "lab/scan-ir18", "--force"]) == 0
    assert_same_weights(published["v1"][0], zoo.load("hf-hub:lab/scan-ir18"))


@pytest.mark.fast
def test_a_fine_tuned_card_names_its_base_model():
    """`base_model` links a fine-tuned model to its start on the Hub: a recorded repo id as is, a
    local zoo name under the organisation the model is published to."""
    def init(source):
        return {"init": {"from": source}}

    assert card.base_model(init("mobilefacenet.y1"), "lab") == "lab/mobilefacenet.y1"
    assert card.base_model(init("hf-hub:org/base"), "lab") == card.base_model(init("org/base"), "lab") == "org/base"
    assert card.base_model({"init": None}, "lab") is None and card.base_model(None, "lab") is None
    model = zoo.build("ir18", width=WIDTH)
    front = ModelCard(card.render(model, base_model="lab/mobilefacenet.y1")).data
    assert front.base_model == "lab/mobilefacenet.y1"


@pytest.mark.fast
def test_cards_carry_a_model_index_the_hub_renders():
    """Every embedded zoo card (the README.md as committed, and as rendered anew) parses with
    huggingface_hub.ModelCard and lists each accuracy of its evaluation (protocol x condition), so
    a published model shows its results on the Hub; a fine-tuned one names its base model."""
    for name in zoo.local_models():
        config = zoo.read_config(zoo.LOCAL_ZOO / name)
        training = config.get("training")
        rendered = card.render(zoo.load(name), training, config.get("metrics"), name=name,
                               imported=config.get("imported_from"), base_model=card.base_model(training, hub.ZOO_ORG))
        expected = {(p, c): round(100 * v["accuracy"], 2) for p, e in config["metrics"]["protocols"].items()
                    for c, v in e["conditions"].items()}
        for data in (ModelCard.load(zoo.LOCAL_ZOO / name / "README.md").data, ModelCard(rendered).data):
            assert {(r.dataset_config, r.metric_config): r.metric_value for r in data.eval_results} == expected, name
            assert data.license_name == "research-only" and data.library_name == "facescope"
            fine_tuned = bool((training or {}).get("init"))
            assert data.base_model == (f"{hub.ZOO_ORG}/mobilefacenet.y1" if fine_tuned else None), name
