"""Degradations: named levels, exact kernels, identical results for identical inputs."""
import math

import cv2
import numpy as np
import pytest

from zoo.data import BLUR_LEVELS, gaussian_blur, low_resolution, parse_degradation


@pytest.mark.fast
def test_names_parse_and_normalise():
    assert parse_degradation("blur2").amount == 2.0
    assert parse_degradation("blur2.0").name == "blur2"
    assert parse_degradation("BLUR1.5").name == "blur1.5"
    assert parse_degradation("lowres28").kind == "lowres"
    assert parse_degradation("clean").kind == "clean"
    assert [parse_degradation(f"blur{s}").name for s in BLUR_LEVELS] == ["blur0", "blur1", "blur2", "blur3", "blur4", "blur6"]
    with pytest.raises(ValueError, match="unknown degradation 'fog3'"):
        parse_degradation("fog3")


@pytest.mark.fast
def test_blur_of_an_impulse_is_the_sampled_gaussian():
    sigma = 2.0
    side = 2 * math.ceil(3 * sigma) + 1
    kernel = cv2.getGaussianKernel(side, sigma)
    expected = 255 * (kernel @ kernel.T)
    half = side // 2
    window = (slice(56 - half, 56 + half + 1), slice(56 - half, 56 + half + 1), 0)
    impulse = np.zeros((112, 112, 3), np.float32)
    impulse[56, 56] = 255
    exact = gaussian_blur(impulse, sigma)
    assert np.abs(exact[window] - expected).max() < 1e-3
    assert exact[..., 0].sum() == pytest.approx(255, rel=1e-5)  # kernel fits: nothing cut off
    # uint8 images go through OpenCV's fixed-point path: within one grey level.
    blurred = gaussian_blur(impulse.astype(np.uint8), sigma).astype(float)
    assert np.abs(blurred[window] - expected).max() < 1.0


def test_blur_zero_is_identity_and_levels_are_monotone(data_root, face_aligner):
    from zoo.data import load_image

    crop = face_aligner.align(load_image(data_root / "lfw" / "images" / "Zico" / "Zico_0001.jpg")).image
    assert np.array_equal(gaussian_blur(crop, 0), crop)
    sharpness = [cv2.Laplacian(gaussian_blur(crop, s), cv2.CV_64F).var() for s in BLUR_LEVELS]
    assert all(a > b for a, b in zip(sharpness, sharpness[1:]))
    degraded = parse_degradation("blur3")
    assert np.array_equal(degraded.apply(crop), degraded.apply(crop.copy()))  # deterministic


@pytest.mark.fast
def test_low_resolution_loses_detail_keeps_size():
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (112, 112, 3), dtype=np.uint8)
    out = low_resolution(image, 28)
    assert out.shape == image.shape
    small = cv2.resize(image, (28, 28), interpolation=cv2.INTER_LINEAR)
    assert np.array_equal(out, cv2.resize(small, (112, 112), interpolation=cv2.INTER_LINEAR))
    assert np.array_equal(low_resolution(image, 112), image)


@pytest.mark.fast
def test_batch_application_matches_single():
    rng = np.random.default_rng(1)
    batch = rng.integers(0, 256, (3, 112, 112, 3), dtype=np.uint8)
    blur = parse_degradation("blur1")
    assert np.array_equal(blur.apply_batch(batch)[2], blur.apply(batch[2]))
    assert parse_degradation("blur0").apply_batch(batch) is batch
