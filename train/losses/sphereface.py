"""SphereFace (A-softmax): multiplicative angular margin with lambda annealing."""
from __future__ import annotations

import math

import torch
from torch import Tensor

from .base import CosineHead, positive, with_positive
from .registry import LOSSES


def cos_multiple(cos: Tensor, m: int) -> Tensor:
    """cos(m theta), m >= 1, as the Chebyshev polynomial T_m(cos theta): no arccos in the gradient."""
    previous, current = torch.ones_like(cos), cos
    for _ in range(m - 1):
        previous, current = current, 2 * cos * current - previous
    return current


@LOSSES.register("sphereface")
class SphereFace(CosineHead):
    """A-softmax (Liu et al., "SphereFace", CVPR 2017): W normalised, x not.

    f_j = ||x|| cos theta_j; f_y = ||x|| (lambda cos theta_y + psi(theta_y)) / (1 + lambda) with
    psi(theta) = (-1)^k cos(m theta) - 2k, theta in [k pi/m, (k+1) pi/m], m = 4.
    lambda anneals per training forward as in the authors' released training config:
    lambda = max(lambda_min, base * (1 + gamma * iteration)^(-power)), base=1000, gamma=0.12,
    power=1, lambda_min=5 (the iteration counter is a buffer, so it survives checkpoints;
    evaluation-mode forwards do not advance it).
    """

    def __init__(self, num_classes: int, embedding_dim: int = 512, m: int = 4, base: float = 1000.0,
                 gamma: float = 0.12, power: float = 1.0, lambda_min: float = 5.0):
        super().__init__(num_classes, embedding_dim)
        self.m, self.base, self.gamma, self.power, self.lambda_min = m, base, gamma, power, lambda_min
        self.register_buffer("iteration", torch.zeros((), dtype=torch.long))

    @property
    def lambda_(self) -> float:
        return max(self.lambda_min, self.base * (1 + self.gamma * int(self.iteration)) ** (-self.power))

    def logits(self, cos: Tensor, labels: Tensor, embeddings: Tensor) -> Tensor:
        if self.training:
            self.iteration += 1
        cos_pos = positive(cos, labels)
        with torch.no_grad():
            k = torch.floor(self.m * torch.acos(cos_pos) / math.pi).clamp(max=self.m - 1)
        psi = (1 - 2 * torch.remainder(k, 2)) * cos_multiple(cos_pos, self.m) - 2 * k
        lam = self.lambda_
        target = (lam * cos_pos + psi) / (1 + lam)
        self.remember(cos=cos, cos_pos=cos_pos, lambda_=torch.tensor(lam))
        return embeddings.norm(dim=1, keepdim=True) * with_positive(cos, labels, target)
