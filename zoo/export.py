"""Export a zoo model to ONNX, the form InsightFace, OpenCV and most deployments run.

    python -m zoo export scan-mobilefacenet.fss-ft --format onnx --out scan.onnx

The graph is the model's inference form (`inference_form()`: SCAN's fold, so a SCAN model
exports as its plain network) followed by L2 normalisation, so its output equals
`model.embed`. Input: `faces`, (N, 3, 112, 112) float, already scaled by the model's own
convention; the file's metadata says which (`input_mean`, `input_std`, `channel_order`) and what
comes out (`embedding_dim`), so a runtime needs nothing from FaceScope to use it.

The graph computes each module as `graph_form` rewrites it, the same function in ops onnxruntime
runs fast:
- PReLU as relu(x) - a * relu(-x) written with depthwise 1x1 convolutions (`ReluFormPReLU`):
  onnxruntime's PRelu leaves its blocked-layout convolutions for a slow kernel, half of
  MobileFaceNet's time. MobileFaceNet, one thread, batch 8, CPU ms per face: 12.8 with PRelu,
  8.1 with elementwise relu ops, 5.5 with this form; torch 10-11.
- a method's module with a `graph_form()` method as what that returns (SRANet's attention:
  channel-first products, BN folded; see zoo/methods/sranet.py).
`bench/onnx_runtime.py` keeps the current numbers.
"""
from __future__ import annotations

import copy
import json
import os
import tempfile
import warnings
from pathlib import Path
from typing import Dict, Union

import torch
import torch.nn.functional as F
from torch import nn

from .backbones import INPUT_SIZE
from .data.paths import atomic_write
from .model import FaceModel

OPSET = 18  # the torch.export-based exporter's (ARFace's area resize needs it; TorchScript's cannot)
FORMATS = ("onnx",)


class ReluFormPReLU(nn.Module):
    """nn.PReLU's function from ops onnxruntime keeps in its blocked (NCHWc) layout, where its own
    PRelu (or an elementwise a * min(x, 0)) makes it convert every activation out and back:
    relu(x) + depthwise_1x1(relu(depthwise_1x1(x, -1)), -a), the 1x1 kernels holding -1 and -a per
    channel. On a (N, C) input (no convolution there): relu(x) + a * (x - relu(x))."""

    def __init__(self, prelu: nn.PReLU):
        super().__init__()
        self.weight = prelu.weight

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        channels = x.shape[1]
        slope = self.weight.expand(channels)
        if x.dim() != 4:
            positive = torch.relu(x)
            return positive + slope.view(1, -1, *[1] * (x.dim() - 2)) * (x - positive)
        kernel = slope.reshape(channels, 1, 1, 1)
        negative = torch.relu(F.conv2d(x, -torch.ones_like(kernel), groups=channels))  # relu(-x)
        return torch.relu(x) + F.conv2d(negative, -kernel, groups=channels)


def graph_form(network: nn.Module) -> nn.Module:
    """A copy of `network` as its graph should compute it: every nn.PReLU as a ReluFormPReLU, and
    every module that has a `graph_form()` (a method's own rewrite of its eval-mode function, such
    as SRANet's attention) as what that returns."""
    network = copy.deepcopy(network)
    for parent in list(network.modules()):
        for name, child in parent.named_children():
            if isinstance(child, nn.PReLU):
                setattr(parent, name, ReluFormPReLU(child))
            elif callable(getattr(child, "graph_form", None)):
                setattr(parent, name, child.graph_form())
    return network


class _Normalised(nn.Module):
    """forward = embed: the inference network, then L2 normalisation."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, faces: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.model(faces).float(), dim=1)


def onnx_metadata(model: FaceModel, source: str) -> Dict[str, str]:
    config = model.config
    return {"producer": "FaceScope zoo.export", "source": source, "architecture": model.name,
            "embedding_dim": str(config.embedding_dim), "input_size": f"{INPUT_SIZE}x{INPUT_SIZE}",
            "input_mean": f"{config.input_mean:g}", "input_std": f"{config.input_std:g}",
            "channel_order": config.channel_order, "output": "L2-normalised embedding; compare by cosine",
            "config": json.dumps(config.to_dict(), sort_keys=True)}


def export_onnx(model: FaceModel, out: Union[str, Path], source: str = "") -> Path:
    """Write `model`'s inference form as ONNX with a dynamic batch and FaceScope metadata."""
    import onnx

    if not isinstance(model, FaceModel):
        raise TypeError(f"{getattr(model, 'name', type(model).__name__)} is not a torch zoo model: only those export "
                        "(pretrained peers already come as their own files)")
    network = model.inference_form().eval()
    example = torch.zeros(2, 3, INPUT_SIZE, INPUT_SIZE)
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    handle, scratch = tempfile.mkstemp(dir=Path(out).parent, prefix=f".{Path(out).name}.", suffix=".export")
    os.close(handle)  # its own name, so processes exporting the same file at once never share one
    scratch = Path(scratch)
    try:
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")  # export notes about ops it decomposes
            torch.onnx.export(_Normalised(graph_form(network)), (example,), str(scratch), input_names=["faces"],
                              output_names=["embedding"], opset_version=OPSET, dynamo=True, verbose=False,
                              dynamic_shapes={"faces": {0: torch.export.Dim("batch")}}, external_data=False)
        graph = onnx.load(str(scratch))
    finally:
        scratch.unlink(missing_ok=True)
    if not graph.graph.input[0].type.tensor_type.shape.dim[0].dim_param:
        raise RuntimeError(f"{network.name}: the exported graph fixed the batch size; a forward that reads it as "
                           "a Python int (len(x)) instead of x.shape[0] does that")
    for key, value in onnx_metadata(network, source or model.name).items():
        graph.metadata_props.add(key=key, value=value)
    onnx.checker.check_model(graph)
    atomic_write(out, lambda handle: handle.write(graph.SerializeToString()))
    return Path(out)
