"""InsightFace RecordIO without mxnet: a .rec/.idx built here from real LFW faces."""
import struct

import numpy as np
import pytest

from zoo.data import FormatError, MissingFileError, RecordIODataset, RecordIOReader, RecordIOWriter, load_image
from zoo.data.align import center_crop
from zoo.data.recordio import MAGIC, IRHeader, pack_record, unpack_record, write_insightface_rec


@pytest.fixture(scope="module")
def lfw_samples(data_root):
    people = ["Aaron_Peirsol", "Zico", "Abel_Pacheco"]
    samples = []
    for label, name in enumerate(people):
        for path in sorted((data_root / "lfw" / "images" / name).glob("*.jpg"))[:3]:
            samples.append((center_crop(load_image(path)), label))
    return samples


def test_insightface_layout_roundtrip(tmp_path, lfw_samples):
    rec, idx = tmp_path / "train.rec", tmp_path / "train.idx"
    assert write_insightface_rec(rec, idx, lfw_samples, quality=100) == len(lfw_samples)
    dataset = RecordIODataset(rec)  # .idx found beside the .rec
    assert len(dataset) == len(lfw_samples)
    assert dataset.num_classes == 3
    assert sorted(dataset.labels.tolist()) == sorted(label for _, label in lfw_samples)
    for i, (original, label) in enumerate(lfw_samples):
        image, read_label = dataset[i]
        assert read_label == label and image.shape == (112, 112, 3)
        assert np.abs(image.astype(int) - original).mean() < 3  # JPEG q100
    header, _ = unpack_record(dataset.reader.read(0))
    assert header.flag == 2 and header.label.tolist() == [len(lfw_samples) + 1, len(lfw_samples) + 4]
    dataset.close()


def test_header_layout_is_mxnet_irheader():
    packed = pack_record(IRHeader(0, 7.0, 3, 0), b"abc")
    assert struct.unpack("<IfQQ", packed[:24]) == (0, 7.0, 3, 0) and packed[24:] == b"abc"
    packed = pack_record(IRHeader(2, np.array([1.0, 5.0]), 0, 0), b"")
    assert struct.unpack("<IfQQ", packed[:24])[0] == 2
    assert np.frombuffer(packed[24:32], "<f4").tolist() == [1.0, 5.0]


@pytest.mark.fast
def test_payload_containing_the_magic_is_split_and_rejoined(tmp_path):
    magic = struct.pack("<I", MAGIC)
    payload = b"abcd" + magic + b"efgh" + magic + b"xy"
    rec, idx = tmp_path / "m.rec", tmp_path / "m.idx"
    with RecordIOWriter(rec, idx) as writer:
        writer.write(0, payload)
        writer.write(1, b"tail")
    raw = rec.read_bytes()
    flags = [struct.unpack_from("<I", raw, 4)[0] >> 29]
    assert flags == [1]  # first part of a split record, as dmlc-core writes it
    with RecordIOReader(rec, idx) as reader:
        assert reader.read(0) == payload
        assert reader.read(1) == b"tail"
        assert reader.read_head(0, 6) == payload[:6]  # the head spans the split: rejoined too


@pytest.mark.fast
def test_bad_magic_names_file_and_offset(tmp_path):
    rec, idx = tmp_path / "bad.rec", tmp_path / "bad.idx"
    rec.write_bytes(b"\x00" * 16)
    idx.write_text("0\t0\n")
    with RecordIOReader(rec, idx) as reader, pytest.raises(FormatError, match=r"bad\.rec \(record 0 at byte 0\).*bad magic"):
        reader.read(0)


@pytest.mark.fast
def test_malformed_index_line_names_file_and_line(tmp_path):
    rec, idx = tmp_path / "x.rec", tmp_path / "x.idx"
    rec.write_bytes(b"")
    idx.write_text("0\t0\nnot-a-number\n")
    with pytest.raises(FormatError, match=r"x\.idx:2:"):
        RecordIOReader(rec, idx)


@pytest.mark.fast
def test_missing_index_names_it(tmp_path):
    (tmp_path / "lonely.rec").write_bytes(b"")
    with pytest.raises(MissingFileError, match=r"lonely\.idx"):
        RecordIODataset(tmp_path / "lonely.rec")


def test_truncated_record_is_reported(tmp_path, lfw_samples):
    rec, idx = tmp_path / "t.rec", tmp_path / "t.idx"
    write_insightface_rec(rec, idx, lfw_samples[:2])
    data = rec.read_bytes()
    rec.write_bytes(data[:-100])  # cuts the identity record and the end of the second image
    dataset = RecordIODataset(rec, idx)  # labels come from the intact headers
    assert dataset[0][0].shape == (112, 112, 3)
    with pytest.raises(FormatError, match=r"t\.rec \(record 2 at byte \d+\).*ends inside a record"):
        dataset[1]


def test_file_without_insightface_header_reads_every_key(tmp_path, lfw_samples):
    from zoo.data.images import encode_jpeg

    rec, idx = tmp_path / "plain.rec", tmp_path / "plain.idx"
    with RecordIOWriter(rec, idx) as writer:
        for key, (image, label) in enumerate(lfw_samples[:3]):
            writer.write(key, pack_record(IRHeader(0, float(label + 10), key, 0), encode_jpeg(image)))
    dataset = RecordIODataset(rec, idx)
    assert len(dataset) == 3 and dataset.labels.tolist() == [10, 10, 10]
