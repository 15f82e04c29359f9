"""Image-folder datasets, on LFW's own one-folder-per-person layout."""
import shutil

import numpy as np
import pytest

from zoo.data import EmptyDatasetError, MissingFileError, read_image_folder


def test_lfw_images_folder_reads_as_identities(data_root):
    dataset = read_image_folder(data_root / "lfw" / "images", min_images=20)
    # LFW's well-known count of people with at least 20 images.
    assert len(dataset.classes) == 62
    image, label = dataset[0]
    assert image.shape == (160, 160, 3)
    assert dataset.classes[label] == dataset.paths[0].parent.name
    counts = np.bincount(dataset.labels)
    assert counts.min() >= 20 and counts.sum() == len(dataset)


def test_small_folder_labels_follow_folder_names(tmp_path, data_root):
    for name in ("Zico", "Abel_Pacheco"):
        (tmp_path / name).mkdir()
        for source in sorted((data_root / "lfw" / "images" / name).glob("*.jpg"))[:2]:
            shutil.copy(source, tmp_path / name / source.name)
    (tmp_path / "Zico" / "notes.txt").write_text("ignored: not an image extension")
    dataset = read_image_folder(tmp_path)
    assert dataset.classes == ("Abel_Pacheco", "Zico")
    assert dataset.labels.tolist() == [0, 0, 1, 1]
    assert dataset.identities() == ["Abel_Pacheco", "Zico"]


@pytest.mark.fast
def test_missing_folder(tmp_path):
    with pytest.raises(MissingFileError, match="absent"):
        read_image_folder(tmp_path / "absent")


@pytest.mark.fast
def test_empty_folder_names_itself(tmp_path):
    (tmp_path / "someone").mkdir()
    with pytest.raises(EmptyDatasetError, match=str(tmp_path)):
        read_image_folder(tmp_path)
