"""Grad-CAM of the cosine similarity to a reference embedding, for any zoo model.

Recognition models have no class score to explain; what a verification decision rests on
is the cosine similarity between two faces' embeddings. `SimilarityTarget` makes that the
Grad-CAM target (pytorch_grad_cam's GradCAM), taken at the last block of the backbone's
last stage, so plain models and every method are explained the same way.

Explaining a face against its own embedding is degenerate: at similarity 1 the gradient of
the cosine is zero and the map is empty. Use another photo (e.g. of the same person) as
the reference.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Union

import numpy as np
import plotly.graph_objects as go
import torch
import torch.nn.functional as F

from zoo import FaceModel

from .common import AnalysisError
from .figures import add_face, add_map, grid, wrap
from .images import FaceLike, as_face, as_faces


class SimilarityTarget:
    """Grad-CAM target: cosine similarity of one sample's raw embedding to a reference."""

    def __init__(self, reference_embedding: Union[torch.Tensor, np.ndarray]):
        reference = torch.as_tensor(reference_embedding).detach().cpu().float().flatten()
        self.reference = F.normalize(reference, dim=0)

    def __call__(self, model_output: torch.Tensor) -> torch.Tensor:
        return F.normalize(model_output.float(), dim=-1) @ self.reference.to(model_output.device)


@dataclass
class GradCamMaps:
    """Grad-CAM maps (min-max scaled per face by pytorch_grad_cam) and the similarities."""

    model: str
    target_layer: str  # module path of the layer Grad-CAM reads
    faces: np.ndarray  # (N, 112, 112, 3) uint8
    cams: np.ndarray  # (N, 112, 112) in [0, 1]
    similarity: np.ndarray  # (N,) cosine similarity to the reference
    reference_face: Optional[np.ndarray]  # (112, 112, 3) uint8 when the reference was a face

    json_skip = ("faces", "cams", "reference_face")


def target_layer(model: FaceModel) -> torch.nn.Module:
    """The last block of the last stage: the deepest map that still has a spatial layout."""
    return model.backbone.blocks[-1]


def reference_embedding(model: FaceModel, reference) -> Optional[torch.Tensor]:
    """`reference` as a flat embedding when it is one (shape (D,) or (1, D)); None when it is a face.

    An embedding of another size than the model's is an AnalysisError: it came from another
    model (e.g. a 512-d IR embedding for a 128-d MobileFaceNet), so its cosine means nothing here.
    """
    values = reference.detach().cpu() if isinstance(reference, torch.Tensor) else np.asarray(reference)
    shape = tuple(values.shape)
    if not (len(shape) == 1 or (len(shape) == 2 and shape[0] == 1)):
        return None
    dim = model.config.embedding_dim
    if shape[-1] != dim:
        raise AnalysisError(f"the reference embedding has {shape[-1]} values, but {model.name} makes {dim}-d "
                            "embeddings: embed the reference with the same model, or give the reference face")
    return torch.as_tensor(np.asarray(values, dtype=np.float32)).flatten()


def gradcam_similarity(model: FaceModel, faces: FaceLike, reference: Union[FaceLike, torch.Tensor, np.ndarray],
                       batch_size: int = 16) -> GradCamMaps:
    """Where each face's similarity to `reference` comes from.

    `reference`: an embedding by `model` (a vector of `model.config.embedding_dim` values: 128 for
    the MobileFaceNet zoo, 512 for the IR models), or an aligned face (embedded by `model`).
    """
    from pytorch_grad_cam import GradCAM  # imported on use: it pulls in matplotlib and scikit-learn

    faces = as_faces(faces)
    reference_face = None
    embedding = reference_embedding(model, reference)
    if embedding is None:
        reference_face = as_face(reference)
        embedding = model.embed(model.preprocess(reference_face[None]))[0]
    target = SimilarityTarget(embedding)
    layer = target_layer(model)
    layer_name = next(name for name, module in model.named_modules() if module is layer)
    was_training = model.training
    cams = []
    try:
        with GradCAM(model=model, target_layers=[layer]) as cam:
            for start in range(0, len(faces), batch_size):
                batch = model.preprocess(faces[start:start + batch_size])
                cams.append(cam(input_tensor=batch, targets=[target] * len(batch)))
    finally:
        model.zero_grad(set_to_none=True)
        model.train(was_training)
    with torch.no_grad():
        similarity = (model.embed(model.preprocess(faces)) @ target.reference).numpy().astype(np.float64)
    return GradCamMaps(model.name, layer_name, faces, np.concatenate(cams).astype(np.float64), similarity,
                       reference_face)


def gradcam_figure(data: GradCamMaps, max_cols: int = 4) -> go.Figure:
    """The reference (when it was a face), then each face with its Grad-CAM map."""
    panels = ([("reference", None)] if data.reference_face is not None else []) + \
        [(f"face {i}: cos {s:.3f}", i) for i, s in enumerate(data.similarity)]
    rows, cols = wrap(len(panels), max_cols)
    fig = grid(rows, cols, [title for title, _ in panels],
               f"{data.model}: Grad-CAM of the cosine similarity to the reference ({data.target_layer})")
    for k, (_, i) in enumerate(panels):
        row, col = k // cols + 1, k % cols + 1
        if i is None:
            add_face(fig, data.reference_face, row, col, "reference")
        else:
            add_map(fig, data.faces[i], data.cams[i], row, col, name="Grad-CAM", colormap="Jet",
                    value_range=(0.0, 1.0), showscale=i == 0, colorbar_title="Grad-CAM")
    return fig
