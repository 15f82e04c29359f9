"""Importers: face-recognition checkpoints made elsewhere -> FaceScope checkpoints.

    from zoo.importers import import_checkpoint
    import_checkpoint("../shared/pretrained/insightface-mobilefacenet-y1", "mobilefacenet", "zoo/checkpoints/y1")

    python -m zoo import SOURCE --arch ARCH --out DIR [--name NAME] [--licence TEXT]

Source formats (one module each, registered in `FORMATS`; `detect` picks one from SOURCE):

- `mxnet`: InsightFace's MXNet `PREFIX-NNNN.params` + `PREFIX-symbol.json` (a folder holding
  them, or the .params file), read without MXNet;
- `safetensors`: a torch state dict in safetensors (the CASIA MobileFaceNet, InsightFace's
  `iresnet`, or FaceScope's own key names);
- `onnx`: an ONNX graph (InsightFace IResNet exports such as `w600k_r50.onnx`, MobileFaceNet,
  anything `torch.onnx.export` makes of a zoo model), BatchNorm separate or folded into the
  convs.

Embedding size, input size (the centre crop of the 112x112 face the network sees), width,
head and every BatchNorm's eps come from the source; the layers are matched in execution
order against the zoo architecture's, every shape checked. Where the format can run itself
(MXNet's symbol, interpreted op by op; ONNX, through onnxruntime when installed), the
imported model's embeddings are compared with the source's before anything is written. The
card states the source files with SHA-256, what was read and what was assumed.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import List, Optional, Tuple, Union

from . import card as _card
from .convert import convert, verify
from .core import FORMATS, ImporterError, Layer, SourceFormat, SourceModel, sha256

PathLike = Union[str, os.PathLike]
UNKNOWN_LICENCE = "unknown: check the source's licence"


def detect(source: PathLike) -> Tuple[SourceFormat, List[Path]]:
    """(format, its files) for a source path; raises ImporterError naming what was found."""
    path = Path(source)
    if not path.exists():
        raise ImporterError(f"{path}: no such file or folder")
    found = [(fmt, files) for _, fmt in FORMATS.items() for files in [fmt.detect(path)] if files]
    if len(found) == 1:
        return found[0]
    if found:
        listing = "; ".join(f"{fmt.name}: {', '.join(f.name for f in files)}" for fmt, files in found)
        raise ImporterError(f"{path}: holds checkpoints of several formats ({listing}); name the file to import")
    known = "; ".join(f"{name}: {fmt.description}" for name, fmt in FORMATS.items())
    what = "folder" if path.is_dir() else "file"
    raise ImporterError(f"{path}: cannot tell which format this {what} is. Known formats: {known}")


def read_source(source: PathLike, input_std: Optional[float] = None) -> SourceModel:
    fmt, files = detect(source)
    return fmt.read(files, input_std=input_std)


def import_model(source: PathLike, arch: str, input_std: Optional[float] = None, check: bool = True):
    """(zoo model, record) for `source` as `arch`, without writing anything."""
    src = read_source(source, input_std)
    model, record = convert(src, arch, input_std)
    record["verification"] = verify(model, src) if check else None
    return model, src, record


def import_checkpoint(source: PathLike, arch: str, out: PathLike, name: Optional[str] = None,
                      licence: Optional[str] = None, note: Optional[str] = None,
                      input_std: Optional[float] = None, check: bool = True) -> Path:
    """Import `source` as zoo architecture `arch` into the checkpoint folder `out`.

    `name`: the card's title (default: the folder's name). `licence`: the licence line for
    the card (default: "unknown: check the source's licence"). `note`: free text for the
    card (where the weights come from, what they were trained on). `input_std`: for graphs
    that leave input normalisation to their caller (ONNX exports, symbol files without
    scalar ops): the std they expect, (x - 127.5) / input_std (default 128, the zoo's; 127.5
    for InsightFace's arcface_torch ONNX models). `check`: compare with the source's own
    forward pass where the format can run (default on).
    """
    from ..checkpoint import save

    model, src, record = import_model(source, arch, input_std, check)
    out = Path(out)
    title = name or out.name
    licence = licence or UNKNOWN_LICENCE
    provenance = _card.provenance(src, record, licence, note, source)
    text = _card.render(model, src, record, provenance, title, licence, note, out)
    return save(model, out, card=text, extra_config={"imported_from": provenance})


from . import mxnet, onnx_graph, safetensors_state  # noqa: E402,F401  (registration)

__all__ = ["FORMATS", "ImporterError", "Layer", "SourceFormat", "SourceModel", "UNKNOWN_LICENCE", "convert", "detect",
           "import_checkpoint", "import_model", "read_source", "sha256", "verify"]
