"""Real face batches for tests: LFW crops resized to the models' 112x112 input.

LFW deep-funneled crops are roughly centred on the face, so a resize is a fair stand-in for
alignment in tests of model mechanics (shapes, folding, masks); alignment itself is tested
with the data layer.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
from PIL import Image

DATA_ROOT = Path(os.environ.get("FACESCOPE_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))
LFW_IMAGES = DATA_ROOT / "lfw" / "images"


def lfw_paths(count: int, seed: int = 0) -> list:
    people = sorted(p for p in LFW_IMAGES.iterdir() if p.is_dir())
    rng = np.random.default_rng(seed)
    chosen = rng.choice(len(people), size=count, replace=False)
    return [sorted(people[i].glob("*.jpg"))[0] for i in chosen]


def lfw_faces(count: int, seed: int = 0) -> torch.Tensor:
    """`count` LFW faces of different people as a (N,3,112,112) float tensor in [-1, 1]."""
    arrays = [np.asarray(Image.open(p).convert("RGB").resize((112, 112), Image.BILINEAR)) for p in lfw_paths(count, seed)]
    batch = torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).float()
    return (batch - 127.5) / 128.0


def lfw_identities(people: int, per_person: int):
    """uint8 (N,112,112,3) faces of the first `people` LFW people with >= `per_person` images, and labels."""
    chosen = []
    for person in sorted(p for p in LFW_IMAGES.iterdir() if p.is_dir()):
        files = sorted(person.glob("*.jpg"))
        if len(files) >= per_person:
            chosen.append(files[:per_person])
        if len(chosen) == people:
            break
    images = [np.asarray(Image.open(f).convert("RGB").resize((112, 112), Image.BILINEAR))
              for files in chosen for f in files]
    labels = np.repeat(np.arange(len(chosen)), per_person)
    return np.stack(images), labels


def pretrained_like(name: str, faces: torch.Tensor, width: float = 0.25, prelu: bool = False, **arch):
    """A plain model standing in for a trained one: random but fixed weights, BatchNorm affine
    parameters and running statistics (of `faces`) away from their defaults, and with `prelu`
    PReLU slopes too; eval mode."""
    import zoo

    torch.manual_seed(1)
    model = zoo.build(name, width=width, **arch)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.2, 0.2)
                m.momentum = None  # running statistics = this batch's
            elif prelu and isinstance(m, torch.nn.PReLU):
                m.weight.uniform_(0.05, 0.4)
        model.train()(faces)
    return model.eval()

