"""The FaceScope-small protocol: sizes, and train/test identity disjointness."""
import numpy as np
import pytest

from zoo.data import DataError, TEST_PROTOCOLS, facescope_small_train, load_protocol
from zoo.data.protocols import assert_disjoint, cfp_names


@pytest.fixture(scope="module")
def train(data_root):
    return facescope_small_train(data_root)


def test_train_split_composition(train, data_root):
    overlap = set((data_root / "cfp_lfw_overlap.txt").read_text().split())
    lfw_people = [c for c in train.classes if not c.startswith("celeba_")]
    assert not overlap & set(lfw_people)
    counts = np.bincount(train.labels, minlength=len(train.classes))
    lfw_counts = [counts[i] for i, c in enumerate(train.classes) if not c.startswith("celeba_")]
    assert min(lfw_counts) >= 2
    assert sum(c.startswith("celeba_") for c in train.classes) == 299
    assert len(train) == sum(lfw_counts) + 6300
    assert all(p.is_file() for p in train.paths[::97])


def test_train_and_test_identities_never_mix(train, data_root):
    identities = set(train.identities())
    assert not identities & load_protocol("lfw-view1", data_root).identities
    assert not identities & set(cfp_names(data_root))
    assert not identities & load_protocol("cfp-fp", data_root).identities


@pytest.mark.fast
def test_disjointness_check_raises_on_a_leak():
    with pytest.raises(DataError, match="1 training identities also appear in lfw-view1, e.g. Zico"):
        assert_disjoint({"Zico", "celeba_1"}, {"Zico"}, "lfw-view1")


def test_named_test_protocols(data_root):
    sizes = {name: len(load_protocol(name, data_root)) for name in TEST_PROTOCOLS}
    assert sizes == {"lfw-view1": 1000, "cfp-ff": 7000, "cfp-fp": 7000}


def test_unknown_protocol_is_explained(data_root):
    with pytest.raises(DataError, match="not a protocol .*lfw-view1"):
        load_protocol("lfw-view9", data_root)
