"""Bring your own faces: a folder of PGM and 16-bit PNG people, a faceless image, make_pairs, and
one evaluation of a zoo model and a peer whose table lines up (issue: evaluating a user's set)."""
from __future__ import annotations

import csv
import gzip
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from zoo.data import EmptyDatasetError, load_image, read_image_folder, read_plain_pairs
from zoo.data.images import IMAGE_EXTENSIONS
from zoo.evaluate import main as evaluate_main
from zoo.make_pairs import main as make_pairs_main, make_pairs

PEOPLE = 24


@pytest.fixture(scope="module")
def own_faces(tmp_path_factory, data_root) -> Path:
    """24 LFW people with 3 images each, saved the way other face sets ship: odd people as
    8-bit grayscale PGM, even ones as 16-bit grayscale PNG; plus one faceless PGM."""
    root = tmp_path_factory.mktemp("own") / "faces"
    lfw = data_root / "lfw" / "images"
    people = [p for p in sorted(lfw.iterdir()) if len(list(p.glob("*.jpg"))) >= 3][:PEOPLE]
    for k, person in enumerate(people):
        (root / person.name).mkdir(parents=True)
        for photo in sorted(person.glob("*.jpg"))[:3]:
            gray = Image.open(photo).convert("L")
            if k % 2:
                gray.save(root / person.name / f"{photo.stem}.pgm")
            else:  # 16 bits per pixel, the full range used
                Image.fromarray(np.asarray(gray).astype(np.uint16) * 257).save(root / person.name / f"{photo.stem}.png")
    background = Image.open(data_root / "celeba" / "images" / "000711.jpg").convert("L").crop((0, 0, 40, 200))
    background.resize((120, 120)).save(root / people[0].name / "no_face.pgm")
    return root


def test_one_reader_takes_pgm_and_16_bit_png(own_faces):
    assert {".pgm", ".png", ".jpg", ".tif", ".ppm"} <= IMAGE_EXTENSIONS
    images = read_image_folder(own_faces)
    assert len(images) == PEOPLE * 3 + 1 and len(images.classes) == PEOPLE
    sixteen = next(p for p in images.paths if p.suffix == ".png")
    assert Image.open(sixteen).mode.startswith("I")  # really 16-bit on disk
    pixels = load_image(sixteen)
    assert pixels.shape[2] == 3 and pixels.dtype == np.uint8 and pixels.max() > 200  # rescaled, not clipped


def test_an_empty_folder_says_what_it_found_and_what_it_wants(tmp_path):
    (tmp_path / "alice").mkdir()
    (tmp_path / "alice" / "notes.txt").write_text("no faces here")
    (tmp_path / "alice" / "scan.xyz").write_bytes(b"\0")
    with pytest.raises(EmptyDatasetError, match=r"expected ROOT/IDENTITY/IMAGE.*found 1 sub-folder.*\.txt"):
        read_image_folder(tmp_path)
    (tmp_path / "loose.pgm").write_bytes(b"P5")
    with pytest.raises(EmptyDatasetError, match="found 1 sub-folder"):
        read_image_folder(tmp_path)


def test_make_pairs_is_balanced_seeded_and_identity_disjoint(own_faces, tmp_path):
    pairs = make_pairs(own_faces, 30, seed=3)
    assert sum(same for *_, same, _ in pairs) == 30 and len(pairs) == 60
    people_of_fold = {}
    for a, b, same, fold in pairs:
        assert (a.parent == b.parent) == same and a != b
        people_of_fold.setdefault(fold, set()).update({a.parent.name, b.parent.name})
    assert sorted(people_of_fold) == list(range(10))
    folds = list(people_of_fold.values())
    assert all(not (x & y) for i, x in enumerate(folds) for y in folds[i + 1:])  # no person in two folds
    assert make_pairs(own_faces, 30, seed=3) == pairs and make_pairs(own_faces, 30, seed=4) != pairs
    out = tmp_path / "lists" / "mine.txt"  # paths are written relative to the list's own folder
    assert make_pairs_main([str(own_faces), "--pairs", "30", "--seed", "3", "--out", str(out)]) == 0
    read = read_plain_pairs(out)
    assert read.name == "mine" and [p.resolve() for p in read.first] == [a.resolve() for a, *_ in pairs]
    assert read.folds.tolist() == [fold for *_, fold in pairs]  # the FOLD column is honoured
    assert all(line.startswith("../") for line in out.read_text().splitlines()[1:])  # relative, not absolute
    assert make_pairs_main([str(own_faces), "--pairs", "500", "--out", str(tmp_path / "x.txt")]) == 2


def test_two_commands_evaluate_a_zoo_model_and_a_peer_in_one_table(own_faces, tmp_path, capsys):
    listing = own_faces / "pairs.txt"
    assert make_pairs_main([str(own_faces), "--pairs", "40"]) == 0
    capsys.readouterr()
    faceless = str(own_faces / sorted(p.name for p in own_faces.iterdir() if p.is_dir())[0] / "no_face.pgm")
    if faceless not in listing.read_text():  # make the faceless image part of the list
        listing.write_text(listing.read_text() + f"{Path(faceless).relative_to(own_faces)} "
                           f"{next(p for p in read_image_folder(own_faces).paths if p.suffix == '.pgm').relative_to(own_faces)} 0 0\n")
    code = evaluate_main(["--model", "mobilefacenet.y1,peer:sface", "--protocol", str(listing), "--out-dir",
                          str(tmp_path / "results"), "--preview", str(tmp_path / "preview"), "--workers", "1",
                          "--pairs",
                          "--cache-dir", str(tmp_path / "cache")])
    out, err = capsys.readouterr()
    assert code == 0
    header, first, second = out.splitlines()[:3]
    assert header.split()[:3] == ["model", "protocol", "condition"] and header.split()[-3:] == \
        ["TAR@0.1", "TAR@0.01", "TAR@0.001"]
    assert first.split()[:2] == ["mobilefacenet.y1", "pairs"] and second.split()[:2] == ["peer:sface", "pairs"]
    assert first.split()[-1] == "n/a" and second.split()[-1] == "n/a"  # 41 negatives cannot give FAR 1e-3
    assert "1 without a detected face" in err and "aligned by yunet" in err
    for name in ("mobilefacenet.y1", "peer-sface"):
        entry = json.loads((tmp_path / "results" / f"{name}.json").read_text())["protocols"]["pairs"]
        assert entry["fallback_images"] == [faceless] and entry["fallback_alignments"] == 1
        assert entry["conditions"]["blur0"]["accuracy"] > 0.85  # grayscale, 16-bit: still recognised
        rows = list(csv.DictReader(gzip.open(tmp_path / "results" / f"{name}.pairs.csv.gz", "rt")))
        blur0 = entry["conditions"]["blur0"]
        assert len(rows) == blur0["pairs"] and {r["line"].rsplit(":", 1)[0] for r in rows} == {str(listing)}
        for fold, fold_accuracy in enumerate(blur0["fold_accuracies"]):  # the rows are the metrics' own verdicts
            mine = [r for r in rows if int(r["fold"]) == fold]
            assert [float(r["threshold"]) for r in mine] == pytest.approx([blur0["fold_thresholds"][fold]] * len(mine),
                                                                          abs=1e-6)
            assert np.mean([r["correct"] == "True" for r in mine]) == pytest.approx(fold_accuracy)
    preview = Image.open(tmp_path / "preview" / "pairs-alignment.png")
    assert preview.width > 1000 and preview.height > 2 * 112
    code = evaluate_main(["--model", "mobilefacenet.y1", "--protocol", str(listing), "--max-fallback", "0.001",
                          "--quiet", "--cache-dir", str(tmp_path / "cache")])
    assert code == 2 and "above --max-fallback 0.001" in capsys.readouterr().err
