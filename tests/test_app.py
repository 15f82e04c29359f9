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

import os
import subprocess
import sys
from pathlib import Path
from typing import Dict, Iterator, List

import numpy as np
import pytest
from gradio_client import Client, handle_file
from gradio_client.exceptions import AppError
from PIL import Image

import zoo
from app_server import (ENDPOINTS, HUB_REPO, OTHER, REFERENCE, ROOT, SAME_A, SAME_ALIGNMENT_TOLERANCE, SAME_B, aligned,
                        awkward_photos, configs, expected_threshold, first_model, free_port, pixels, running_app,
                        verify, zoo_for_tests)
from hostile import twenty_faces
from hub_server import LocalHub
from zoo import hub

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
    return awkward_photos(tmp_path_factory.mktemp("photos"), data_root)


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
    data, html, figure, status, _ = verify(client, SAME_A, SAME_B, models)
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
    data, figure, face_a, face_b, status, _ = client.predict(handle_file(SAME_A), handle_file(SAME_B), 1, 1, models,
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
        data, panels, figure, status, _ = client.predict(handle_file(SAME_A), handle_file(OTHER), 1, 1, [model], model,
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


def test_the_benchmarks_http_client_gets_what_gradio_client_gets(client, models):
    """bench/app_client.py speaks the app's HTTP API as a remote script does: the verdicts
    gradio_client gets, the page's default selection (the zoo, without the peers), and the app's
    own error message."""
    from bench.app_client import GradioHttp, zoo_models

    http = GradioHttp(client.src)
    assert zoo_models(http) == [m for m in models if not m.startswith("peer:")] != models
    assert zoo_models(http, peers=True) == models
    ours = http.verify(SAME_A, SAME_B, models[:2])["models"]
    theirs = verify(client, SAME_A, SAME_B, models[:2])[0]["models"]
    assert [(m["model"], m["similarity"], m["same"]) for m in ours] == [(m["model"], m["similarity"], m["same"])
                                                                          for m in theirs]
    with pytest.raises(RuntimeError, match="unknown model"):
        http.verify(SAME_A, SAME_B, ["no-such-model"])
    http.close()


def test_pretrained_peers_are_reference_models(client, models):
    """peer:dlib and peer:sface are listed after the zoo models, judge pairs at their own measured
    threshold, place photos among the gallery, and say why they have nothing to explain."""
    peers = [m for m in models if m.startswith("peer:")]
    assert peers == ["peer:dlib", "peer:sface"] and models[-2:] == peers
    data = verify(client, SAME_A, SAME_B, peers)[0]
    assert [m["same"] for m in data["models"]] == [True, True] and all(m["calibrated"] for m in data["models"])
    assert not any(m["same"] for m in verify(client, SAME_A, OTHER, peers)[0]["models"])
    data, panels, figure, status, _ = client.predict(handle_file(SAME_A), handle_file(OTHER), 1, 1, [models[0], *peers],
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
        data, figure, status, _ = client.predict(handle_file(SAME_A), handle_file(SAME_B), 1, 1, model, 16, 8,
                                              api_name="/occlusion")
        drops = np.array(data["drops"])
        assert data["model"] == model and drops.shape == (13, 13) and figure["type"] == "plotly"
        assert drops[4:9, 3:10].mean() > 3 * abs(np.r_[drops[0], drops[-1]].mean()), drops.round(3)
        assert len(data["landmark_drops"]) == 5 and max(data["landmark_drops"].values()) > 0.02
        assert "lowers it most" in status
    with pytest.raises(AppError, match="stride 20 px: choose 2 to the patch size"):
        client.predict(handle_file(SAME_A), handle_file(SAME_B), 1, 1, REFERENCE, 16, 20, api_name="/occlusion")


def test_embeddings_place_the_photos(client, models):
    data, figure, text, status, _ = client.predict(handle_file(SAME_A), handle_file(OTHER), 1, 1, models[0],
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


def test_pull_model_clear_messages(client):
    with pytest.raises(AppError, match="not a Hugging Face Hub repo id"):
        client.predict("just-a-name", "", api_name="/pull_model")
    with pytest.raises(AppError, match="no model repository facescope/missing"):
        client.predict("facescope/missing", "", api_name="/pull_model")
    with pytest.raises(AppError, match=f"{HUB_REPO} .*has no revision 'no-such-branch'"):
        client.predict(HUB_REPO, "no-such-branch", api_name="/pull_model")


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
    data, _, _, verify_status, _ = verify(client, SAME_A, photos[name], models)
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
        data, _, _, verify_status, _ = verify(client, photos["group"], OTHER, models[:1], face_a=face)
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
    data, _, _, verify_status, _ = verify(client, group, photos[13], models[:1], face_a=chosen)
    assert data["photo A"]["face"] == chosen and "holds 20 faces" in verify_status
    own = data["models"][0]
    neighbour = verify(client, group, photos[13], models[:1], face_a=tiles[12])[0]["models"][0]
    assert own["same"] and not neighbour["same"], (own, neighbour)
    assert own["similarity"] > 0.8 > neighbour["similarity"] + 0.5, (own["similarity"], neighbour["similarity"])
    with pytest.raises(AppError, match="twenty.jpg has 20 face.*no face 21; choose 1 to 20"):
        verify(client, group, photos[13], models[:1], face_a=21)
