"""Training data: an InsightFace .rec written here from real LFW faces streams every face once
per epoch, split between processes as DistributedSampler splits it, through DataLoader workers;
a training step from the stream equals one from the same faces packed; folders of aligned
crops stream too; an epoch resumed mid-way continues the very order."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DistributedSampler

from faces import lfw_identities
from train.config import load_recipe
from train.data import FolderFaces, PackedFaces, RecordFaces, StepBatches, open_training_set, training_loader
from train.engine import Trainer
from zoo.data import DataError, write_insightface_rec

PEOPLE = 24  # one face each, so a label names its face


@pytest.fixture(scope="module")
def faces():
    images, labels = lfw_identities(people=PEOPLE, per_person=1)
    return images, labels


@pytest.fixture(scope="module")
def rec(faces, tmp_path_factory):
    folder = tmp_path_factory.mktemp("rec")
    write_insightface_rec(folder / "train.rec", folder / "train.idx", zip(*faces))
    return folder / "train.rec"


def test_the_stream_gives_every_face_once_per_epoch_split_between_processes(rec):
    data = open_training_set(rec)
    assert isinstance(data, RecordFaces) and data.num_classes == PEOPLE and not data.in_memory
    decoded = {label: data.face(label) for label in range(PEOPLE)}  # the .rec keeps the label order
    epochs = {}
    for rank in (0, 1):
        order = StepBatches(data, batch=4, seed=5, rank=rank, world=2)
        assert order.steps_per_epoch == 3
        loader = iter(training_loader(data, order, workers=2, pin=False))
        for epoch in (0, 1):
            sampler = DistributedSampler(data, num_replicas=2, rank=rank, shuffle=True, seed=5, drop_last=True)
            sampler.set_epoch(epoch)
            streamed = []
            for _ in range(order.steps_per_epoch):
                batch_faces, labels = next(loader)
                assert batch_faces.dtype == torch.uint8 and batch_faces.shape == (4, 112, 112, 3)
                for face, label in zip(batch_faces, labels.tolist()):
                    assert np.array_equal(face.numpy(), decoded[label])
                streamed += labels.tolist()
            assert streamed == list(sampler)  # DistributedSampler's share for this rank and epoch
            epochs.setdefault(epoch, []).extend(streamed)
    for epoch, labels in epochs.items():
        assert sorted(labels) == list(range(PEOPLE)), epoch  # every face once, across the two processes
    assert epochs[0] != epochs[1]  # a new permutation each epoch


@pytest.mark.fast
def test_an_epoch_resumed_mid_way_continues_the_same_order():
    data = range(30)
    uninterrupted = StepBatches(data, batch=4, seed=1)
    assert uninterrupted.steps_per_epoch == 7
    first = [batch for batch, _ in zip(uninterrupted, range(20))]
    resumed = [batch for batch, _ in zip(StepBatches(data, batch=4, seed=1, start=9), range(11))]
    assert resumed == first[9:]
    epochs = first[:7], first[7:14]
    assert all(len(set(sum(epoch, []))) == 28 for epoch in epochs) and epochs[0] != epochs[1]


STEP = ["model.name='ir18'", "model.width=0.25", "model.head='gdc'", "optim.batch_size=8", "run.max_steps=2",
        "run.checkpoint_every=1000"]


def test_a_step_from_the_stream_equals_one_from_the_same_faces_packed(rec, tmp_path):
    stream = RecordFaces(rec)
    packed = PackedFaces(tmp_path / "same.npz", *next(stream.in_order(len(stream))))
    weights = {}
    for name, data, workers in (("stream", stream, 2), ("packed", packed, 0)):
        config = load_recipe("baseline", [*STEP, f"run.workers={workers}"])
        trainer = Trainer(config, data, tmp_path / name, device="cpu", progress=False)
        trainer.fit()
        weights[name] = trainer.model.state_dict()
    assert all(torch.equal(weights["stream"][key], weights["packed"][key]) for key in weights["packed"])


@pytest.mark.fast
def test_a_folder_of_aligned_crops_streams_and_refuses_unaligned_photos(faces, tmp_path):
    images, labels = faces
    for image, label in list(zip(images, labels))[:6]:
        (tmp_path / f"person{label:02d}").mkdir()
        Image.fromarray(image).save(tmp_path / f"person{label:02d}" / "face.png")  # lossless
    data = open_training_set(tmp_path)
    assert isinstance(data, FolderFaces) and len(data) == 6 and data.num_classes == 6
    streamed, streamed_labels = next(data.in_order(6))
    assert np.array_equal(streamed.numpy(), images[:6]) and streamed_labels.tolist() == list(range(6))
    Image.fromarray(images[0]).resize((100, 120)).save(tmp_path / "person00" / "face.png")
    with pytest.raises(DataError, match=r"person00/face\.png: 100x120, not an aligned 112x112 crop"):
        next(data.in_order(6))


@pytest.mark.fast
def test_unknown_training_sets_are_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such training set"):
        open_training_set(tmp_path / "missing.npz")
    (tmp_path / "faces.h5").write_bytes(b"")
    with pytest.raises(ValueError, match=r"faces\.h5: training sets are \.npz, \.rec files"):
        open_training_set(tmp_path / "faces.h5")
