"""Occlusion sensitivity on real faces: where a trained model's match rests."""
from __future__ import annotations

import numpy as np
import pytest

import analysis as A
import zoo

REFERENCE = "mobilefacenet.y1"


def test_occlusion_sensitivity_maps_the_match_onto_the_face(data_root):
    """Greying the middle of a face costs its match to another photo of the person more than
    greying the border, for a trained model; the map is the mean drop of the covering patches."""
    from zoo.data import load_image, make_aligner

    align = make_aligner()
    person = sorted((data_root / "lfw" / "images" / "Colin_Powell").glob("*.jpg"))
    first, second = (align.align(load_image(p)).image for p in person[:2])
    model = zoo.load(REFERENCE)
    data = A.occlusion_sensitivity(model, first, second, patch=16, stride=8)
    assert data.drops.shape == (13, 13) and data.map.shape == (112, 112)
    assert data.map[40:90, 30:82].mean() > 3 * abs(np.r_[data.map[:10].ravel(), data.map[-10:].ravel()].mean())
    assert data.drops[0, 0] == pytest.approx(data.map[:8, :8].mean(), abs=1e-6)  # only one patch covers a corner
    assert set(data.landmarks) == set(A.landmark_boxes()) and max(data.landmarks.values()) > 0.02
    with pytest.raises(ValueError, match="stride must be 1 to the patch size"):
        A.occlusion_sensitivity(model, first, second, patch=8, stride=9)
