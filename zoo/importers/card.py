"""The card and config.json record of an imported checkpoint: where it came from, what was read."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, Optional

from ..model import FaceModel
from .core import SourceModel, sha256

FORMAT_NAMES = {"mxnet": "InsightFace MXNet checkpoint (NDArray .params + symbol JSON, read without MXNet)",
                "safetensors": "torch state dict in safetensors", "onnx": "ONNX graph"}

LIMITS = [
    "Not trained or fine-tuned by FaceScope: the training data and recipe are the source's, and this "
    "file does not record them; check the source.",
    "Large face-recognition training sets (MS1M, CASIA-WebFace, WebFace) are collected from celebrities "
    "and overlap the identities of LFW and CFP: accuracy on those sets is not identity-disjoint.",
    "Not for identification or verification decisions about people - access control, surveillance, "
    "law enforcement or anything with consequences for the person pictured.",
    "Demographic bias is untested here.",
]


def provenance(source: SourceModel, record: Dict[str, Any], licence: str, note: Optional[str],
               given: Any) -> Dict[str, Any]:
    """The machine-readable import record that goes into config.json (`imported_from`)."""
    return {
        "format": source.format, "source": str(Path(given).resolve()),
        "files": [{"path": str(f.resolve()), "sha256": sha256(f), "bytes": f.stat().st_size} for f in source.files],
        "read": {**record, **{f"source_{k}": v for k, v in source.read.items()}},
        "assumed": list(source.notes), "licence": licence, "note": note,
    }


def render(model: FaceModel, source: SourceModel, record: Dict[str, Any], prov: Dict[str, Any], title: str,
           licence: str, note: Optional[str], out: Path) -> str:
    from huggingface_hub import ModelCardData

    config = model.config
    front = ModelCardData(library_name="facescope", license="other",
                          license_name="unknown" if licence.startswith("unknown") else "source-licence",
                          tags=["face-recognition", "facescope", "imported", source.format],
                          pipeline_tag="image-feature-extraction")
    height, width = config.input_size
    crop = "" if (height, width) == (112, 112) else (
        f" The network sees the centre {height}x{width} crop of that face (columns "
        f"{(112 - width) // 2}:{(112 + width) // 2}, rows {(112 - height) // 2}:{(112 + height) // 2}).")
    parts = [f"---\n{front.to_yaml()}\n---\n", f"# {title}\n",
             f"Weights imported into FaceScope from elsewhere ({FORMAT_NAMES.get(source.format, source.format)}); "
             "not trained by FaceScope.\n"]
    if note:
        parts.append(f"{note}\n")
    parts.append(
        "## Model\n\n"
        f"FaceScope model `{model.name}`: backbone `{config.backbone}`, width {config.width:g}, head "
        f"`{record['head']}`, {model.parameter_count():,} parameters. Input: aligned 112x112 RGB faces scaled by "
        f"(x - 127.5) / 128.{crop} Output: a {config.embedding_dim}-d embedding; two faces are compared by "
        "cosine similarity.\n\n"
        f"```python\nimport zoo\nmodel = zoo.load(\"{out}\")\nembeddings = model.embed(faces)  "
        f"# (N, 3, 112, 112) in [-1, 1] -> (N, {config.embedding_dim}), L2-normalised\n```\n")
    rows = "".join(f"| `{f['path']}` | `{f['sha256']}` | {f['bytes']:,} |\n" for f in prov["files"])
    parts.append(f"## Source\n\nFormat: `{source.format}`. Given as `{prov['source']}`.\n\n"
                 f"| file | SHA-256 | bytes |\n|---|---|---|\n{rows}")
    eps = ", ".join(f"{n} layer(s) {v}" for v, n in record["bn_eps_counts"].items())
    folded = record["bn_folded_into_conv"]
    read = [
        f"embedding size: {config.embedding_dim} (the last layer's outputs)",
        f"input size: {height}x{width} ({record['input_size_from']})",
        f"BatchNorm eps: {eps}" + ("" if record["bn_eps_in_file"] else " (not in the file: assumed, see below)")
        + f" (config `bn_eps` = `{record['bn_eps']}`)"
        + (f"; {folded} BatchNorm layer(s) were folded into the preceding conv by the source and are "
           "restored as identity BatchNorms carrying the conv's bias" if folded else ""),
        f"input normalisation: {record['input_normalisation']}"
        + ("" if record["first_conv_scaled_by"] == 1.0 else
           f"; the first conv's weights are multiplied by {record['first_conv_scaled_by']:.6g} so the zoo's "
           "(x - 127.5) / 128 input gives the source's activations"),
        f"{record['source_layers']} layers with weights matched one to one, in order, onto the zoo's "
        f"modules with every shape checked"
        + (f"; {record['residual_adds']} residual additions, as many as the architecture's shortcuts"
           if record["residual_adds"] is not None else ""),
    ]
    for key, value in source.read.items():
        if value in (None, [], {}, ""):
            continue
        read.append(f"{key.replace('_', ' ')}: {value}")
    check = record.get("verification")
    if check:
        verified = (f"Checked before saving: on {check['images']} random 8-bit images the imported model's raw "
                    f"embeddings match {check['reference']} to {check['max_abs_diff']:.2g} "
                    f"(relative {check['relative_max_diff']:.2g}, lowest cosine {check['min_cosine']:.7f}).")
    else:
        verified = ("Not checked against the source's own forward pass (this format cannot run itself here): "
                    "the mapping rests on layer order and shapes; measure the accuracy before relying on it.")
    parts.append("### Read from the source\n\n" + "".join(f"- {line}\n" for line in read) + f"\n{verified}\n")
    if source.notes:
        parts.append("### Assumed\n\n" + "".join(f"- {line}\n" for line in source.notes))
    parts.append(f"## Licence\n\n{licence}\n")
    parts.append("## Evaluation\n\nNot evaluated by the importer: treat its accuracy as unknown until measured, "
                 f"e.g. `python -m zoo.evaluate --model {out} --protocol lfw-view1`. Numbers published with the "
                 "source are its authors' claims on their own alignment.\n")
    parts.append("## Limits\n\n" + "".join(f"- {item}\n" for item in LIMITS))
    return "\n".join(parts)
