"""Hostile input for the command lines: every bad file gets a clear message naming it, odd but
valid images just work, and a failed run leaves no partial output behind.

Every hostile file is generated here from one real LFW photo (or twenty of them). The
evaluation runs in-process (fast); the broken-checkpoint runs go through a real
`python -m zoo.evaluate` process, because "exit code 2 and no traceback" is about what a
user's terminal shows.
"""
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from analysis.__main__ import main as analysis_main
import zoo
from zoo.data import CropCache
from zoo.evaluate import embed_images, main as evaluate_main

from hostile import break_checkpoints, write_hostile_files

REPO = Path(__file__).resolve().parents[1]
UNREADABLE = {  # file -> what the skip reason must say
    "not_image.jpg": "not an image",
    "truncated.jpg": "truncated",
    "empty.jpg": "not an image|empty",
}
VALID = ("huge.jpg", "twenty.jpg", "gray.png", "rgba.png", "cmyk.jpg", "exif.jpg")


def _no_leftovers(folder: Path) -> list:
    """Temporary files an interrupted atomic write would leave (`.NAME.*.tmp`)."""
    return [p.name for p in folder.iterdir() if p.name.endswith(".tmp")]


@pytest.fixture(scope="module")
def hostile(tmp_path_factory, data_root):
    folder = tmp_path_factory.mktemp("hostile")
    lfw = data_root / "lfw" / "images"
    photo = write_hostile_files(folder, lfw)
    partner = lfw / "Zico" / "Zico_0002.jpg"
    lines = [f"{folder / name} {partner} 1" for name in (*UNREADABLE, "noface.jpg", *VALID)]
    lines += [f"{photo} {partner} 1", f"{photo} {lfw}/Abel_Pacheco/Abel_Pacheco_0001.jpg 0"]
    pairs = folder / "pairs.txt"
    pairs.write_text("\n".join(lines) + "\n")
    return {"folder": folder, "photo": photo, "pairs": pairs, "cache": folder / "cache", "lines": lines}


def _evaluate(capsys, *args):
    code = evaluate_main([*args, "--quiet"])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    torch.manual_seed(0)
    return zoo.save(zoo.build("ir18", width=0.25), tmp_path_factory.mktemp("zoo") / "tiny-ir18")


@pytest.fixture(scope="module")
def evaluation(hostile):
    """One evaluation of every hostile pair (plus two good ones): (exit code, protocol entry, --out)."""
    out = hostile["folder"] / "results" / "eval.json"
    code = evaluate_main(["--model", "ir18", "--build-option", "width=0.25", "--protocol", str(hostile["pairs"]),
                          "--cache-dir", str(hostile["cache"]), "--out", str(out), "--quiet"])
    entry = json.loads(out.read_text())["protocols"][Path(hostile["pairs"]).stem] if code == 0 else None
    return code, entry, out


def test_unreadable_images_are_skipped_with_their_name_and_reason(hostile, evaluation):
    code, entry, out = evaluation
    assert code == 0
    reasons = {Path(s["reason"].split(":")[0]).name: s for s in entry["skipped"]}
    assert sorted(reasons) == sorted(UNREADABLE)
    for line, (name, expected) in enumerate(UNREADABLE.items(), 1):
        assert reasons[name]["pair"] == f"{hostile['pairs']}:{line}"
        assert any(word in reasons[name]["reason"] for word in expected.split("|")), reasons[name]["reason"]
    # the face-less image falls back to a centre crop and is reported as such, nothing else does
    assert entry["fallback_alignments"] == 1 and entry["fallback_images"] == [str(hostile["folder"] / "noface.jpg")]
    assert entry["conditions"]["blur0"]["pairs"] == len(hostile["lines"]) - len(UNREADABLE)
    assert _no_leftovers(out.parent) == []


def test_odd_but_valid_images_align_like_the_plain_photo(hostile, evaluation):
    """The crops the evaluation made (read back from its crop cache) against the plain photo's."""
    assert evaluation[0] == 0
    cache = CropCache(hostile["cache"])
    reference = cache.load(hostile["photo"])
    assert reference is not None and reference.method == "landmarks"
    crops = {name: cache.load(hostile["folder"] / name) for name in VALID}
    assert all(crop is not None and crop.method == "landmarks" for crop in crops.values()), \
        {n: c and c.method for n, c in crops.items()}
    difference = {n: np.abs(c.image.astype(float) - reference.image.astype(float)).mean() for n, c in crops.items()}
    assert difference["exif.jpg"] < 8 and difference["cmyk.jpg"] < 8  # EXIF applied; CMYK converted
    gray_reference = np.asarray(Image.fromarray(reference.image).convert("L"), dtype=float)
    gray = np.asarray(Image.fromarray(crops["gray.png"].image).convert("L"), dtype=float)
    # YuNet, the default aligner, sees colour: on the grayscale copy its landmarks move a few
    # pixels (22 grey levels apart here; the dlib cascade stayed under 8). What matters is that
    # it is still the same face, aligned well enough for the reference model to say so.
    assert np.abs(gray - gray_reference).mean() < 30
    colour, grey = embed_images(zoo.load("mobilefacenet.y1"), np.stack([reference.image, crops["gray.png"].image]))
    assert float(colour @ grey) > 0.8, float(colour @ grey)
    assert np.ptp(crops["twenty.jpg"].image) > 100  # a face of the twenty, not a blank border


def test_a_run_with_nothing_usable_fails_cleanly_and_writes_nothing(hostile, capsys):
    folder = hostile["folder"]
    bad_pairs = folder / "all_bad.txt"
    bad_pairs.write_text(f"{folder / 'empty.jpg'} {folder / 'truncated.jpg'} 1\n"
                         f"{folder / 'not_image.jpg'} {folder / 'empty.jpg'} 0\n")
    out = folder / "failed" / "eval.json"
    for extra in ([], ["--strict"]):
        code, stdout, stderr = _evaluate(capsys, "--model", "ir18", "--build-option", "width=0.25",
                                         "--protocol", str(bad_pairs), "--cache-dir", str(hostile["cache"]),
                                         "--out", str(out), "--csv", str(out.with_suffix(".csv")),
                                         "--figures", str(folder / "failed" / "figures"), *extra)
        assert code == 2 and stderr.startswith("error: ") and "empty.jpg" in stderr
        assert ("pair needs an unusable image" if extra else "every pair of the protocol was skipped") in stderr
        assert not (folder / "failed").exists()


def test_broken_checkpoints_are_refused_with_a_clear_message(hostile, tiny_model, tmp_path):
    broken = break_checkpoints(tiny_model, tmp_path)
    for folder, message in broken.items():
        with pytest.raises(zoo.CheckpointError, match=message):
            zoo.load(folder)
    pairs = hostile["pairs"].with_name("good_pairs.txt")
    pairs.write_text("\n".join(hostile["lines"][-2:]) + "\n")
    for folder in list(broken)[::2]:  # one of each kind through a real process
        out = tmp_path / f"{folder.name}.json"
        run = subprocess.run([sys.executable, "-m", "zoo.evaluate", "--model", str(folder), "--protocol", str(pairs),
                              "--cache-dir", str(hostile["cache"]), "--out", str(out), "--quiet"],
                             cwd=REPO, capture_output=True, text=True, timeout=120)
        assert run.returncode == 2, run.stderr
        assert run.stderr.startswith("error: ") and broken[folder] in run.stderr
        assert "Traceback" not in run.stderr and not out.exists()


def test_analysis_refuses_bad_images_and_broken_models(hostile, tiny_model, tmp_path, capsys):
    out = tmp_path / "scale-map"
    code = analysis_main(["scale-map", "--model", "scan-ir18", "--width", "0.25", "--image",
                          str(hostile["folder"] / "truncated.jpg"), str(hostile["folder"] / "empty.jpg"),
                          "--out", str(out), "--no-png"])
    stderr = capsys.readouterr().err
    assert code == 2 and "error: none of the images could be read" in stderr
    assert "truncated.jpg" in stderr and "empty.jpg" in stderr and not out.exists()

    broken = break_checkpoints(tiny_model, tmp_path / "broken")
    for folder, message in broken.items():
        code = analysis_main(["gradcam", "--model", str(folder), "--image", str(hostile["photo"]),
                              str(hostile["folder"] / "cmyk.jpg"), "--out", str(out), "--no-png"])
        stderr = capsys.readouterr().err
        assert code == 2 and stderr.startswith("error: ") and message in stderr and not out.exists()
