"""The crop cache, batch alignment with bad files, and the prepare CLI's packed output."""
import os
import shutil

import numpy as np
import pytest

from train.prepare import main as prepare_main
from zoo.data import AlignedFace, CropCache, align_files


@pytest.fixture()
def small_folder(tmp_path, data_root):
    """Two LFW people (2 images each) plus one image with no face in it."""
    root = tmp_path / "faces"
    for name in ("Zico", "Abel_Pacheco"):
        (root / name).mkdir(parents=True)
        for source in sorted((data_root / "lfw" / "images" / name).glob("*.jpg"))[:2]:
            shutil.copy(source, root / name / source.name)
    from PIL import Image

    Image.new("RGB", (64, 64), (120, 120, 120)).save(root / "Zico" / "blank.png")
    return root


def test_cache_roundtrip_and_invalidation(tmp_path, small_folder, face_aligner):
    cache = CropCache(tmp_path / "cache", face_aligner)
    source = small_folder / "Zico" / "blank.png"
    first = cache.get(source)
    assert first.method == "center-crop"
    stored = cache.load(source)
    assert stored.method == "center-crop" and np.array_equal(stored.image, first.image)
    assert face_aligner.version in str(cache.path_for(source))
    stat = source.stat()
    os.utime(source, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))  # the file "changed"
    assert cache.load(source) is None


def test_align_files_reports_bad_files_and_keeps_going(tmp_path, small_folder, face_aligner):
    broken = small_folder / "Zico" / "broken.jpg"
    broken.write_bytes(b"\xff\xd8\xff\xe0 definitely not a whole jpeg")
    sources = sorted(small_folder.rglob("*.*")) + [small_folder / "missing.jpg"]
    cache = CropCache(tmp_path / "cache", face_aligner)
    result = align_files(sources, cache, progress=False)
    assert set(result.errors) == {broken, small_folder / "missing.jpg"}
    assert "broken.jpg" in str(result.errors[broken])
    assert len(result.paths) == 5 and result.images.shape == (5, 112, 112, 3)
    assert result.fallbacks == 1 and result.aligned_now == 5
    again = align_files(sources, cache, progress=False)
    assert again.aligned_now == 0 and np.array_equal(again.images, result.images)


def test_prepare_packs_a_training_folder(tmp_path, small_folder, capsys):
    out = tmp_path / "packed.npz"
    assert prepare_main(["--dataset", str(small_folder), "--out", str(out),
                         "--cache-dir", str(tmp_path / "cache"), "--quiet"]) == 0
    report = capsys.readouterr().out
    assert '"fallback_alignments": 1' in report and '"kept": 4' in report
    packed = np.load(out)  # no pickles needed
    assert packed["images"].shape == (4, 112, 112, 3) and packed["images"].dtype == np.uint8
    assert packed["classes"].tolist() == ["Abel_Pacheco", "Zico"]
    assert packed["labels"].tolist() == [0, 0, 1, 1]
    assert not any(p.endswith("blank.png") for p in packed["paths"])


@pytest.mark.fast
def test_prepare_reports_bad_input(tmp_path, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    assert prepare_main(["--dataset", str(empty), "--out", str(tmp_path / "x.npz")]) == 2
    assert f"{empty}: no identity folder" in capsys.readouterr().err
    assert not (tmp_path / "x.npz").exists()


@pytest.mark.fast
def test_aligned_face_fallback_flag():
    crop = np.zeros((112, 112, 3), np.uint8)
    assert AlignedFace(crop, "center-crop").fallback and not AlignedFace(crop, "landmarks").fallback


def test_prepare_packs_a_pair_protocol_with_its_pair_table(tmp_path, small_folder, capsys):
    listing = small_folder / "pairs.txt"
    listing.write_text("Zico/Zico_0001.jpg Zico/Zico_0002.jpg 1\n"
                       "Zico/Zico_0001.jpg Abel_Pacheco/Abel_Pacheco_0001.jpg 0\n"
                       "Zico/Zico_0002.jpg Zico/absent.jpg 0\n")
    out = tmp_path / "protocol.npz"
    assert prepare_main(["--dataset", str(listing), "--out", str(out),
                         "--cache-dir", str(tmp_path / "cache"), "--quiet"]) == 0
    assert '"pairs_with_unreadable_images": 1' in capsys.readouterr().out
    packed = np.load(out)
    assert packed["images"].shape == (3, 112, 112, 3)
    paths = [p.split("/")[-1] for p in packed["paths"]]
    first = [paths[i] for i in packed["pair_first"]]
    assert first == ["Zico_0001.jpg", "Zico_0001.jpg", "Zico_0002.jpg"]
    assert packed["pair_second"][2] == -1 and packed["issame"].tolist() == [True, False, False]


def test_parallel_alignment_matches_serial(tmp_path, small_folder, face_aligner):
    sources = sorted(small_folder.rglob("*.jpg"))
    serial = align_files(sources, CropCache(tmp_path / "serial", face_aligner), workers=1, progress=False)
    parallel = align_files(sources, CropCache(tmp_path / "parallel", face_aligner), workers=2, progress=False)
    assert parallel.paths == serial.paths and parallel.methods == serial.methods
    assert np.array_equal(parallel.images, serial.images)
