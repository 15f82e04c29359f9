"""CurricularFace: hard negatives modulated by an adaptively estimated curriculum term t."""
from __future__ import annotations

import torch
from torch import Tensor

from .base import CosineHead, arc_margin, hard_mask, positive, with_positive
from .registry import LOSSES


@LOSSES.register("curricularface")
class CurricularFace(CosineHead):
    """Huang et al., "CurricularFace: Adaptive Curriculum Learning Loss", CVPR 2020.

    f_y = s cos(theta_y + m) (ArcFace, with its theta + m > pi fallback), s=64, m=0.5.
    A negative is hard where cos theta_j > that margined positive; hard negatives get
    f_j = s cos theta_j (t + cos theta_j), the others f_j = s cos theta_j. t (a buffer,
    initially 0, no gradient) follows the batch mean positive cosine by an exponential
    moving average, t <- momentum * mean_i cos theta_iy + (1 - momentum) t, momentum=0.01,
    updated on every training forward before the batch's logits are formed.
    """

    def __init__(self, num_classes: int, embedding_dim: int = 512, s: float = 64.0, m: float = 0.5,
                 momentum: float = 0.01):
        super().__init__(num_classes, embedding_dim)
        self.s, self.m, self.momentum = s, m, momentum
        self.register_buffer("t", torch.zeros(()))

    def logits(self, cos: Tensor, labels: Tensor, embeddings: Tensor) -> Tensor:
        cos_pos = positive(cos, labels)
        if self.training:
            with torch.no_grad():
                self.t.mul_(1 - self.momentum).add_(self.momentum * cos_pos.mean())
        target = arc_margin(cos_pos, self.m)
        mask = hard_mask(cos, labels, target)
        negatives = torch.where(mask, cos * (self.t + cos), cos)
        self.remember(cos=cos, cos_pos=cos_pos, hard_mask=mask)
        return self.s * with_positive(negatives, labels, target)
