"""Training faces, in memory or streamed from disk, and the order that feeds each process.

Sources (`open_training_set`, by what the path is), each a map-style torch Dataset of aligned
112x112 uint8 RGB faces with their labels:
- `.npz` from `python -m train.prepare`: `PackedFaces`, every face in memory (the small-data path);
- InsightFace `train.rec` + `train.idx` (MS1M, WebFace42M, ...): `RecordFaces`, each face read
  and decoded when a batch asks for it, so a 5.8M-image set costs its labels, not its images;
- a folder of aligned crops, one sub-folder per identity: `FolderFaces`, likewise.

Every source knows all its `labels` up front (class count, class centres) and fetches a batch
at once (`__getitems__`: the packed set slices its tensor). `StepBatches` gives each process its
batch of every step with DistributedSampler's semantics, one seeded permutation per epoch, from
any step on (an exact resume); `training_loader` runs it through a torch DataLoader, with worker
processes for the streamed sources and pinned memory on a GPU. The engine copies the uint8 faces
to the device (4x fewer bytes than floats) and normalises and flips them there.
"""
from __future__ import annotations

import os
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Iterator, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Sampler

from zoo.data import DataError, RecordIODataset, gaussian_blur, load_image, read_image_folder

FACE_SHAPE = (112, 112, 3)
Batch = Tuple[torch.Tensor, torch.Tensor]  # uint8 (N,112,112,3) faces, int64 (N,) labels


class TrainingFaces(Dataset, ABC):
    """Aligned faces and labels; subclasses say how one face is fetched."""

    in_memory = False  # streamed sources read in DataLoader worker processes

    def __init__(self, path: Path, labels: torch.Tensor):
        if len(labels) == 0:
            raise ValueError(f"{path}: the training set is empty")
        self.path, self.labels = Path(path), labels
        self.num_classes = int(labels.max()) + 1

    def __len__(self) -> int:
        return len(self.labels)

    @abstractmethod
    def face(self, index: int) -> np.ndarray:
        """The face at `index` as (112,112,3) uint8 RGB."""

    def where(self, index: int) -> str:
        """Where the face at `index` comes from, for error messages."""
        return f"{self.path} (face {index})"

    def __getitem__(self, index: int) -> Tuple[np.ndarray, int]:
        return self.face(index), int(self.labels[index])

    def __getitems__(self, indices: Sequence[int]) -> Batch:
        faces = [self.face(i) for i in indices]
        for i, face in zip(indices, faces):
            if face.shape != FACE_SHAPE:
                raise DataError(f"{face.shape[1]}x{face.shape[0]}, not an aligned 112x112 crop "
                                "(python -m train.prepare aligns a folder)", self.where(i))
        return torch.from_numpy(np.stack(faces)), self.labels[list(indices)]

    def in_order(self, batch: int) -> Iterator[Batch]:
        """Every face in the set's order, `batch` at a time (class centres)."""
        yield from DataLoader(self, batch_size=batch, collate_fn=as_batch)


class PackedFaces(TrainingFaces):
    """A packed .npz (`images` (N,112,112,3) uint8, `labels` (N,)), all in memory."""

    in_memory = True

    def __init__(self, path: Path, images: Optional[torch.Tensor] = None, labels: Optional[torch.Tensor] = None):
        if images is None:
            with np.load(path) as data:
                images = torch.from_numpy(np.ascontiguousarray(data["images"]))
                labels = torch.from_numpy(data["labels"].astype(np.int64))
        super().__init__(path, labels)
        self.images = images

    def face(self, index: int) -> np.ndarray:
        return self.images[index].numpy()

    def __getitems__(self, indices: Sequence[int]) -> Batch:
        index = torch.as_tensor(indices)
        return self.images[index], self.labels[index]

    def subset(self, keep: torch.Tensor) -> "PackedFaces":
        """The faces where `keep` (bool, per face) holds, identities renumbered 0..K-1."""
        labels = self.labels[keep]
        return PackedFaces(self.path, self.images[keep], torch.unique(labels, return_inverse=True)[1])


class RecordFaces(TrainingFaces):
    """An InsightFace RecordIO set (`train.rec` beside its `train.idx`), decoded face by face."""

    def __init__(self, path: Path):
        self.records = RecordIODataset(path)
        super().__init__(path, torch.from_numpy(self.records.labels))

    def face(self, index: int) -> np.ndarray:
        return self.records[index][0]


class FolderFaces(TrainingFaces):
    """A folder of aligned crops, `root/IDENTITY/IMAGE`, identities numbered in sorted order."""

    def __init__(self, path: Path):
        self.files = read_image_folder(path)
        super().__init__(path, torch.from_numpy(self.files.labels))

    def face(self, index: int) -> np.ndarray:
        return load_image(self.files.paths[index])

    def where(self, index: int) -> str:
        return str(self.files.paths[index])


SOURCES = {".npz": PackedFaces, ".rec": RecordFaces}


def open_training_set(path: Union[str, Path]) -> TrainingFaces:
    """The training set at `path`: a packed .npz, an InsightFace .rec, or a folder of aligned crops."""
    path = Path(path)
    if path.is_dir():
        return FolderFaces(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such training set (a .npz from python -m train.prepare, an "
                                "InsightFace train.rec, or a folder of aligned crops)")
    if path.suffix not in SOURCES:
        raise ValueError(f"{path}: training sets are {', '.join(SOURCES)} files or folders of aligned crops")
    return SOURCES[path.suffix](path)


class StepBatches(Sampler[List[int]]):
    """This process's batch of every step from `start` on, epoch after epoch.

    The order is DistributedSampler's: each epoch one permutation seeded by (seed + epoch), the
    tail that cannot go to every process alike dropped, process `rank` taking every world-th
    index; cut into batches of `batch`, an epoch's last partial batch dropped. In one process
    that is a plain seeded permutation per epoch."""

    def __init__(self, data: Dataset, batch: int, seed: int, start: int = 0, rank: int = 0, world: int = 1):
        self.order = DistributedSampler(data, num_replicas=world, rank=rank, shuffle=True, seed=seed, drop_last=True)
        self.batch, self.start = batch, start
        self.steps_per_epoch = len(self.order) // batch

    def __iter__(self) -> Iterator[List[int]]:
        epoch, skip = divmod(self.start, self.steps_per_epoch)
        while True:
            self.order.set_epoch(epoch)
            indices = list(self.order)
            for step in range(skip, self.steps_per_epoch):
                yield indices[step * self.batch:(step + 1) * self.batch]
            epoch, skip = epoch + 1, 0


def training_loader(data: TrainingFaces, batches: StepBatches, workers: Union[int, str], pin: bool) -> DataLoader:
    """Batches of uint8 faces from `batches`; `workers="auto"`: none for a set in memory (slicing
    is quicker than any hand-off), up to 8 processes decoding a streamed one."""
    if workers == "auto":
        workers = 0 if data.in_memory else min(8, os.cpu_count() or 1)
    return DataLoader(data, batch_sampler=batches, collate_fn=as_batch, num_workers=int(workers), pin_memory=pin,
                      generator=torch.Generator())  # its own: the workers' seeds take nothing from the step's RNG


def as_batch(batch: Batch) -> Batch:
    """The collate step: `__getitems__` already returns the batch as tensors."""
    return batch


def flip_some(images: torch.Tensor, flip: torch.Tensor) -> torch.Tensor:
    """(N,C,H,W) images mirrored where `flip` (a CPU mask: the p = 0.5 augmentation)."""
    if not flip.any():
        return images
    return torch.where(flip.to(images.device)[:, None, None, None], images.flip(3), images)


def blur_some(faces: torch.Tensor, fraction: float, sigma_range) -> torch.Tensor:
    """uint8 NHWC faces with a random `fraction` of them Gaussian-blurred, each with its own
    sigma ~ U(sigma_range): the same blur as the test-time `blurS` condition (so it runs on the
    CPU, bit for bit the evaluation's)."""
    if fraction <= 0:
        return faces
    chosen = torch.nonzero(torch.rand(len(faces)) < fraction).flatten().tolist()
    if not chosen:
        return faces
    low, high = (float(v) for v in sigma_range)
    sigmas = torch.empty(len(chosen)).uniform_(low, high).tolist()
    out = faces.clone()
    for i, sigma in zip(chosen, sigmas):
        out[i] = torch.from_numpy(gaussian_blur(faces[i].numpy(), sigma))
    return out
