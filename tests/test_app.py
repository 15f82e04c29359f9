"""The app, driven through gradio_client against a running `python app.py`, every tab and bad inputs.

The app runs as a subprocess on 127.0.0.1 (a free port) on a temporary zoo shaped like the
embedded one: a copy of its reference `mobilefacenet.y1` (imported, 128-d; without a
threshold, as imported, so the app must fall back to its uncalibrated default), then untrained
width-0.25 MobileFaceNets with 128-d embeddings: a plain one whose card has a threshold and
metrics, and one of each method the app draws maps for. Set FACESCOPE_APP_TEST_ZOO to a
checkpoint folder (e.g. zoo/checkpoints) to test the app on those models instead. Tests
read the model list from the app and assert what holds for any model: shapes, ranges,
thresholds from each config.json, consistent numbers across endpoints; never accuracy.

Hub pulls go to `hub_server.LocalHub`; the unreachable hub is a closed port on 127.0.0.1.
"""
from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Dict, Iterator, List

import numpy as np
import pytest
import torch
from gradio_client import Client, handle_file
from gradio_client.exceptions import AppError
from PIL import Image

import zoo
from hostile import break_checkpoints, twenty_faces
from hub_server import LocalHub
from zoo import card, hub

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "app" / "examples"
SAME_A, SAME_B = EXAMPLES / "leonardo_dicaprio_1.jpg", EXAMPLES / "leonardo_dicaprio_2.jpg"
OTHER = EXAMPLES / "condoleezza_rice.jpg"
# Mean grey-level gap under which two crops are "the same photo aligned alike". With YuNet a
# copy of SAME_A lands 3.4 (grayscale) to 12.8 (transparent frame) levels from the original's
# crop; another photo of the same person lands 49 away and other people's 51-88.
SAME_ALIGNMENT_TOLERANCE = 16
HUB_REPO = "facescope/hub-copy"
REFERENCE = "mobilefacenet.y1"  # the embedded zoo's imported reference: there for good
EMBEDDED_ZOO = Path(zoo.__file__).resolve().parent / "checkpoints"
ENDPOINTS = ("/detect_faces", "/verify", "/blur_curve", "/explain", "/occlusion", "/embeddings", "/zoo_list",
             "/model_card", "/pull_model")
START_TIMEOUT = 600  # seconds: importing torch and gradio on a CPU busy with training is slow


# ---- helpers shared with test_app_browser.py ----------------------------------------------------

def _metrics(threshold: float) -> Dict:
    """A card.summarize-shaped record, so the Zoo tab has accuracies to show (made-up numbers)."""
    def condition(amount, accuracy):
        return {"kind": "blur", "amount": amount, "pairs": 1000, "accuracy": accuracy, "accuracy_std": 0.01,
                "auc": accuracy, "tar_at_far": {"0.1": 0.2}, "threshold": threshold}

    return {"evaluated_model": "test", "flip_test": False, "max_pairs": None, "aligner": "test",
            "protocols": {"lfw-view1": {"pairs_total": 1000, "pairs_skipped": 0, "fallback_alignments": 0,
                                        "conditions": {"blur0": condition(0, 0.61), "blur4": condition(4, 0.55)}},
                          "cfp-fp": {"pairs_total": 1000, "pairs_skipped": 0, "fallback_alignments": 0,
                                     "conditions": {"blur0": condition(0, 0.58)}}},
            "threshold": threshold, "threshold_from": "lfw-view1 blur0: made up for the app's tests"}


def make_zoo(folder: Path) -> Path:
    """The reference mobilefacenet.y1 without a threshold (as imported), then untrained small models
    with a card's threshold: a plain one and each method with maps (named in alphabetical order,
    so the app's order - imported, plain, methods - differs from the folders')."""
    folder.mkdir(parents=True, exist_ok=True)
    reference = shutil.copytree(EMBEDDED_ZOO / REFERENCE, folder / REFERENCE)
    config = json.loads((reference / "config.json").read_text())
    for key in ("threshold", "metrics"):  # should the embedded copy be evaluated one day: as imported
        config.pop(key, None)
    (reference / "config.json").write_text(json.dumps(config, indent=2))
    torch.manual_seed(0)
    small = {"width": 0.25, "embedding_dim": 128}
    models = {"arface-mobilefacenet.untrained": zoo.build("arface-mobilefacenet", **small),
              "hpda-mobilefacenet.untrained": zoo.build("hpda-mobilefacenet", hbp_dim=128, **small),
              "mobilefacenet.untrained": zoo.build("mobilefacenet", **small),
              "scan-mobilefacenet.untrained": zoo.build("scan-mobilefacenet", **small).fold(),
              "sranet-mobilefacenet.untrained": zoo.build("sranet-mobilefacenet", **small)}
    for k, (name, model) in enumerate(models.items()):
        metrics = _metrics(0.2 + 0.1 * k)
        zoo.save(model.eval(), folder / name, card=card.render(model, metrics=metrics, name=name),
                 extra_config=card.extra_config(metrics=metrics))
    return folder


def first_model(zoo_dir: Path) -> str:
    """The model the app lists first (app.models.zoo_order), read from the configs alone."""
    from app.models import ZooEntry, zoo_order

    entries = [ZooEntry(p.name, "local zoo", p, zoo.read_config(p)) for p in sorted(zoo_dir.iterdir())
               if (p / "config.json").is_file()]
    return min(entries, key=zoo_order).name


def zoo_for_tests(tmp_path_factory) -> Path:
    """FACESCOPE_APP_TEST_ZOO when set, else a fresh `make_zoo`."""
    chosen = os.environ.get("FACESCOPE_APP_TEST_ZOO")
    return Path(chosen).resolve() if chosen else make_zoo(tmp_path_factory.mktemp("zoo"))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextlib.contextmanager
def running_app(zoo_dir: Path, scratch: Path, env: Dict[str, str], args: List[str] = (),
                as_a_space: bool = False) -> Iterator[str]:
    """`python app.py` on a free port; yields its URL, stops it afterwards (its log is in `scratch`).
    `as_a_space`: started the way a Hugging Face Space starts it, bare `python app.py` with the
    address, port and zoo in environment variables."""
    port = free_port()
    log_path = scratch / "app.log"
    environment = {k: v for k, v in os.environ.items() if k != "HF_HUB_OFFLINE"}
    environment.update({"HF_HUB_CACHE": str(scratch / "hf-cache"), "GRADIO_TEMP_DIR": str(scratch / "gradio"),
                        **env})
    if as_a_space:
        environment.update({"GRADIO_SERVER_NAME": "127.0.0.1", "GRADIO_SERVER_PORT": str(port),
                            "FACESCOPE_ZOO": str(zoo_dir)})
        command = [sys.executable, "app.py", *args]
    else:
        command = [sys.executable, str(ROOT / "app.py"), "--host", "127.0.0.1", "--port", str(port),
                   "--zoo", str(zoo_dir), *args]
    with open(log_path, "w") as log:
        process = subprocess.Popen(command, cwd=ROOT, env=environment, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            if process.poll() is not None:
                pytest.fail(f"app.py exited with {process.returncode}:\n{log_path.read_text()[-3000:]}")
            try:
                with urllib.request.urlopen(url, timeout=5) as response:
                    if response.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"app.py did not answer within {START_TIMEOUT} s:\n{log_path.read_text()[-3000:]}")
            time.sleep(1)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


# ---- fixtures --------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def zoo_dir(tmp_path_factory) -> Path:
    return zoo_for_tests(tmp_path_factory)


@pytest.fixture(scope="module")
def local_hub(zoo_dir) -> Iterator[LocalHub]:
    """A local hub holding HUB_REPO: a copy of the model the app lists first."""
    with LocalHub() as server:
        hub.publish(zoo_dir / first_model(zoo_dir), HUB_REPO, endpoint=server.url)
        yield server


@pytest.fixture(scope="module")
def client(zoo_dir, local_hub, tmp_path_factory) -> Iterator[Client]:
    scratch = tmp_path_factory.mktemp("app")
    closed = f"http://127.0.0.1:{free_port()}"  # HF_ENDPOINT loses to --hub-endpoint
    with running_app(zoo_dir, scratch, {"HF_ENDPOINT": closed}, ["--hub-endpoint", local_hub.url]) as url:
        yield Client(url, verbose=False, download_files=str(scratch / "downloads"))


@pytest.fixture(scope="module")
def models(client) -> List[str]:
    """The app's models, from its own zoo list."""
    table = client.predict(api_name="/zoo_list")
    names = [row[table["headers"].index("model")] for row in table["data"]]
    assert names, "the test zoo is empty"
    return names


@pytest.fixture(scope="module")
def photos(tmp_path_factory, data_root) -> Dict[str, Path]:
    """Bad and awkward inputs, each a small file."""
    folder = tmp_path_factory.mktemp("photos")
    upright = Image.open(SAME_A).convert("RGB")
    files = {}

    def path(name):
        files[name.split(".")[0]] = folder / name
        return folder / name

    path("text.jpg").write_text("this is a note, not a photo\n")
    data = SAME_A.read_bytes()
    path("truncated.jpg").write_bytes(data[:len(data) // 2])
    path("empty.jpg").write_bytes(b"")
    huge = Image.new("1", (10_000, 10_000), 1)  # 1 bit per pixel: 12 MB in memory, a few KB as PNG
    huge.paste(0, (4000, 4000, 6000, 6000))
    huge.save(path("huge.png"))
    background = Image.open(data_root / "celeba" / "images" / "000711.jpg").convert("RGB").crop((0, 0, 60, 224))
    background.save(path("background.jpg"), quality=92)
    upright.convert("L").save(path("gray.jpg"), quality=92)
    upright.convert("CMYK").save(path("cmyk.jpg"), quality=92)
    rgba = upright.convert("RGBA")
    alpha = Image.new("L", rgba.size, 0)
    alpha.paste(255, (8, 8, rgba.width - 8, rgba.height - 8))
    rgba.putalpha(alpha)
    rgba.save(path("rgba.png"))
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 degrees clockwise to display": the pixels are stored turned left
    upright.transpose(Image.Transpose.ROTATE_90).save(path("rotated.jpg"), quality=95, exif=exif)
    upright.resize((2400, 2400), Image.BICUBIC).save(path("large.jpg"), quality=90)
    tiles = [upright, Image.open(OTHER).convert("RGB"),
             Image.open(sorted((data_root / "lfw" / "images" / "Jimmy_Carter").glob("*.jpg"))[-1]).convert("RGB")]
    group = Image.new("RGB", (sum(t.width for t in tiles), max(t.height for t in tiles)), "white")
    for k, tile in enumerate(tiles):
        group.paste(tile, (k * tiles[0].width, 0))
    group.save(path("group.jpg"), quality=92)
    return files


def verify(client, a, b, models, face_a=1, face_b=1):
    return client.predict(handle_file(a), handle_file(b), face_a, face_b, models, api_name="/verify")


def aligned(client, photo, mode: str = "RGB") -> List[np.ndarray]:
    """The aligned crops of every face the app finds in `photo`, largest first."""
    return [pixels(face["image"], mode) for face in client.predict(handle_file(photo), api_name="/detect_faces")[2]]


def pixels(path, mode: str = "RGB") -> np.ndarray:
    return np.asarray(Image.open(path).convert(mode), dtype=np.float64)


def configs(zoo_dir: Path, names: List[str]) -> Dict[str, Dict]:
    """Each model's config as the app reads it: the checkpoint's config.json, a peer's own."""
    stored = {n: zoo.read_config(zoo_dir / n) for n in names if (zoo_dir / n / "config.json").is_file()}
    return {**stored, **{n: zoo.load(n).checkpoint_config() for n in names if n.startswith("peer:")}}


def expected_threshold(config: Dict):
    """(threshold, calibrated) the app must judge with: the config's own, else the uncalibrated default."""
    from app.models import DEFAULT_THRESHOLD

    threshold = config.get("threshold")
    return (DEFAULT_THRESHOLD, False) if threshold is None else (threshold, True)


# ---- the API ---------------------------------------------------------------------------------

def test_cli_help_and_bad_zoo():
    help_text = subprocess.run([sys.executable, "app.py", "--help"], cwd=ROOT, capture_output=True, text=True)
    assert help_text.returncode == 0 and "--zoo" in help_text.stdout and "--port" in help_text.stdout
    missing = subprocess.run([sys.executable, "app.py", "--zoo", "no/such/folder"], cwd=ROOT, capture_output=True,
                             text=True)
    assert missing.returncode == 2 and "not a folder" in missing.stderr
    not_url = subprocess.run([sys.executable, "app.py", "--hub-endpoint", "hub.example"], cwd=ROOT,
                             capture_output=True, text=True)
    assert not_url.returncode == 2 and "--hub-endpoint 'hub.example' is not a URL" in not_url.stderr


def test_named_endpoints(client):
    named = client.view_api(print_info=False, return_format="dict")["named_endpoints"]
    assert set(ENDPOINTS) <= set(named)
    verify_parameters = [p["parameter_name"] for p in named["/verify"]["parameters"]]
    assert verify_parameters == ["photo_a", "photo_b", "face_a", "face_b", "models"]
    pull_parameters = [p["parameter_name"] for p in named["/pull_model"]["parameters"]]
    assert pull_parameters == ["repo_id", "revision"]  # where to pull from is the server's choice, not a visitor's


def test_detect_faces(client):
    info, preview, faces, number, status = client.predict(handle_file(SAME_A), api_name="/detect_faces")
    assert info["name"] == SAME_A.name and len(info["faces"]) == 1 and number == 1
    assert info["faces"][0]["detector"] in ("yunet", "hog", "cnn")
    assert pixels(faces[0]["image"]).shape == (112, 112, 3)
    assert Image.open(preview).size == Image.open(SAME_A).size
    assert "1 face in" in status


def test_verify_every_model(client, models, zoo_dir):
    data, html, figure, status = verify(client, SAME_A, SAME_B, models)
    assert [m["model"] for m in data["models"]] == models
    stored = configs(zoo_dir, models)
    for entry in data["models"]:
        assert -1.0 <= entry["similarity"] <= 1.0
        threshold, calibrated = expected_threshold(stored[entry["model"]])
        assert entry["threshold"] == pytest.approx(threshold) and entry["calibrated"] == calibrated
        assert entry["same"] == (entry["similarity"] >= threshold)
        verdict = "same person" if entry["same"] else "different people"
        assert entry["verdict"] == (verdict if calibrated else f"{verdict} (uncalibrated threshold)")
        assert entry["model"] in html and entry["verdict"] in html
    if not os.environ.get("FACESCOPE_APP_TEST_ZOO"):
        assert not data["models"][0]["calibrated"] and "(uncalibrated)" in html  # the reference, as imported
        assert all(entry["calibrated"] for entry in data["models"][1:])
    assert figure["type"] == "plotly"
    assert data["photo A"]["name"] == SAME_A.name and data["photo B"]["faces_found"] == 1


def test_reference_first_then_plain_then_methods(models, zoo_dir):
    stored = configs(zoo_dir, models)
    imported = [m for m in models if "imported_from" in stored.get(m, {})]
    assert models[:len(imported)] == imported
    if not os.environ.get("FACESCOPE_APP_TEST_ZOO"):
        assert models == [REFERENCE, "mobilefacenet.untrained", "arface-mobilefacenet.untrained",
                          "hpda-mobilefacenet.untrained", "scan-mobilefacenet.untrained",
                          "sranet-mobilefacenet.untrained", "peer:dlib", "peer:sface"]  # the peers last


def test_verify_subset_same_numbers(client, models):
    everything = {m["model"]: m["similarity"] for m in verify(client, SAME_A, OTHER, models)[0]["models"]}
    subset = verify(client, SAME_A, OTHER, models[-1:])[0]["models"]
    assert [m["model"] for m in subset] == models[-1:]
    assert subset[0]["similarity"] == pytest.approx(everything[models[-1]], abs=1e-5)


def test_verify_refuses_unknown_or_no_model(client):
    with pytest.raises(AppError, match="unknown model.*no-such-model"):
        verify(client, SAME_A, SAME_B, ["no-such-model"])
    with pytest.raises(AppError, match="no model selected"):
        verify(client, SAME_A, SAME_B, [])


@pytest.mark.parametrize("kind, amount, target", [("blur", 2.5, "second"), ("lowres", 30, "both")])
def test_blur_curve(client, models, kind, amount, target):
    sigma, size = (amount, 20) if kind == "blur" else (3, amount)
    data, figure, face_a, face_b, status = client.predict(handle_file(SAME_A), handle_file(SAME_B), 1, 1, models,
                                                          kind, sigma, size, target, api_name="/blur_curve")
    assert data["kind"] == kind and data["target"] == target and amount in data["levels"]
    clean = 0.0 if kind == "blur" else 112.0
    assert data["levels"][0] == clean and data["levels"] == sorted(data["levels"], reverse=kind == "lowres")
    reference = {m["model"]: m["similarity"] for m in verify(client, SAME_A, SAME_B, models)[0]["models"]}
    for model in models:
        curve = data["similarity"][model]
        assert len(curve) == len(data["levels"]) and all(-1 <= v <= 1 for v in curve)
        assert curve[0] == pytest.approx(reference[model], abs=1e-4)  # the clean level is the verified pair
    assert figure["type"] == "plotly"
    crops = [pixels(face_a), pixels(face_b)]
    sharp = [aligned(client, SAME_A)[0], aligned(client, SAME_B)[0]]
    assert np.abs(crops[1] - sharp[1]).mean() > 1  # photo B is degraded at the slider's level
    assert (np.abs(crops[0] - sharp[0]).mean() > 1) == (target == "both")


def test_blur_curve_refuses_out_of_range(client, models):
    with pytest.raises(AppError, match="30 is greater than maximum value 12"):
        client.predict(handle_file(SAME_A), handle_file(SAME_B), 1, 1, models, "blur", 30, 20, "second",
                       api_name="/blur_curve")


def test_explain_every_model(client, models, zoo_dir):
    expected = {"scan": "scale map", "scan-folded": "scale map", "sranet": "after self residual attention",
                "hpda": "pyramid attention mask", "arface": "patch policy"}
    for model in [m for m in models if not m.startswith("peer:")]:
        data, panels, figure, status = client.predict(handle_file(SAME_A), handle_file(OTHER), 1, 1, [model], model,
                                                      api_name="/explain")
        captions = data["models"][model]["panels"]
        assert [p["caption"] for p in panels] == captions
        assert sum("Grad-CAM of cos to" in c for c in captions) == 2, captions
        method = zoo.read_config(zoo_dir / model)["architecture"]["method"]
        if method in expected:
            assert sum(expected[method] in c for c in captions) >= 2, captions  # one map per face at least
        else:
            assert any("no maps of its own" in n for n in data["models"][model]["notes"])
        assert all(pixels(p["image"]).shape == (224, 224, 3) for p in panels)
        assert data["detail_model"] == model and figure["type"] == "plotly"


def test_pretrained_peers_are_reference_models(client, models):
    """peer:dlib and peer:sface are listed after the zoo models, judge pairs at their own measured
    threshold, place photos among the gallery, and say why they have nothing to explain."""
    peers = [m for m in models if m.startswith("peer:")]
    assert peers == ["peer:dlib", "peer:sface"] and models[-2:] == peers
    data = verify(client, SAME_A, SAME_B, peers)[0]
    assert [m["same"] for m in data["models"]] == [True, True] and all(m["calibrated"] for m in data["models"])
    assert not any(m["same"] for m in verify(client, SAME_A, OTHER, peers)[0]["models"])
    data, panels, figure, status = client.predict(handle_file(SAME_A), handle_file(OTHER), 1, 1, [models[0], *peers],
                                                  None, api_name="/explain")
    assert data["detail_model"] == models[0] and figure["type"] == "plotly"
    for peer in peers:
        assert data["models"][peer]["panels"] == [] and "outside torch" in data["models"][peer]["notes"][0]
    with pytest.raises(AppError, match="peer:sface is a pretrained peer.*no gradients"):
        client.predict(handle_file(SAME_A), handle_file(OTHER), 1, 1, peers, "peer:sface", api_name="/explain")
    placed = client.predict(handle_file(SAME_A), None, 1, 1, "peer:sface", api_name="/embeddings")[0]
    assert placed["model"] == "peer:sface" and placed["nearest"]["photo A"][0]["person"] == "Leonardo_DiCaprio"
    card = client.predict("peer:dlib", api_name="/model_card")
    assert "pretrained peer" in card and "not identity-disjoint" in card


def test_occlusion_shows_what_face_a_matches_on(client, models):
    """The Occlusion tab for the reference and a peer: greying the face's middle costs more
    similarity than greying its border, every landmark patch is measured, sizes are checked."""
    for model in (REFERENCE, "peer:sface"):
        data, figure, status = client.predict(handle_file(SAME_A), handle_file(SAME_B), 1, 1, model, 16, 8,
                                              api_name="/occlusion")
        drops = np.array(data["drops"])
        assert data["model"] == model and drops.shape == (13, 13) and figure["type"] == "plotly"
        assert drops[4:9, 3:10].mean() > 3 * abs(np.r_[drops[0], drops[-1]].mean()), drops.round(3)
        assert len(data["landmark_drops"]) == 5 and max(data["landmark_drops"].values()) > 0.02
        assert "lowers it most" in status
    with pytest.raises(AppError, match="stride 20 px: choose 2 to the patch size"):
        client.predict(handle_file(SAME_A), handle_file(SAME_B), 1, 1, REFERENCE, 16, 20, api_name="/occlusion")


def test_embeddings_place_the_photos(client, models):
    data, figure, text, status = client.predict(handle_file(SAME_A), handle_file(OTHER), 1, 1, models[0],
                                                api_name="/embeddings")
    assert data["model"] == models[0] and set(data["nearest"]) == {"photo A", "photo B"}
    for nearest in data["nearest"].values():
        assert len(nearest) == 3 and all(-1 <= n["cosine"] <= 1 for n in nearest)
        assert [n["cosine"] for n in nearest] == sorted((n["cosine"] for n in nearest), reverse=True)
    assert "lands nearest to" in text
    plot = figure["plot"]
    assert '"name":"photo A"' in plot and '"name":"photo B"' in plot and '"name":"Leonardo_DiCaprio"' in plot
    alone = client.predict(None, None, 1, 1, models[0], api_name="/embeddings")
    assert alone[0]["nearest"] == {} and "Upload a photo" in alone[2]


def test_zoo_list_and_cards(client, models, zoo_dir):
    table = client.predict(api_name="/zoo_list")
    headers = table["headers"]
    stored = configs(zoo_dir, models)
    for row in table["data"]:
        name = row[headers.index("model")]
        if name not in stored:
            continue  # pulled from the hub by another test
        threshold, calibrated = expected_threshold(stored[name])
        shown = row[headers.index("threshold")]
        assert shown == f"{threshold:g} (uncalibrated)" if not calibrated else \
            float(shown) == pytest.approx(threshold, abs=1e-4)
        text = client.predict(name, api_name="/model_card")
        assert not text.startswith("---") and name.split("-")[0] in text
    if not os.environ.get("FACESCOPE_APP_TEST_ZOO"):
        assert {"lfw-view1 clean", "lfw-view1 blur σ4", "cfp-fp clean"} <= set(headers)
        row = table["data"][[r[headers.index("model")] for r in table["data"]].index("mobilefacenet.untrained")]
        assert float(row[headers.index("lfw-view1 clean")]) == pytest.approx(0.61)
    with pytest.raises(AppError, match="unknown model 'nothing-here'"):
        client.predict("nothing-here", api_name="/model_card")


def test_pull_model_and_use_it(client, models, local_hub):
    status, table, *choosers = client.predict(HUB_REPO, "", api_name="/pull_model")
    assert f"Pulled **{HUB_REPO}**" in status and "commit" in status and local_hub.url in status
    assert HUB_REPO in [row[0] for row in table["data"]]
    assert choosers[0]["value"] == [*models, HUB_REPO]  # selected for comparison at once
    result = verify(client, SAME_A, SAME_B, [models[0], HUB_REPO])[0]["models"]
    assert [m["model"] for m in result] == [models[0], HUB_REPO]
    assert result[1]["similarity"] == pytest.approx(result[0]["similarity"], abs=1e-5)  # the same weights
    fresh = Client(client.src, verbose=False)  # another session uses it too
    assert verify(fresh, SAME_A, SAME_B, [HUB_REPO])[0]["models"][0]["model"] == HUB_REPO


def test_thresholds_fall_back_visibly():
    """The card's threshold; else the clean evaluation's in its metrics; else the uncalibrated default."""
    from app.models import DEFAULT_THRESHOLD, model_threshold
    from app.tabs.verify import Verdict

    metrics = _metrics(0.42)
    assert model_threshold({"threshold": 0.4, "metrics": metrics}) == (0.4, metrics["threshold_from"], True)
    bare = {k: v for k, v in metrics.items() if k not in ("threshold", "threshold_from")}
    bare["protocols"] = {"cfp-fp": bare["protocols"]["cfp-fp"], "lfw-view1": bare["protocols"]["lfw-view1"]}
    threshold, source, calibrated = model_threshold({"metrics": bare})  # LFW View 1 clean wins over CFP-FP
    assert threshold == pytest.approx(0.42) and calibrated and source.startswith("lfw-view1 blur0")
    imported = zoo.read_config(EMBEDDED_ZOO / REFERENCE)
    for config in ({}, {key: value for key, value in imported.items() if key not in ("threshold", "metrics")}):
        threshold, source, calibrated = model_threshold(config)
        assert (threshold, calibrated) == (DEFAULT_THRESHOLD, False) and "uncalibrated" in source
    assert Verdict("m", 0.5, 0.3, calibrated=False).text == "same person (uncalibrated threshold)"
    assert Verdict("m", 0.1, 0.3).text == "different people"


def test_zoo_order_reference_then_plain_then_methods():
    from app.models import ZooEntry, zoo_order

    def entry(name, method, imported=False, error=None):
        config = {"architecture": {"method": method}, **({"imported_from": {"format": "mxnet"}} if imported else {})}
        return ZooEntry(name, "local zoo", Path(name), config, error=error)

    entries = [entry("arface-mobilefacenet.fss-ft", "arface"), entry("broken", "plain", error="corrupted"),
               entry("mobilefacenet.fss-ft-npcface", "plain"), entry(REFERENCE, "plain", imported=True),
               entry("scan-mobilefacenet.fss-ft", "scan-folded"), entry("mobilefacenet.fss-ft", "plain")]
    assert [e.name for e in sorted(entries, key=zoo_order)] == [
        REFERENCE, "mobilefacenet.fss-ft", "mobilefacenet.fss-ft-npcface", "arface-mobilefacenet.fss-ft",
        "scan-mobilefacenet.fss-ft", "broken"]


def test_pull_model_clear_messages(client):
    with pytest.raises(AppError, match="not a Hugging Face Hub repo id"):
        client.predict("just-a-name", "", api_name="/pull_model")
    with pytest.raises(AppError, match="no model repository facescope/missing"):
        client.predict("facescope/missing", "", api_name="/pull_model")
    with pytest.raises(AppError, match=f"{HUB_REPO} .*has no revision 'no-such-branch'"):
        client.predict(HUB_REPO, "no-such-branch", api_name="/pull_model")


def test_pull_from_an_unreachable_hub(zoo_dir, tmp_path, monkeypatch):
    from huggingface_hub import constants

    from app.service import Service

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hf-cache"))
    closed = f"http://127.0.0.1:{free_port()}"
    service = Service(zoo_dir, hub_endpoint=closed)
    with pytest.raises(hub.HubError, match=f"cannot reach the Hugging Face Hub at {closed}"):
        service.pull("facescope/never-pulled")
    assert "facescope/never-pulled" not in [e.name for e in service.entries()]


# ---- bad and awkward inputs ------------------------------------------------------------------

@pytest.mark.parametrize("name, message", [
    ("text", "text.jpg: not an image PIL can read"),
    ("truncated", "truncated.jpg: unreadable image .*truncated"),
    ("empty", r"empty.jpg is empty \(0 bytes\)"),
    ("huge", "huge.png is 10,000 x 10,000 pixels .*up to 50 megapixels"),
    ("background", "no face found in background.jpg"),
])
def test_bad_inputs_get_clear_messages(client, models, photos, name, message):
    with pytest.raises(AppError, match=message):
        client.predict(handle_file(photos[name]), api_name="/detect_faces")
    with pytest.raises(AppError, match=message):
        verify(client, SAME_A, photos[name], models)
    assert verify(client, SAME_A, SAME_B, models[:1])[0]["models"]  # and the app goes on serving


@pytest.mark.parametrize("name, note", [
    ("gray", "grayscale"),
    ("cmyk", "CMYK: converted to RGB"),
    ("rgba", "transparent pixels"),
    ("rotated", "EXIF orientation"),
    ("large", "shrunk from 2400x2400"),
])
def test_awkward_photos_work(client, models, photos, name, note):
    info, preview, faces, number, status = client.predict(handle_file(photos[name]), api_name="/detect_faces")
    assert len(info["faces"]) == 1 and any(note in n for n in info["notes"]) and note in status
    data, _, _, verify_status = verify(client, SAME_A, photos[name], models)
    assert len(data["models"]) == len(models) and note in verify_status
    difference = np.abs(pixels(faces[0]["image"], "L") - aligned(client, SAME_A, "L")[0]).mean()
    assert difference < SAME_ALIGNMENT_TOLERANCE, f"the {name} face is not aligned like the original photo's ({difference:.1f})"


def test_many_faces_user_chooses(client, models, photos):
    info, preview, faces, number, status = client.predict(handle_file(photos["group"]), api_name="/detect_faces")
    assert len(info["faces"]) == 3 and len(faces) == 3 and "3 faces" in status
    width = Image.open(SAME_A).width
    tile = {face["face"]: int((face["box"][0] + face["box"][2]) / 2 // width) for face in info["faces"]}
    assert sorted(tile.values()) == [0, 1, 2]
    alone = aligned(client, OTHER)[0]  # the middle tile's photo
    for face, position in tile.items():
        data, _, _, verify_status = verify(client, photos["group"], OTHER, models[:1], face_a=face)
        assert data["photo A"]["face"] == face and "holds 3 faces" in verify_status
        difference = np.abs(pixels(faces[face - 1]["image"]) - alone).mean()
        assert (difference < SAME_ALIGNMENT_TOLERANCE) == (position == 1), (face, position, difference)
    with pytest.raises(AppError, match="group.jpg has 3 face.*no face 4; choose 1 to 3"):
        verify(client, photos["group"], OTHER, models[:1], face_a=4)


def test_twenty_faces_each_found_and_choosable(client, models, tmp_path, data_root):
    group = tmp_path / "twenty.jpg"
    photos = twenty_faces(data_root / "lfw" / "images", group)
    info, preview, faces, number, status = client.predict(handle_file(group), api_name="/detect_faces")
    assert len(info["faces"]) == 20 and len(faces) == 20 and "20 faces" in status
    tiles = {}  # grid tile (row by row) -> face number
    for face in info["faces"]:
        left, top, right, bottom = face["box"]
        tiles[int((top + bottom) / 2 // 250) * 5 + int((left + right) / 2 // 250)] = face["face"]
    assert sorted(tiles) == list(range(20))  # one face in every tile
    chosen = tiles[13]  # row 3, column 4
    # The chosen face is the tile's person: the zoo model matches it with their own photo (the
    # very same pixels) and not with the next tile's. Pixels are not compared here: inside the
    # grid YuNet's landmarks land a few pixels from where they land on the photo alone.
    data, _, _, verify_status = verify(client, group, photos[13], models[:1], face_a=chosen)
    assert data["photo A"]["face"] == chosen and "holds 20 faces" in verify_status
    own = data["models"][0]
    neighbour = verify(client, group, photos[13], models[:1], face_a=tiles[12])[0]["models"][0]
    assert own["same"] and not neighbour["same"], (own, neighbour)
    assert own["similarity"] > 0.8 > neighbour["similarity"] + 0.5, (own["similarity"], neighbour["similarity"])
    with pytest.raises(AppError, match="twenty.jpg has 20 face.*no face 21; choose 1 to 20"):
        verify(client, group, photos[13], models[:1], face_a=21)


def test_broken_checkpoints_in_the_zoo_are_listed_with_why_and_refused(tmp_path):
    """A zoo folder with a wrong-architecture and corrupted checkpoints: the app still serves
    the good model, shows why each other one failed, and names the failure when one is asked for."""
    from app.errors import InputError
    from app.service import Service

    torch.manual_seed(0)
    good = zoo.save(zoo.build("ir18", width=0.25, head="gdc").eval(), tmp_path / "zoo" / "good-ir18")
    broken = {folder.name: message for folder, message in break_checkpoints(good, tmp_path / "zoo").items()}
    service = Service(tmp_path / "zoo", peers=False)
    assert service.model_names() == ["good-ir18"]
    headers, rows = service.zoo_table()
    source = {row[0]: row[headers.index("source")] for row in rows}
    for name, message in broken.items():
        assert message in source[name]
        assert service.card(name).startswith("**Could not be loaded:**")
        with pytest.raises(InputError, match=f"model {name} could not be loaded: .*{re.escape(message)}.*Usable: good-ir18"):
            service.verify(SAME_A, SAME_B, [name])
    result = service.verify(SAME_A, SAME_B, ["good-ir18"])
    assert [v.model for v in result.verdicts] == ["good-ir18"]
    assert sorted(p.name for p in (tmp_path / "zoo").iterdir()) == sorted([*broken, "good-ir18"])  # nothing added


def test_the_repository_runs_as_a_hugging_face_space(zoo_dir, tmp_path):
    """A Space reads the README's front matter (sdk, app_file) and runs `python app.py` with the
    address and port in GRADIO_SERVER_NAME / GRADIO_SERVER_PORT: started that way, the app answers
    a pair through gradio_client."""
    from huggingface_hub import SpaceCard

    card = SpaceCard.load(ROOT / "README.md").data
    assert card.sdk == "gradio" and card.app_file == "app.py" and (ROOT / card.app_file).is_file()
    import gradio

    assert card.sdk_version == gradio.__version__  # the Space builds the version the tests ran
    with running_app(zoo_dir, tmp_path, {}, as_a_space=True) as url:
        client = Client(url, verbose=False, download_files=str(tmp_path / "downloads"))
        data = verify(client, SAME_A, SAME_B, [REFERENCE])[0]
        assert data["models"][0]["model"] == REFERENCE and data["models"][0]["same"]

