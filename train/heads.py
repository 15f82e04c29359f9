"""The classification head a run trains, and where its class matrix starts.

The recipe's [loss] names the head (`train.losses`). By default every process holds the whole
class matrix and DDP averages its gradient like any other parameter; with `[partial_fc]
enabled = true` each process holds a shard of it and uses `sample_rate` of its centres per step
(`train.partial_fc`), for class counts (MS1M's 85k, WebFace42M's 2M) whose matrix should not be
copied into every GPU.
"""
from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any, Dict

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from torch import nn
from tqdm import tqdm

import zoo
from train.losses import build_loss
from train.partial_fc import PartialFC
from zoo.data.paths import cache_root


def build_head(config: Dict[str, Any], num_classes: int, embedding_dim: int, batch_per_rank: int,
               rank: int, world: int) -> nn.Module:
    """The recipe's loss head, replicated or (with [partial_fc] enabled) sharded over the processes."""
    options = dict(config["loss"])
    head = build_loss(options.pop("name"), num_classes, embedding_dim, **options)
    partial_fc = config["partial_fc"]
    if not partial_fc["enabled"]:
        return head
    return PartialFC(head, float(partial_fc["sample_rate"]), batch_per_rank, rank, world)


def is_sharded(head: nn.Module) -> bool:
    """Whether each process holds its own part of `head` (saved and resumed per rank, not averaged)."""
    return isinstance(head, PartialFC)


@torch.no_grad()
def start_at_class_centres(head: nn.Module, model: zoo.FaceModel, data, device, source: str,
                           progress: bool = True) -> None:
    """Class matrix = each identity's mean (normalised) embedding under the starting model, so a
    pretrained model's first steps refine its embedding instead of chasing a random head.

    Every method's `init_from` starts at the checkpoint's embedding, so the centres depend only
    on (checkpoint, faces): they are cached in cache/centres/ and shared by the methods.
    """
    key = hashlib.sha1(f"{source}|{_fingerprint(source)}|{data.path}|{len(data)}|{int(data.labels.sum())}|"
                       f"{data.num_classes}".encode()).hexdigest()[:16]
    path = cache_root(None) / "centres" / f"{key}.safetensors"
    if path.is_file():
        head.start_at(load_file(str(path))["centres"])
        return
    sums = torch.zeros(data.num_classes, model.config.embedding_dim)
    for faces, labels in tqdm(data.in_order(256), desc="class centres", unit="batch", leave=False,
                              disable=not progress):
        sums.index_add_(0, labels, model.embed(model.preprocess(faces.to(device))).cpu())
    centres = torch.nn.functional.normalize(sums, dim=1)
    head.start_at(centres)
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = path.with_suffix(f".{os.getpid()}.tmp")
    save_file({"centres": centres.contiguous()}, str(staging))
    staging.replace(path)


def _fingerprint(source: str) -> str:
    """The checkpoint's weights by content: other weights get new centres, a republished card
    (same weights, new file time) keeps them."""
    folder = Path(zoo.LOCAL_ZOO) / source if (Path(zoo.LOCAL_ZOO) / source).is_dir() else Path(source)
    weights = folder / "model.safetensors"
    with safe_open(str(weights), framework="pt") as reader:
        return hashlib.sha1(b"".join(reader.get_tensor(k).numpy().tobytes() for k in sorted(reader.keys()))).hexdigest()
