"""NPCFace's hard positive-negative correlation on hand-built cases with known answers."""
from __future__ import annotations

import numpy as np
import pytest

import analysis as A

pytestmark = pytest.mark.fast  # needs no face data: the fast tier (pytest -m fast)

LINE = ([0.5, 0.6, 0.7, 0.8, 0.9], [0.2, 0.3, 0.4, 0.5, 0.6])  # r = +1
ANTI = ([0.5, 0.6, 0.7, 0.8, 0.9], [0.45, 0.4, 0.35, 0.3, 0.25])  # r = -1
TEXTBOOK = ([0.62, 0.64, 0.66, 0.68, 0.70], [0.34, 0.32, 0.38, 0.36, 0.40])  # x = 1..5, y = 2,1,4,3,5: r = 0.8


def test_pearson_on_hand_built_cases():
    assert A.pearson(*LINE) == pytest.approx(1.0)
    assert A.pearson(*ANTI) == pytest.approx(-1.0)
    assert A.pearson(*TEXTBOOK) == pytest.approx(0.8)
    assert np.isnan(A.pearson([0.1, 0.2], [0.3, 0.1])) and np.isnan(A.pearson([1, 2, 3], [5, 5, 5]))


@pytest.mark.parametrize("pairs, r", [(LINE, 1.0), (ANTI, -1.0), (TEXTBOOK, 0.8)])
def test_centre_distances_find_hard_samples_and_their_correlation(pairs, r):
    # Centres e1 (class 0) and e2 (class 1). A class-0 sample (c0, c1, z) has d_own = 1 - c0 and
    # d_nearest = 1 - c1; hard ones get d_nearest < d_own. Easy samples sit on the centres.
    d_own, d_nearest = map(np.asarray, pairs)
    c0, c1 = 1 - d_own, 1 - d_nearest
    hard = np.stack([c0, c1, np.sqrt(1 - c0 ** 2 - c1 ** 2)], axis=1)
    easy = np.array([[1.0, 0, 0], [0.9, 0.1, 0.4], [0, 1.0, 0], [0.2, 0.95, 0.1]])
    data = A.centre_distances(np.r_[hard, easy], [0] * 5 + [0, 0, 1, 1], centres=np.eye(3)[:2])
    assert data.hard.tolist() == [True] * 5 + [False] * 4
    assert np.allclose(data.d_own[:5], d_own) and np.allclose(data.d_nearest[:5], d_nearest)
    assert data.r == pytest.approx(r)
