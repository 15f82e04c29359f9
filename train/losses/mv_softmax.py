"""MV-softmax: mis-classified vector guided softmax (hard negatives get an extra margin)."""
from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

from .base import CosineHead, arc_margin, hard_mask, positive, with_positive
from .registry import LOSSES

_DEFAULT_MARGIN = {"am": 0.35, "arc": 0.5}


@LOSSES.register("mv-softmax")
class MVSoftmax(CosineHead):
    """Wang et al., "Mis-classified Vector Guided Softmax Loss", AAAI 2020 (MV-AM / MV-Arc).

    Positive: f_y = s (cos theta_y - m) (`margin_type="am"`, m=0.35) or s cos(theta_y + m)
    (`"arc"`, m=0.5, with ArcFace's theta + m > pi fallback). A negative j is hard
    (mis-classified) where cos theta_j > the margined positive cosine; hard negatives get
    f_j = s (t cos theta_j + t - 1) (the adaptive indicator; NPCFace Eq. 8), t=1.2, the
    others f_j = s cos theta_j. s=32 as in the authors' released code.
    """

    def __init__(self, num_classes: int, embedding_dim: int = 512, s: float = 32.0, m: Optional[float] = None,
                 t: float = 1.2, margin_type: str = "am"):
        super().__init__(num_classes, embedding_dim)
        if margin_type not in _DEFAULT_MARGIN:
            raise ValueError(f"margin_type must be one of {sorted(_DEFAULT_MARGIN)}, not {margin_type!r}")
        self.s, self.t, self.margin_type = s, t, margin_type
        self.m = _DEFAULT_MARGIN[margin_type] if m is None else m

    def logits(self, cos: Tensor, labels: Tensor, embeddings: Tensor) -> Tensor:
        cos_pos = positive(cos, labels)
        target = cos_pos - self.m if self.margin_type == "am" else arc_margin(cos_pos, self.m)
        mask = hard_mask(cos, labels, target)
        negatives = torch.where(mask, self.t * cos + self.t - 1, cos)
        self.remember(cos=cos, cos_pos=cos_pos, hard_mask=mask)
        return self.s * with_positive(negatives, labels, target)
