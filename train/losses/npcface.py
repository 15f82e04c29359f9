"""NPCFace: negative-positive cooperation loss (SPEC section 5)."""
from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

from .base import CosineHead, arc_margin, hard_mask, positive, with_positive
from .registry import LOSSES

HARD_MARGINS = ("adaptive", "fixed")


@LOSSES.register("npcface")
class NPCFace(CosineHead):
    """Zeng, Shi et al., "NPCFace: A Negative-Positive Cooperation Supervision for Training
    Large-scale Face Recognition" (Eqs. 10-13 of the paper copy in shared/papers).

    Negatives (Eq. 10): f_j = s cos theta_j, or s (t cos theta_j + alpha) where M_ij = 1.
    Cooperative margin (Eq. 11): m_i = m0 + m1 * mean_{j: M_ij=1} cos theta_j, or m0 when
    sample i has no hard class. Positive (Eq. 12): f_y = s cos(theta_y + m_i), with ArcFace's
    fallback cos(theta_y) - m_i sin(m_i) where theta_y + m_i > pi; with
    `positive_margin_only_when_positive_cos=True` (the public code) the margin applies only
    where cos theta_y > 0 and f_y = s cos theta_y elsewhere.
    Defaults: t=1.1, alpha=0.25, m0=0.4, m1=0.2 (Sec. V-A; the public code uses alpha=0.20).
    The paper gives no logit scale: s=64 is FaceX-Zoo's (the public implementation's) value.

    Hard mask, after MV-softmax's mis-classified criterion (Sec. III-E): M_ij = 1 where
    j != y and cos theta_j > the margined positive cosine (the same function as f_y / s).
    The positive margin is m_i, which itself depends on M, so:
      - `hard_margin="fixed"`: M is decided once with the constant `mask_margin` (default m0),
        then m_i follows from that M by Eq. 11.
      - `hard_margin="adaptive"` (default, the paper's reading: the criterion tests the
        positive logit the loss uses): one fixed-point iteration. M0 as in "fixed";
        m_i' = Eq. 11 on M0; M from the criterion with margin m_i'; then m_i = Eq. 11 on M,
        so Eqs. 10 and 11 use the same mask (M is not re-tested against that final m_i).
    The public code corresponds to hard_margin="fixed", mask_margin=0.5, alpha=0.2,
    positive_margin_only_when_positive_cos=True, detach_margin=True (its mask tests the raw
    cos(theta_y + 0.5) even where cos theta_y <= 0; here the criterion always tests the
    positive actually used).

    Gradients: Eq. 11 makes m_i a function of the hard negatives' cosines. The paper states
    no stop-gradient either way; FaceX-Zoo computes m_i from a detached copy of the cosines,
    so m_i is a constant for backpropagation. That is the default here (`detach_margin=True`):
    the positive logit pulls only on the ground-truth class, and the hard negatives are pushed
    only through their own logits (Eq. 10). `detach_margin=False` lets the gradient of f_y
    also flow through m_i into the hard negatives' cosines (and so their class weights).
    The mask itself is a step function.

    Ablations (Table I): m1=0 keeps only the negative emphasis; t=1, alpha=0 only the
    cooperative positive margin.

    `last`: `cos`, `cos_pos`, `hard_mask` (N, C bool), `margin` (m_i, N).
    """

    def __init__(self, num_classes: int, embedding_dim: int = 512, s: float = 64.0, t: float = 1.1,
                 alpha: float = 0.25, m0: float = 0.4, m1: float = 0.2, hard_margin: str = "adaptive",
                 mask_margin: Optional[float] = None, positive_margin_only_when_positive_cos: bool = False,
                 detach_margin: bool = True):
        super().__init__(num_classes, embedding_dim)
        if hard_margin not in HARD_MARGINS:
            raise ValueError(f"hard_margin must be one of {HARD_MARGINS}, not {hard_margin!r}")
        self.s, self.t, self.alpha, self.m0, self.m1 = s, t, alpha, m0, m1
        self.hard_margin = hard_margin
        self.mask_margin = m0 if mask_margin is None else mask_margin
        self.positive_margin_only_when_positive_cos = positive_margin_only_when_positive_cos
        self.detach_margin = detach_margin

    def cooperative_margin(self, cos: Tensor, mask: Tensor) -> Tensor:
        """Eq. 11: m0 + m1 * (mean hard-negative cosine), m0 for rows without a hard class."""
        hard_sum = torch.where(mask, cos, torch.zeros_like(cos)).sum(dim=1)
        return self.m0 + self.m1 * hard_sum / mask.sum(dim=1).clamp_min(1)

    def logits(self, cos: Tensor, labels: Tensor, embeddings: Tensor) -> Tensor:
        cos_pos = positive(cos, labels)

        def margined(margin):
            return arc_margin(cos_pos, margin, self.positive_margin_only_when_positive_cos)

        mask = hard_mask(cos, labels, margined(self.mask_margin))
        if self.hard_margin == "adaptive":
            mask = hard_mask(cos, labels, margined(self.cooperative_margin(cos, mask)))
        margin = self.cooperative_margin(cos, mask)
        if self.detach_margin:
            margin = margin.detach()
        negatives = torch.where(mask, self.t * cos + self.alpha, cos)
        self.remember(cos=cos, cos_pos=cos_pos, hard_mask=mask, margin=margin)
        return self.s * with_positive(negatives, labels, margined(margin))
