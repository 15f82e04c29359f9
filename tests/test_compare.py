"""The Compare view, the Occlusion lab's patch-policy bars and every tab's downloads, driven through
gradio_client against a running `python app.py` on the test zoo (tests/app_server.py); and the
HTML report as a Python function.

A download is checked against what the tab showed: its JSON is the shown JSON, its CSV holds the
same numbers, its PNG is an image of the figure's size; the report opens offline (no http(s)
address it needs, every image a data URI, plotly.js once) and carries the numbers as JSON.
"""
from __future__ import annotations

import csv
import json
import re
from html.parser import HTMLParser
from pathlib import Path
from typing import Dict, Iterator, List

import numpy as np
import pytest
from gradio_client import Client, handle_file
from gradio_client.exceptions import AppError
from PIL import Image

import analysis
from analysis.html_report import Figure, Images, Table
from app_server import OTHER, REFERENCE, SAME_A, SAME_B, running_app, verify, zoo_for_tests

POLICY = "arface-mobilefacenet.untrained"  # the test zoo's model with a patch policy
CHOSEN = [REFERENCE, POLICY, "scan-mobilefacenet.untrained", "peer:sface"]


@pytest.fixture(scope="module")
def client(tmp_path_factory) -> Iterator[Client]:
    scratch = tmp_path_factory.mktemp("app")
    with running_app(zoo_for_tests(tmp_path_factory), scratch, {}) as url:
        yield Client(url, verbose=False, download_files=str(scratch / "downloads"))


@pytest.fixture(scope="module")
def comparison(client):
    """/compare of a pair of different people with a plain model, a patch policy, SCAN and a peer."""
    return client.predict(handle_file(SAME_A), handle_file(OTHER), 1, 1, CHOSEN, 16, 8, api_name="/compare")


def by_suffix(files: List[str]) -> Dict[str, Path]:
    return {Path(f).suffix: Path(f) for f in files}


def csv_rows(path: Path) -> List[Dict[str, str]]:
    with open(path, newline="") as table:
        return list(csv.DictReader(table))


class Addresses(HTMLParser):
    """Every src/href of a page, and how many <img> it has."""

    def __init__(self):
        super().__init__()
        self.addresses, self.images = [], 0

    def handle_starttag(self, tag, attrs):
        self.images += tag == "img"
        self.addresses += [value or "" for name, value in attrs if name in ("src", "href")]


def assert_self_contained(page: str, images: int) -> None:
    parser = Addresses()
    parser.feed(page)
    assert parser.images == images and all(a.startswith("data:image/png;base64,") for a in parser.addresses)
    assert not re.search(r"<(link|iframe)\b|<script[^>]*\bsrc=|url\(\s*['\"]?https?:", page)
    assert page.count("* plotly.js v") == 1  # the library, inline, once


def test_compare_shows_every_model_beside_the_others(client, comparison):
    data, maps, curve, status, files = comparison
    assert [m["model"] for m in data["models"]] == CHOSEN and status.startswith("4 models compared")
    verified = {m["model"]: m for m in verify(client, SAME_A, OTHER, CHOSEN)[0]["models"]}
    for row in data["models"]:
        assert row["similarity"] == pytest.approx(verified[row["model"]]["similarity"], abs=1e-5)
        assert row["verdict"] == verified[row["model"]]["verdict"] and len(row["occlusion"]["landmark_drops"]) == 5
        assert data["blur_curve"]["similarity"][row["model"]][0] == pytest.approx(row["similarity"], abs=1e-4)
    rows = {m["model"]: m for m in data["models"]}
    assert "no maps of its own" in rows[REFERENCE]["missing"]["its own map"]
    assert "patch policy" in rows[POLICY]["own_map"] and len(rows[POLICY]["occlusion"]["policy_drops"]) == 5
    assert "scale map" in rows["scan-mobilefacenet.untrained"]["own_map"]
    assert all("outside torch" in why for why in rows["peer:sface"]["missing"].values())
    assert len(rows["peer:sface"]["missing"]) == 2 and rows["peer:sface"]["own_map"] is None
    assert maps["type"] == curve["type"] == "plotly"
    assert all(model in maps["plot"] for model in CHOSEN)  # each row is titled with its model
    downloaded = by_suffix(files)
    assert json.loads(downloaded[".json"].read_text()) == data
    table = csv_rows(downloaded[".csv"])
    assert [r["model"] for r in table] == CHOSEN
    for row, shown in zip(table, data["models"]):
        assert float(row["similarity"]) == pytest.approx(shown["similarity"], abs=1e-6)
        assert float(row["drop nose"]) == pytest.approx(shown["occlusion"]["landmark_drops"]["nose"], abs=1e-6)


def test_the_report_is_one_self_contained_page(client, comparison):
    files, note = client.predict(api_name="/compare_report")
    report = by_suffix(files)[".html"]
    assert note == f"Wrote {report.name}."
    page = report.read_text(encoding="utf-8")
    assert_self_contained(page, images=2)  # faces A and B
    numbers = json.loads(re.search(r'<script type="application/json" id="data">(.*?)</script>', page, re.S).group(1))
    assert numbers == comparison[0]
    for row in comparison[0]["models"]:
        assert row["model"] in page and row["verdict"] in page
    assert page.count("Plotly.newPlot") == 2  # the maps and the blur curve
    pngs, _ = client.predict(api_name="/compare_png")
    figures = [Image.open(p) for p in pngs if p.endswith(".png")]
    assert len(figures) == 2 and all(f.size[0] >= 900 for f in figures)  # the maps and the curve, legible widths


def test_occlusion_lab_shows_a_patch_policy_beside_the_landmark_drops(client):
    data, figure, status, files = client.predict(handle_file(SAME_A), handle_file(SAME_B), 1, 1, POLICY, 16, 8,
                                                 api_name="/occlusion")
    policy = data["policy"]
    assert len(policy["kept"]) == len(policy["patch_drops"]) == 5 and 0 < policy["mode_probability"] <= 1
    assert (policy["mode_drop"] is None) == all(policy["kept"])
    assert "its patch policy drops" in status and "its policy's mode" in figure["plot"]
    table = csv_rows(by_suffix(files)[".csv"])
    assert len(table) == 169 + 5 + 5
    grid = np.array([float(r["drop"]) for r in table[:169]]).reshape(13, 13)
    assert np.allclose(grid, data["drops"], atol=1e-6)
    assert [float(r["drop"]) for r in table[-5:]] == pytest.approx(policy["patch_drops"], abs=1e-6)
    plain = client.predict(handle_file(SAME_A), handle_file(SAME_B), 1, 1, REFERENCE, 16, 8, api_name="/occlusion")
    assert plain[0]["policy"] is None and "its policy's mode" not in plain[1]["plot"]


def test_every_tab_downloads_what_it_shows(client):
    models = [REFERENCE, POLICY]
    data, _, _, _, files = verify(client, SAME_A, SAME_B, models)
    table = csv_rows(by_suffix(files)[".csv"])
    assert [float(r["similarity"]) for r in table] == [m["similarity"] for m in data["models"]]
    png, _ = client.predict(api_name="/verify_png")
    assert Image.open(by_suffix(png)[".png"]).size[0] == 900

    curve = client.predict(handle_file(SAME_A), handle_file(SAME_B), 1, 1, models, "blur", 2, 20, "second",
                           api_name="/blur_curve")
    rows = csv_rows(by_suffix(curve[-1])[".csv"])
    assert len(rows) == len(models) * len(curve[0]["levels"])
    for row in rows:
        level = curve[0]["levels"].index(float(row["level"]))
        assert float(row["similarity"]) == pytest.approx(curve[0]["similarity"][row["model"]][level], abs=1e-6)

    explained = client.predict(handle_file(SAME_A), handle_file(OTHER), 1, 1, models, REFERENCE, api_name="/explain")
    assert json.loads(by_suffix(explained[-1])[".json"].read_text()) == explained[0]
    pictures, _ = client.predict(api_name="/explain_png")
    sheet = Image.open(next(p for p in pictures if p.endswith("-gallery.png")))
    assert sheet.size[0] == 4 * (224 + 8) + 8 and sheet.size[1] > 2 * 224  # the gallery's panels, four a row

    placed = client.predict(handle_file(SAME_A), handle_file(OTHER), 1, 1, REFERENCE, api_name="/embeddings")
    points = csv_rows(by_suffix(placed[-1])[".csv"])
    assert {"photo A", "photo B"} <= {p["person"] for p in points}
    assert json.loads(by_suffix(placed[-1])[".json"].read_text())["nearest"] == placed[0]["nearest"]


def test_bad_input_gets_clear_messages(client):
    fresh = Client(client.src, verbose=False)  # a session that has run nothing yet
    for endpoint in ("/compare_report", "/compare_png", "/occlusion_png"):
        with pytest.raises(AppError, match="nothing to download yet: run this tab first"):
            fresh.predict(api_name=endpoint)
    with pytest.raises(AppError, match="no model selected"):
        client.predict(handle_file(SAME_A), handle_file(OTHER), 1, 1, [], 16, 8, api_name="/compare")
    with pytest.raises(AppError, match="stride 20 px: choose 2 to the patch size"):
        client.predict(handle_file(SAME_A), handle_file(OTHER), 1, 1, [REFERENCE], 16, 20, api_name="/compare")
    with pytest.raises(AppError, match="unknown model.*no-such-model"):
        client.predict(handle_file(SAME_A), handle_file(OTHER), 1, 1, ["no-such-model"], 16, 8, api_name="/compare")


@pytest.mark.fast
def test_html_report_as_a_python_function(tmp_path):
    """analysis.save_report on real faces: self-contained, the numbers in it, text escaped."""
    faces = [np.asarray(Image.open(p).convert("RGB").resize((112, 112))) for p in (SAME_A, SAME_B)]
    figure = analysis.occlusion_figure(analysis.Occlusion(
        "m", 16, 8, 0.5, np.zeros((13, 13)), np.zeros((112, 112), np.float32), {}, faces[0], 0.1))
    path = analysis.save_report(tmp_path / "r.html", "a <pair>", [
        Images("faces", [(faces[0], "A"), (faces[1], "B & C")]), Table("numbers", ["model", "cos"], [["m", 0.123456]]),
        Figure("occlusion", figure)], data={"cos": 0.123456})
    page = path.read_text(encoding="utf-8")
    assert_self_contained(page, images=2)
    assert "<title>a &lt;pair&gt;</title>" in page and "B &amp; C" in page and "<td>0.1235</td>" in page
    assert '{"cos": 0.123456}' in page
