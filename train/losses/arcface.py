"""ArcFace: additive angular margin on the positive logit."""
from __future__ import annotations

from torch import Tensor

from .base import CosineHead, arc_margin, positive, with_positive
from .registry import LOSSES


@LOSSES.register("arcface")
class ArcFace(CosineHead):
    """f_y = s cos(theta_y + m), f_j = s cos theta_j (Deng et al., CVPR 2019; s=64, m=0.5).

    Where theta_y + m > pi the positive is cos(theta_y) - m sin(m), as in the reference
    implementation (see `arc_margin`); `easy_margin=True` applies the margin only where
    cos(theta_y) > 0 instead.
    """

    def __init__(self, num_classes: int, embedding_dim: int = 512, s: float = 64.0, m: float = 0.5,
                 easy_margin: bool = False):
        super().__init__(num_classes, embedding_dim)
        self.s, self.m, self.easy_margin = s, m, easy_margin

    def logits(self, cos: Tensor, labels: Tensor, embeddings: Tensor) -> Tensor:
        cos_pos = positive(cos, labels)
        self.remember(cos=cos, cos_pos=cos_pos)
        return self.s * with_positive(cos, labels, arc_margin(cos_pos, self.m, self.easy_margin))
