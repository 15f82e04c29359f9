"""CosFace / AM-softmax: additive cosine margin on the positive logit."""
from __future__ import annotations

from torch import Tensor

from .base import CosineHead, positive, with_positive
from .registry import LOSSES


@LOSSES.register("am-softmax")
@LOSSES.register("cosface")
class CosFace(CosineHead):
    """f_y = s (cos theta_y - m), f_j = s cos theta_j.

    Wang et al., "CosFace: Large Margin Cosine Loss", CVPR 2018 (s=64, m=0.35); the same
    formula as AM-softmax (Wang et al., IEEE SPL 2018). ARFace trains with s=30, m=0.4.
    """

    def __init__(self, num_classes: int, embedding_dim: int = 512, s: float = 64.0, m: float = 0.35):
        super().__init__(num_classes, embedding_dim)
        self.s, self.m = s, m

    def logits(self, cos: Tensor, labels: Tensor, embeddings: Tensor) -> Tensor:
        cos_pos = positive(cos, labels)
        self.remember(cos=cos, cos_pos=cos_pos)
        return self.s * with_positive(cos, labels, cos_pos - self.m)
