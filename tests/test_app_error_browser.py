"""The Error browser tab, driven through gradio_client against a running `python app.py`.

The app serves `app_server.make_zoo`'s test zoo (the imported reference and untrained small
models), each with the per-pair results `zoo.evaluate --pairs` stores for 100 LFW View 1 pairs
(clean and at blur 4) beside it as pairs.csv.gz, except one model left without, and the
reference's results cut to the pairs it got right, so its error list is empty. Expected lists and
counts are computed straight from those files.
"""
from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path
from typing import Dict, Iterator, List

import numpy as np
import pytest
from gradio_client import Client
from gradio_client.exceptions import AppError

from app.errors import InputError
from app.models import ZooEntry
from app.tabs.error_browser import browse, pair_files
from app_server import REFERENCE, SAME_ALIGNMENT_TOLERANCE, aligned, make_zoo, pixels, running_app, verify
from pair_results import PROTOCOL, evaluate_pairs, read_rows, write_rows
from zoo.data import make_aligner

EVALUATED_PAIRS = 100
UNSTORED = "hpda-mobilefacenet.untrained"  # a model without stored results
UNTRAINED = "mobilefacenet.untrained"  # errs on about 40 of the 100 pairs
FLAWLESS = "sranet-mobilefacenet.untrained"  # its results cut to the pairs it got right


@pytest.fixture(scope="module")
def zoo_dir(tmp_path_factory, crop_cache) -> Path:
    folder = make_zoo(tmp_path_factory.mktemp("zoo"))
    stored = [p for p in sorted(folder.iterdir()) if p.is_dir() and p.name != UNSTORED]
    made = evaluate_pairs([str(p) for p in stored], tmp_path_factory.mktemp("pairs"), crop_cache.root, EVALUATED_PAIRS)
    for model in stored:
        shutil.copyfile(made[str(model)], model / "pairs.csv.gz")
    right = [row for row in read_rows(folder / FLAWLESS / "pairs.csv.gz") if row["correct"] == "True"]
    write_rows(folder / FLAWLESS / "pairs.csv.gz", right)
    return folder


@pytest.fixture(scope="module")
def client(zoo_dir, tmp_path_factory) -> Iterator[Client]:
    scratch = tmp_path_factory.mktemp("app")
    with running_app(zoo_dir, scratch, {}, ["--no-peers"]) as url:
        yield Client(url, verbose=False, download_files=str(scratch / "downloads"))


@pytest.fixture(scope="module")
def models(client) -> List[str]:
    table = client.predict(api_name="/zoo_list")
    return [row[table["headers"].index("model")] for row in table["data"]]


def stored(zoo_dir: Path, model: str, condition: str) -> Dict[str, Dict[str, str]]:
    return {row["line"]: row for row in read_rows(zoo_dir / model / "pairs.csv.gz")
            if row["protocol"] == PROTOCOL and row["condition"] == condition}


def test_named_endpoints(client):
    named = client.view_api(print_info=False, return_format="dict")["named_endpoints"]
    assert [p["parameter_name"] for p in named["/error_browser"]["parameters"]] == [
        "model", "protocol", "condition", "view", "rows", "models"]
    assert [p["parameter_name"] for p in named["/error_browser_open"]["parameters"]] == [
        "model", "protocol", "condition", "view", "rank", "models"]


def test_errors_ranked_with_both_faces_and_every_model(client, models, zoo_dir, data_root):
    data, table, gallery, figure, status, files = client.predict(REFERENCE, PROTOCOL, "blur4", "errors", 6, models,
                                                                 api_name="/error_browser")
    own = stored(zoo_dir, REFERENCE, "blur4")
    wrong = [line for line, row in own.items() if row["correct"] == "False"]
    margin = {line: round(abs(float(own[line]["similarity"]) - float(own[line]["threshold"])), 6) for line in wrong}
    ranked = sorted(wrong, key=lambda line: -margin[line])  # stable: ties keep the file's order
    assert data["rows_total"] == len(wrong) > 6 and data["pairs_evaluated"] == EVALUATED_PAIRS
    assert [row["line"] for row in data["rows"]] == ranked[:6]
    with_results = [m for m in models if m != UNSTORED]
    for row in data["rows"]:
        assert row["outcome"] == ("false reject" if own[row["line"]]["same"] == "True" else "false accept")
        assert set(with_results) - {REFERENCE} <= set(row) and UNSTORED not in row
    assert len(table["data"]) == 6 and set(with_results) - {REFERENCE} <= set(table["headers"])
    assert [item["caption"].split()[0] for item in gallery] == [f"#{k}" for k in range(1, 7)]
    faces = pixels(gallery[0]["image"])
    assert faces.shape == (112, 228, 3)
    first, second = (aligned(client, data_root / data["rows"][0][key])[0] for key in ("first", "second"))
    assert np.abs(faces[:, :112] - first).mean() < SAME_ALIGNMENT_TOLERANCE
    assert np.abs(faces[:, 116:] - second).mean() < SAME_ALIGNMENT_TOLERANCE
    assert f"{REFERENCE}: {len(wrong)} errors of {EVALUATED_PAIRS} pairs" in status
    assert f"no stored per-pair results for {UNSTORED}" in status and "python -m zoo.evaluate" in status
    assert figure["type"] == "plotly"
    downloaded = {Path(f).suffix: Path(f) for f in files}  # the shown rows as JSON and CSV
    assert json.loads(downloaded[".json"].read_text())["rows"] == data["rows"]
    with downloaded[".csv"].open(newline="") as text:
        assert [row["line"] for row in csv.DictReader(text)] == ranked[:6]


def test_disagreement_matrix_counts_every_model_pair(client, models, zoo_dir):
    data = client.predict(UNTRAINED, PROTOCOL, "blur0", "disagreements", 5, models, api_name="/error_browser")[0]
    matrix = data["disagreements"]
    assert matrix["models"] == [m for m in models if m != UNSTORED]
    rows = {m: stored(zoo_dir, m, "blur0") for m in matrix["models"]}
    for a, counts in zip(matrix["models"], matrix["counts"]):
        for b, count in zip(matrix["models"], counts):
            both = rows[a].keys() & rows[b].keys()
            assert count == sum(rows[a][line]["verdict_same"] != rows[b][line]["verdict_same"] for line in both)
    assert all(row["others_disagreeing"] > 0 for row in data["rows"])


def test_a_row_opens_as_photos_a_and_b(client, models, data_root):
    """The second row's images become photos A and B: the same files, and Verify scores them as stored."""
    data = client.predict(REFERENCE, PROTOCOL, "blur0", "disagreements", 3, models, api_name="/error_browser")[0]
    row = data["rows"][1]
    photo_a, photo_b, face_a, face_b, status = client.predict(REFERENCE, PROTOCOL, "blur0", "disagreements", 2,
                                                              models, api_name="/error_browser_open")
    assert Path(photo_a).read_bytes() == (data_root / row["first"]).read_bytes()
    assert Path(photo_b).read_bytes() == (data_root / row["second"]).read_bytes()
    assert Path(photo_a).name == Path(row["first"]).name and (face_a, face_b) == (1, 1)
    assert "Row 2" in status and "is now photo A and photo B" in status
    verified = verify(client, photo_a, photo_b, [REFERENCE])[0]["models"][0]
    assert verified["similarity"] == pytest.approx(row["similarity"], abs=1e-3)


def test_bad_input_gets_a_clear_message(client, models):
    with pytest.raises(AppError, match=r"no stored results for protocol 'cfp-xx'; known: lfw-view1 \(blur0, blur4\)"):
        client.predict(UNTRAINED, "cfp-xx", "blur0", "errors", 5, models, api_name="/error_browser")
    with pytest.raises(AppError, match=f"no stored per-pair results for {UNSTORED}: looked for .*Make them with "
                                       "python -m zoo.evaluate"):
        client.predict(UNSTORED, PROTOCOL, "blur0", "errors", 5, models, api_name="/error_browser")
    data, table, gallery, _, status, _ = client.predict(FLAWLESS, PROTOCOL, "blur4", "errors", 5, models,
                                                        api_name="/error_browser")
    assert data["rows"] == [] and gallery in ([], None) and f"{FLAWLESS} makes no errors on lfw-view1 blur4" in status
    with pytest.raises(AppError, match="nothing to load: .* makes no errors"):
        client.predict(FLAWLESS, PROTOCOL, "blur4", "errors", 1, models, api_name="/error_browser_open")
    with pytest.raises(AppError, match="there is no row 1000: the list has rows 1 to"):
        client.predict(UNTRAINED, PROTOCOL, "blur4", "errors", 1000, models, api_name="/error_browser_open")


def test_without_the_images_the_list_still_shows(zoo_dir, monkeypatch, tmp_path):
    """Data root elsewhere: every row is listed, each with a placeholder, and the page says where it looked."""
    monkeypatch.setenv("FACESCOPE_DATA", str(tmp_path))
    entries = [ZooEntry(p.name, "local zoo", p, {}) for p in sorted(zoo_dir.iterdir()) if p.is_dir()]
    untrained = next(e for e in entries if e.name == UNTRAINED)
    result = browse(entries, untrained, PROTOCOL, "blur4", "errors", 4, lambda image: make_aligner().align(image).image)
    assert len(result.faces) == 4 and all(caption.endswith("images not found") for _, caption in result.faces)
    assert len(result.ranked.table) > 4
    assert any(f"not under the data root {tmp_path}" in note for note in result.notes)
    with pytest.raises(InputError, match=f"not found under the data root {tmp_path}"):
        pair_files(entries, untrained, PROTOCOL, "blur4", "errors", 1)
