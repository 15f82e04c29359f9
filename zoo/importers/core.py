"""Format-independent source representation for the importers.

A format reader (mxnet.py, safetensors_state.py, onnx_graph.py) turns a file into a
`SourceModel`: its parameterised layers (`Layer`: conv, bn, prelu, linear) in execution
order, plus what the file says about its input (normalisation, size). `convert.py` turns that
into a zoo model. Formats register here (`FORMATS`, `register`); `SingleFileFormat` covers the
formats that are one file with a known suffix.
"""
from __future__ import annotations

import hashlib
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple

import numpy as np

from ..backbones import INPUT_MEAN, INPUT_STD
from ..registry import Registry

TORCH_BN_EPS = 1e-5


class ImporterError(ValueError):
    """A source file that cannot be turned into the requested zoo architecture."""


@dataclass
class Layer:
    """One parameterised layer of a source model.

    `tensors`: conv/linear `weight` (+ `bias`); bn `weight`, `bias`, `running_mean`,
    `running_var`; prelu `weight`. `attrs`: what the source records about it (conv: kernel,
    stride, padding, groups; bn: eps, fix_gamma). `feeds_bn`: a conv/linear whose output goes
    straight into a BatchNorm of the source (False: the source folded that BN away).
    """

    kind: str
    name: str
    op: str
    tensors: Dict[str, np.ndarray]
    attrs: Dict[str, Any] = field(default_factory=dict)
    feeds_bn: Optional[bool] = None

    def describe(self) -> str:
        shape = tuple(self.tensors["weight"].shape) if "weight" in self.tensors else ()
        extra = "".join(f", {k} {v}" for k, v in self.attrs.items() if k in ("stride", "groups", "eps"))
        return f"source layer {self.name!r} ({self.op}, weight {shape}{extra})"


@dataclass
class SourceModel:
    """What a format reader read: layers in execution order and facts about the input."""

    format: str
    files: List[Path]
    layers: List[Layer]
    # The graph's own input normalisation as g = scale * (x - 127.5) of RGB pixels x, when the
    # graph does it inside; None when the caller normalises (then `input_std` decides).
    input_scale: Optional[float] = None
    input_size: Optional[Tuple[int, int]] = None  # (h, w) the graph declares, when it does
    embedding_dim: Optional[int] = None  # what the graph's output declares, when it does
    residual_adds: Optional[int] = None  # element-wise additions of two activations
    eps_in_file: bool = True  # False: the format does not store BatchNorm eps (a state dict)
    read: Dict[str, Any] = field(default_factory=dict)  # facts for the card
    notes: List[str] = field(default_factory=list)  # what had to be assumed
    # The source's own forward pass, independent of the mapping: (zoo-normalised aligned faces
    # (N,3,112,112), the (h, w) centre crop the network sees) -> raw embeddings; None when the
    # format cannot run itself.
    reference: Optional[Callable[[np.ndarray, Tuple[int, int]], np.ndarray]] = None
    reference_name: str = ""


class SourceFormat(ABC):
    """A registered source format: recognises its files and reads them."""

    name = "base"
    description = ""

    @abstractmethod
    def detect(self, path: Path) -> Optional[List[Path]]:
        """The files of this format that `path` (a file or folder) names, or None."""

    @abstractmethod
    def read(self, files: List[Path], input_std: Optional[float] = None) -> SourceModel:
        """The source's layers and what it says about its input."""


class SingleFileFormat(SourceFormat):
    """A format that is one file with a known suffix: the file itself, or the only one in a folder."""

    suffix = ""

    def detect(self, path: Path) -> Optional[List[Path]]:
        if path.is_dir():
            files = sorted(path.glob(f"*{self.suffix}"))
            if len(files) > 1:
                raise ImporterError(f"{path}: holds {len(files)} {self.suffix} files; name the one to import")
            return files or None
        return [path] if path.suffix == self.suffix else None


FORMATS: Registry[SourceFormat] = Registry("source format")


def register(cls):
    FORMATS.register(cls.name)(cls())
    return cls


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def input_scale_for(source: SourceModel, input_std: Optional[float]) -> Tuple[float, str]:
    """(factor for the first conv, how the input normalisation was settled)."""
    if source.input_scale is not None:
        if input_std is not None:
            raise ImporterError(f"{source.files[0]}: the graph normalises its input itself "
                                f"((x - 127.5) * {source.input_scale:g}); --input-std does not apply")
        factor = source.input_scale * INPUT_STD
        how = f"inside the graph: (x - 127.5) * {source.input_scale:g}"
    else:
        std = INPUT_STD if input_std is None else float(input_std)
        if not std > 0:
            raise ImporterError(f"input std must be positive, got {input_std!r}")
        factor = INPUT_STD / std
        how = (f"by the caller, not recorded in the file: (x - 127.5) / {std:g} "
               + ("assumed (the zoo's own)" if input_std is None else "as given"))
    if abs(factor - 1.0) < 1e-7:
        factor = 1.0
    return factor, how


# ---------------------------------------------------------------------------------------
# the zoo side


def centred_scale(mean: float, scale: float, where: str) -> float:
    """The `s` of an in-graph normalisation (x - mean) * s, which must centre on 127.5."""
    if abs(mean - INPUT_MEAN) > 1e-3:
        raise ImporterError(f"{where}: the graph normalises its input as (x - {mean:g}) * {scale:g}; the zoo can "
                            f"only take graphs centred on {INPUT_MEAN} (its input is (x - 127.5) / 128)")
    if not scale > 0:
        raise ImporterError(f"{where}: input scale {scale:g} is not positive")
    return float(scale)


def centre_crop(images: np.ndarray, size: Tuple[int, int]) -> np.ndarray:
    height, width = size
    top, left = (images.shape[-2] - height) // 2, (images.shape[-1] - width) // 2
    return images[..., top:top + height, left:left + width]
