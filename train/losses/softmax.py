"""Plain softmax: an ordinary linear layer (W x + b) and cross-entropy; the baseline row."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .base import ClassificationHead
from .registry import LOSSES


@LOSSES.register("softmax")
class Softmax(ClassificationHead):
    """logits = W x + b, nothing normalised, no margin; `labels` are not used."""

    def __init__(self, num_classes: int, embedding_dim: int = 512, bias: bool = True):
        super().__init__(num_classes, embedding_dim)
        self.bias = nn.Parameter(torch.zeros(num_classes)) if bias else None

    def forward(self, embeddings: Tensor, labels: Tensor) -> Tensor:
        return F.linear(embeddings, self.weight, self.bias)
