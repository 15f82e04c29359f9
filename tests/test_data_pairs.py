"""Pair lists: the real LFW and CFP protocol files, plain lists, and malformed input."""
import numpy as np
import pytest

from zoo.data import (EmptyDatasetError, FormatError, MissingFileError, read_cfp_pairs, read_lfw_pairs,
                        read_pairs, read_plain_pairs, stratified_folds)


def test_lfw_view2_has_ten_folds_of_300_plus_300(data_root):
    pairs = read_lfw_pairs(data_root / "lfw" / "pairs.txt")
    assert len(pairs) == 6000
    for fold in range(10):
        in_fold = pairs.folds == fold
        assert in_fold.sum() == 600 and pairs.issame[in_fold].sum() == 300
    # First line after the header: "Abel_Pacheco 1 4".
    assert pairs.first[0].name == "Abel_Pacheco_0001.jpg" and pairs.second[0].name == "Abel_Pacheco_0004.jpg"
    assert pairs.issame[0] and pairs.where(0).endswith("pairs.txt:2")
    assert all(p.is_file() for p in pairs.images()[:50])


def test_lfw_view1_gets_stratified_folds(data_root):
    pairs = read_lfw_pairs(data_root / "lfw" / "pairsDevTest.txt")
    assert len(pairs) == 1000 and pairs.issame.sum() == 500
    assert np.bincount(pairs.folds).tolist() == [100] * 10
    assert pairs.folds[:50].tolist() == [0] * 50 and pairs.folds[450:500].tolist() == [9] * 50
    assert "Abdullah_Gul" in pairs.identities


def test_cfp_protocols(data_root):
    ff = read_cfp_pairs(data_root / "cfp", "FF")
    fp = read_cfp_pairs(data_root / "cfp", "FP")
    for pairs in (ff, fp):
        assert len(pairs) == 7000 and pairs.issame.sum() == 3500
        assert np.bincount(pairs.folds).tolist() == [700] * 10
    # FP/01/same.txt line 1 is "5,1": frontal image 5 and profile image 1 of person 001.
    assert fp.first[0].parts[-3:] == ("001", "frontal", "05.jpg")
    assert fp.second[0].parts[-3:] == ("001", "profile", "01.jpg")
    assert all(p.parent.name == "frontal" for p in ff.second)
    assert all(p.is_file() for p in fp.images())
    assert len(fp.identities) == 500 and "50_Cent" in fp.identities


def test_plain_list_relative_paths_and_flags(tmp_path, data_root):
    images = data_root / "lfw" / "images"
    listing = tmp_path / "my_pairs.txt"
    listing.write_text(
        "# a comment\n"
        f"{images}/Zico/Zico_0001.jpg {images}/Zico/Zico_0002.jpg 1\n"
        "\n"
        "a.jpg b.jpg false\n"
        "a.jpg c.jpg same\n"
        "b.jpg c.jpg 0\n")
    pairs = read_plain_pairs(listing)
    assert pairs.issame.tolist() == [True, False, True, False]
    assert pairs.first[1] == tmp_path / "a.jpg"
    assert pairs.where(3) == f"{listing}:6"
    assert read_pairs(listing).issame.tolist() == pairs.issame.tolist()  # format detected


def test_read_pairs_detects_lfw_format(data_root):
    assert len(read_pairs(data_root / "lfw" / "pairsDevTrain.txt")) == 2200


@pytest.mark.fast
def test_stratified_folds_by_hand():
    issame = np.array([1, 1, 1, 1, 0, 0, 0, 0, 0, 0], dtype=bool)
    assert stratified_folds(issame, 2).tolist() == [0, 0, 1, 1, 0, 0, 0, 1, 1, 1]


def test_subset_keeps_both_classes_in_every_fold(data_root):
    pairs = read_cfp_pairs(data_root / "cfp", "FP").subset(20)
    assert len(pairs) == 20
    for fold in range(10):
        assert sorted(pairs.issame[pairs.folds == fold].tolist()) == [False, True]


@pytest.mark.fast
@pytest.mark.parametrize("body, line, message", [
    ("2\nA 1 2\nB x 3\nA 1 B 1\nC 1 D 1\n", 3, "image number must be an integer"),
    ("2\nA 1 2\nB 1\nA 1 B 1\nC 1 D 1\n", 3, "same-person line"),
    ("1\nA 1 2\nA 1 B\n", 3, "different-person line"),
    ("1 2 3\nA 1 2\n", 1, "header"),
    ("1\nA 1 2\n", 1, "header promises"),
])
def test_malformed_lfw_lines_name_file_and_line(tmp_path, body, line, message):
    path = tmp_path / "pairs.txt"
    path.write_text(body)
    with pytest.raises(FormatError, match=rf"pairs\.txt:{line}: .*{message}"):
        read_lfw_pairs(path)


@pytest.mark.fast
@pytest.mark.parametrize("body, line", [("a.jpg b.jpg 1\na.jpg b.jpg maybe\n", 2), ("a.jpg 1\n", 1)])
def test_malformed_plain_lines_name_file_and_line(tmp_path, body, line):
    path = tmp_path / "list.txt"
    path.write_text(body)
    with pytest.raises(FormatError, match=rf"list\.txt:{line}: "):
        read_plain_pairs(path)


def test_malformed_cfp_line(tmp_path, data_root):
    import shutil

    root = tmp_path / "cfp"
    shutil.copytree(data_root / "cfp" / "Protocol", root / "Protocol")
    same = root / "Protocol" / "Split" / "FF" / "03" / "same.txt"
    same.write_text("1,2\n3;4\n")
    with pytest.raises(FormatError, match=r"FF/03/same\.txt:2: expected 'I,J'"):
        read_cfp_pairs(root, "FF")


@pytest.mark.fast
def test_missing_and_empty_lists(tmp_path):
    with pytest.raises(MissingFileError, match="gone.txt"):
        read_pairs(tmp_path / "gone.txt")
    empty = tmp_path / "empty.txt"
    empty.write_text("# only a comment\n\n")
    with pytest.raises(EmptyDatasetError, match="empty.txt"):
        read_pairs(empty)
    with pytest.raises(EmptyDatasetError, match="empty.txt"):
        read_plain_pairs(empty)


def test_tiny_subset_still_has_both_kinds(data_root):
    pairs = read_lfw_pairs(data_root / "lfw" / "pairsDevTest.txt").subset(6)
    assert len(pairs) == 6 and pairs.issame.sum() == 3 and pairs.folds.tolist() == [0, 1, 2, 0, 1, 2]
