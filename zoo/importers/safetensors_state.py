"""Torch state dicts stored as safetensors (never a pickle).

A state dict has weights but no graph: the layer order comes from a known *key layout*
(safetensors stores keys sorted alphabetically, which is not the order a network runs its
layers in). Each layout ranks the module names of its source code, so siblings sort into
execution order; numbered children sort by number. Known layouts:

- `xiaoccer-mobilefacenet`: Xiaoccer/MobileFaceNet_Pytorch (`conv1`, `dw_conv1`,
  `blocks.N.conv.M`, `conv2`, `linear7`, `linear1`), the CASIA 112x96 model;
- `insightface-iresnet`: InsightFace arcface_torch's `iresnet.py` (`conv1`, `bn1`, `prelu`,
  `layerN.M.{bn1,conv1,bn2,prelu,conv2,bn3,downsample}`, `bn2`, `fc`, `features`);
- `facescope`: FaceScope's own module names (`backbone.stem`, `backbone.blocks`, `backbone.head`).

What a state dict cannot say is assumed and stated on the card: BatchNorm eps (torch's
default 1e-5), conv strides and paddings (the architecture's), the input normalisation
(the zoo's (x - 127.5) / 128 unless `input_std` says otherwise) and RGB channel order.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from .core import TORCH_BN_EPS, ImporterError, Layer, SingleFileFormat, SourceModel, register

STRIP_PREFIXES = ("module.", "model.")


@dataclass
class KeyLayout:
    name: str
    signature: Tuple[str, ...]  # keys that must all be present
    ranks: Dict[int, Dict[str, int]]  # depth -> module name -> rank among its siblings

    def matches(self, keys: Sequence[str]) -> bool:
        present = set(keys)
        return all(k in present for k in self.signature)

    def sort_key(self, prefix: str):
        key = []
        for depth, part in enumerate(prefix.split(".")):
            ranks = self.ranks.get(depth, self.ranks.get(-1, {}))
            if part.isdigit():
                key.append((0, int(part), ""))
            elif part in ranks:
                key.append((1, ranks[part], ""))
            else:
                key.append((2, 0, part))
        return key


def _rank(*names: str) -> Dict[str, int]:
    return {n: i for i, n in enumerate(names)}


LAYOUTS = [
    KeyLayout("xiaoccer-mobilefacenet",
              ("conv1.conv.weight", "dw_conv1.conv.weight", "linear7.conv.weight", "linear1.conv.weight"),
              {0: _rank("conv1", "dw_conv1", "blocks", "conv2", "linear7", "linear1"),
               1: _rank("conv", "bn", "prelu")}),
    KeyLayout("insightface-iresnet",
              ("conv1.weight", "bn1.weight", "prelu.weight", "layer1.0.conv1.weight", "fc.weight", "features.weight"),
              {0: _rank("conv1", "bn1", "prelu", "layer1", "layer2", "layer3", "layer4", "bn2", "dropout", "fc",
                        "features"),
               2: _rank("bn1", "conv1", "bn2", "prelu", "conv2", "bn3", "downsample")}),
    KeyLayout("facescope", ("backbone.stem.0.weight",), {}),
    KeyLayout("facescope", ("backbone.stem.0.0.weight",), {}),
]
FACESCOPE_RANKS = {-1: {**_rank("stem", "blocks", "head"), **_rank("residual", "shortcut"), **_rank("reduce", "fc", "bn")}}
for _layout in LAYOUTS:
    if _layout.name == "facescope":
        _layout.ranks = FACESCOPE_RANKS


def read_state(path: Path) -> Tuple[Dict[str, np.ndarray], Dict[str, str]]:
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="np") as reader:
            metadata = reader.metadata() or {}
            state = {key: reader.get_tensor(key) for key in reader.keys()}
    except (SafetensorError, OSError, RuntimeError, ValueError) as err:
        raise ImporterError(f"{path}: not a readable safetensors file, truncated or corrupt ({err})") from None
    if not state:
        raise ImporterError(f"{path}: holds no tensors")
    return state, metadata


def _strip(keys: Sequence[str]) -> Dict[str, str]:
    """original key -> key without a DataParallel-style prefix shared by every key."""
    for prefix in STRIP_PREFIXES:
        if all(k.startswith(prefix) for k in keys):
            return {k: k[len(prefix):] for k in keys}
    return {k: k for k in keys}


def layers_from_state(path: Path, state: Dict[str, np.ndarray]) -> Tuple[List[Layer], str]:
    names = _strip(list(state))
    stripped = {names[k]: v for k, v in state.items()}
    layout = next((l for l in LAYOUTS if l.matches(list(stripped))), None)
    if layout is None:
        sample = ", ".join(sorted(stripped)[:6])
        known = "; ".join(f"{l.name} (keys like {l.signature[0]})" for l in LAYOUTS[:3])
        raise ImporterError(f"{path}: unknown state-dict key layout (keys: {sample}, ...); the layer order of a "
                            f"state dict is only known for these layouts: {known}")
    groups: Dict[str, Dict[str, np.ndarray]] = {}
    for key, value in stripped.items():
        prefix, _, leaf = key.rpartition(".")
        if leaf == "num_batches_tracked":
            continue
        if not np.issubdtype(value.dtype, np.floating):
            raise ImporterError(f"{path}: tensor {key!r} is {value.dtype}, not floating point")
        groups.setdefault(prefix, {})[leaf] = value.astype(np.float32)
    layers = []
    for prefix in sorted(groups, key=layout.sort_key):
        tensors = groups[prefix]
        unknown = sorted(set(tensors) - {"weight", "bias", "running_mean", "running_var"})
        if unknown or "weight" not in tensors and "running_mean" not in tensors:
            raise ImporterError(f"{path}: layer {prefix!r} has tensors {sorted(tensors)}, not a conv, BatchNorm, "
                                "PReLU or linear layer (unknown layer)")
        if "running_mean" in tensors:
            kind, op = "bn", "BatchNorm"
        elif tensors["weight"].ndim == 4:
            kind, op = "conv", "Conv2d"
        elif tensors["weight"].ndim == 2:
            kind, op = "linear", "Linear"
        elif tensors["weight"].ndim == 1 and "bias" not in tensors:
            kind, op = "prelu", "PReLU"
        else:
            raise ImporterError(f"{path}: layer {prefix!r} (weight {tensors['weight'].shape}, tensors "
                                f"{sorted(tensors)}) is not a conv, BatchNorm, PReLU or linear layer (unknown layer)")
        attrs = {"eps": TORCH_BN_EPS} if kind == "bn" else {}
        layers.append(Layer(kind, prefix, op, tensors, attrs))
    return layers, layout.name


@register
class SafetensorsFormat(SingleFileFormat):
    name = "safetensors"
    suffix = ".safetensors"
    description = "a torch state dict in a .safetensors file (or a folder holding one)"

    def read(self, files: List[Path], input_std: Optional[float] = None) -> SourceModel:
        path = files[0]
        state, metadata = read_state(path)
        if (path.parent / "config.json").is_file() and metadata.get("facescope_format"):
            raise ImporterError(f"{path}: already a FaceScope checkpoint; load its folder with zoo.load")
        layers, layout = layers_from_state(path, state)
        torch_bn = any(k.endswith("num_batches_tracked") for k in state)
        notes = [
            "BatchNorm eps: a state dict does not store it; torch's default 1e-5 assumed"
            + (" (the file has torch's num_batches_tracked buffers)." if torch_bn else "."),
            "Conv strides and paddings: a state dict does not store them; the architecture's are assumed.",
            "Layer order: from the key layout, not from a graph; shapes are checked, the wiring is not.",
            "Channel order: RGB assumed (the file does not record it).",
        ]
        read = {"tensors": len(state), "key_layout": layout}
        if metadata:
            read["file_metadata"] = dict(metadata)
        return SourceModel(format="safetensors", files=[path], layers=layers, notes=notes, read=read, eps_in_file=False)
