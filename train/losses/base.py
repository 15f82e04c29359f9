"""What every head shares: the class-weight matrix, cosine logits, the positive-logit
margins and the MV-softmax hard-negative criterion.

A margin head (`CosineHead`) is two things kept apart: the class matrix that gives the cosines,
and the margin maths (`logits`) that turns cosines into logits. `train.partial_fc` keeps the
second and replaces the first by class centres sharded across processes.

Notation follows the papers: `cos` is the (N, C) matrix cos(theta_ij) between normalised
embeddings and normalised class weights, `cos_pos` its ground-truth column cos(theta_iy),
`target` the margined positive cosine that replaces it, `s` the logit scale.
"""
from __future__ import annotations

import math
from abc import ABC, abstractmethod
from typing import Dict, Tuple, Union

import torch
import torch.nn.functional as F
from torch import Tensor, nn

# Floor on 1 - cos^2 inside sin(theta): keeps d sin / d cos finite where cos = +-1 exactly.
_SIN_FLOOR = 1e-12


class ClassificationHead(nn.Module):
    """Holds `weight`, the class matrix W (num_classes x embedding_dim).

    Subclasses implement `forward(embeddings, labels) -> logits`, the final scaled logits
    for cross-entropy (margin heads: `CosineHead.logits`), and call `remember(...)` so that `last` holds the detached
    diagnostics of the last batch (margin heads: `cos` (N, C) and `cos_pos` (N,), plus
    head-specific entries such as `hard_mask`; empty for plain softmax).
    """

    def __init__(self, num_classes: int, embedding_dim: int):
        super().__init__()
        self.num_classes = num_classes
        self.embedding_dim = embedding_dim
        self.weight = nn.Parameter(torch.empty(num_classes, embedding_dim))
        nn.init.xavier_uniform_(self.weight)
        self.last: Dict[str, Tensor] = {}

    def cosine(self, embeddings: Tensor) -> Tensor:
        """cos(theta_ij) between L2-normalised embeddings and L2-normalised class weights."""
        return cosine(embeddings, self.weight)

    def loss(self, embeddings: Tensor, labels: Tensor) -> Tuple[Tensor, Tensor]:
        """(mean cross-entropy, logits) for this batch."""
        logits = self(embeddings, labels)
        return F.cross_entropy(logits, labels), logits

    def remember(self, **diagnostics: Tensor) -> None:
        self.last = {name: value.detach() for name, value in diagnostics.items()}

    @torch.no_grad()
    def own_and_nearest(self, embeddings: Tensor, labels: Tensor) -> Tuple[Tensor, Tensor]:
        """Per sample, the cosine to its own class centre and to the nearest other one (it is
        recognised where own >= nearest). One N x C product: for logging and recording steps."""
        cos = self.cosine(embeddings)
        return positive(cos, labels), cos.scatter(1, labels[:, None], float("-inf")).max(dim=1).values

    @torch.no_grad()
    def start_at(self, centres: Tensor) -> None:
        """Class matrix := `centres` (C x embedding_dim), e.g. each identity's mean embedding."""
        self.weight.copy_(centres.to(self.weight.device))


class CosineHead(ClassificationHead, ABC):
    """A margin head: its logits are a function of the cosine matrix (plus, for SphereFace, the
    embeddings' norms), so the margin maths runs unchanged on cosines computed elsewhere."""

    def forward(self, embeddings: Tensor, labels: Tensor) -> Tensor:
        return self.logits(self.cosine(embeddings), labels, embeddings)

    @abstractmethod
    def logits(self, cos: Tensor, labels: Tensor, embeddings: Tensor) -> Tensor:
        """Final scaled logits from `cos` (N, C) and `labels` (each row's column in `cos`);
        `embeddings` (N, D) are the rows' raw embeddings."""


def cosine(embeddings: Tensor, centres: Tensor) -> Tensor:
    """cos(theta_ij) between L2-normalised embeddings and L2-normalised class centres."""
    return F.linear(F.normalize(embeddings, dim=1), F.normalize(centres, dim=1)).clamp(-1.0, 1.0)


def positive(cos: Tensor, labels: Tensor) -> Tensor:
    """The ground-truth column cos(theta_iy), shape (N,)."""
    return cos.gather(1, labels[:, None]).squeeze(1)


def with_positive(values: Tensor, labels: Tensor, target: Tensor) -> Tensor:
    """`values` with each row's ground-truth entry replaced by `target` (differentiably)."""
    return values.scatter(1, labels[:, None], target[:, None])


def arc_margin(cos_pos: Tensor, m: Union[float, Tensor], easy_margin: bool = False) -> Tensor:
    """ArcFace's additive angular margin cos(theta + m) (Deng et al., CVPR 2019).

    `m` is a float or a per-sample tensor. Where theta + m would pass pi, cos(theta + m)
    stops decreasing in theta; as in the ArcFace reference implementation (insightface),
    those samples get cos(theta) - m*sin(m) instead (i.e. where cos(theta) <= cos(pi - m)).
    `easy_margin=True` instead applies the margin only where cos(theta) > 0 and leaves the
    other samples at cos(theta).
    """
    m = torch.as_tensor(m, dtype=cos_pos.dtype, device=cos_pos.device)
    sin_pos = torch.sqrt((1.0 - cos_pos * cos_pos).clamp_min(_SIN_FLOOR))
    shifted = cos_pos * torch.cos(m) - sin_pos * torch.sin(m)
    if easy_margin:
        return torch.where(cos_pos > 0, shifted, cos_pos)
    return torch.where(cos_pos > torch.cos(math.pi - m), shifted, cos_pos - m * torch.sin(m))


def hard_mask(cos: Tensor, labels: Tensor, target: Tensor) -> Tensor:
    """MV-softmax's mis-classified criterion (Wang et al., AAAI 2020): M_ij = 1 where a
    non-ground-truth cosine beats the margined positive, cos(theta_ij) > target_i.

    `target` is the positive the head actually uses, after any fallback; the reference
    implementations compare against the raw cos(theta_y + m), which differs only where
    theta_y + m > pi.
    """
    mask = cos > target[:, None]
    return mask.scatter(1, labels[:, None], False)
