"""AdaCos: cosine logits with an adaptive scale and no margin."""
from __future__ import annotations

import math

import torch
from torch import Tensor

from .base import CosineHead, positive
from .registry import LOSSES


@LOSSES.register("adacos")
class AdaCos(CosineHead):
    """Zhang et al., "AdaCos: Adaptively Scaling Cosine Logits", CVPR 2019.

    f_j = s cos theta_j for every class. s (a buffer, no gradient) starts at the fixed
    AdaCos scale sqrt(2) ln(C - 1); with `dynamic=True`, every training forward first sets
    s <- ln(B_avg) / cos(min(pi/4, theta_med)), where B_avg = (1/N) sum_i sum_{j != y_i}
    exp(s cos theta_ij) uses the previous s and theta_med is the batch median (torch.median:
    the lower of the two middle values for even N) of theta_iy; the batch's logits use the new s.
    """

    def __init__(self, num_classes: int, embedding_dim: int = 512, dynamic: bool = True):
        if num_classes < 3:
            raise ValueError(f"AdaCos needs at least 3 classes (its scale is sqrt(2) ln(C - 1)), "
                             f"got {num_classes}")
        super().__init__(num_classes, embedding_dim)
        self.dynamic = dynamic
        self.register_buffer("s", torch.tensor(math.sqrt(2) * math.log(num_classes - 1)))

    def logits(self, cos: Tensor, labels: Tensor, embeddings: Tensor) -> Tensor:
        cos_pos = positive(cos, labels)
        if self.training and self.dynamic:
            with torch.no_grad():
                negatives = torch.exp(self.s * cos).scatter(1, labels[:, None], 0.0)
                b_avg = negatives.sum() / cos.shape[0]
                theta_med = torch.acos(cos_pos).median()
                self.s.copy_(torch.log(b_avg) / torch.cos(theta_med.clamp(max=math.pi / 4)))
        self.remember(cos=cos, cos_pos=cos_pos)
        return self.s * cos
