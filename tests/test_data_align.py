"""Alignment: detected landmarks land on the ArcFace template, checked by re-detection."""
import cv2
import numpy as np
import pytest

from zoo.data import TEMPLATE_112, load_image, similarity_transform
from zoo.data.align import landmarks_from_68, model_files

FRONTAL = ["lfw/images/Zico/Zico_0001.jpg", "lfw/images/Abel_Pacheco/Abel_Pacheco_0002.jpg",
           "lfw/images/Aaron_Peirsol/Aaron_Peirsol_0003.jpg", "cfp/Data/Images/001/frontal/05.jpg",
           "cfp/Data/Images/250/frontal/02.jpg"]


@pytest.fixture(scope="module")
def aligned(data_root, face_aligner):
    return {name: face_aligner.align(load_image(data_root / name)) for name in FRONTAL}


@pytest.mark.fast
def test_model_files_ship_with_the_package():
    assert all(path.stat().st_size > 1000 for path in model_files().values())


@pytest.mark.fast
def test_similarity_transform_recovers_a_known_one():
    angle, scale, shift = np.deg2rad(12.0), 1.7, np.array([5.0, -3.0])
    rotation = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    moved = scale * TEMPLATE_112 @ rotation.T + shift
    matrix = similarity_transform(TEMPLATE_112, moved)
    assert np.allclose(matrix[:, :2], scale * rotation) and np.allclose(matrix[:, 2], shift)


@pytest.mark.fast
def test_five_points_from_68():
    points = np.arange(136, dtype=float).reshape(68, 2)
    five = landmarks_from_68(points)
    assert np.allclose(five[0], points[36:42].mean(0)) and np.allclose(five[2], points[30])
    assert np.allclose(five[3:], points[[48, 54]])


def test_real_faces_align_onto_the_template(aligned, face_aligner):
    errors = []
    for name, face in aligned.items():
        assert face.method == "landmarks", name
        assert face.image.shape == (112, 112, 3) and face.image.dtype == np.uint8
        redetected = face_aligner.detect(face.image)
        assert redetected, f"no face found again in the aligned crop of {name}"
        errors.append(np.linalg.norm(redetected[0].landmarks[:2] - TEMPLATE_112[:2], axis=1))
    errors = np.array(errors)
    assert np.median(errors) < 3.0, errors  # eye centres, pixels at 112x112
    assert errors.max() < 6.0, errors


def test_profile_face_is_found_by_the_cnn_stage(data_root, face_aligner):
    image = load_image(data_root / "cfp/Data/Images/001/profile/01.jpg")
    detections = face_aligner.detect(image)
    assert detections and detections[0].detector == "cnn"


def test_already_aligned_crops_pass_through(aligned, face_aligner):
    crop = next(iter(aligned.values())).image
    face = face_aligner.align(crop)
    assert face.method == "pre-aligned" and np.array_equal(face.image, crop)
    assert face_aligner.align(crop, assume_aligned=False).method == "landmarks"


def test_no_face_falls_back_to_centre_crop(face_aligner):
    image = np.full((60, 80, 3), 128, np.uint8)
    image[:, 30:50] = 30  # the centre square differs from the sides
    face = face_aligner.align(image)
    assert face.fallback and face.method == "center-crop" and face.detection is None
    assert face.image.shape == (112, 112, 3) and face.image[56, 56, 0] == 30


def test_largest_of_several_faces_is_chosen_and_all_are_exposed(data_root, face_aligner):
    big = load_image(data_root / FRONTAL[0])
    small = cv2.resize(load_image(data_root / FRONTAL[3]), None, fx=0.7, fy=0.7, interpolation=cv2.INTER_AREA)
    canvas = np.full((220, 400, 3), 90, np.uint8)
    canvas[20:20 + big.shape[0], 10:10 + big.shape[1]] = big
    canvas[60:60 + small.shape[0], 250:250 + small.shape[1]] = small
    detections = face_aligner.detect(canvas)
    assert len(detections) == 2
    assert detections[0].area > detections[1].area and detections[0].box[0] < 200
    chosen = face_aligner.align(canvas)
    other = face_aligner.align(canvas, detection=detections[1])
    alone = face_aligner.align(big).image.astype(float)
    assert np.abs(chosen.image - alone).mean() < np.abs(other.image - alone).mean()
