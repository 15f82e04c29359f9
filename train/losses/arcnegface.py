"""ArcNegFace: ArcFace positive plus a Gaussian re-weighting of every negative logit."""
from __future__ import annotations

import torch
from torch import Tensor

from .base import CosineHead, arc_margin, positive, with_positive
from .registry import LOSSES


@LOSSES.register("arcnegface")
class ArcNegFace(CosineHead):
    """Liu et al., "Towards Flops-constrained Face Recognition", ICCV-W 2019.

    f_y = s cos(theta_y + m) (ArcFace, with its theta + m > pi fallback); every negative
    f_j = s (t_j cos theta_j + t_j - 1) with t_j = alpha exp(-(cos theta_j - cos(theta_y + m))^2 / sigma),
    which peaks for negatives as close as the margined positive. t_j is a constant for the
    gradient, as in the authors' implementation. s=64, m=0.5, alpha=1.2, sigma=2.
    """

    def __init__(self, num_classes: int, embedding_dim: int = 512, s: float = 64.0, m: float = 0.5,
                 alpha: float = 1.2, sigma: float = 2.0):
        super().__init__(num_classes, embedding_dim)
        self.s, self.m, self.alpha, self.sigma = s, m, alpha, sigma

    def logits(self, cos: Tensor, labels: Tensor, embeddings: Tensor) -> Tensor:
        cos_pos = positive(cos, labels)
        target = arc_margin(cos_pos, self.m)
        with torch.no_grad():
            reweight = self.alpha * torch.exp(-(cos - target[:, None]) ** 2 / self.sigma)
        negatives = reweight * cos + reweight - 1
        self.remember(cos=cos, cos_pos=cos_pos, reweight=reweight)
        return self.s * with_positive(negatives, labels, target)
