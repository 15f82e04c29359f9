"""Weight-space ensembling of a fine-tuned model with its start (WiSE-FT: Wortsman et al., 2022,
"Robust fine-tuning of zero-shot models").

Fine-tuning a strong initialisation on a small set (11k FaceScope faces) gains on faces like
the set's and loses part of what the initialisation knew (the MS1M MobileFaceNet: up to 0.6
points of LFW View 1 after 300 steps). Published weights of (1 - alpha) * start + alpha * trained
keep part of both; alpha = 1 is plain fine-tuning. The recipe key is `init.wise_alpha`;
`python -m train.validate --wise-alpha 0.25,0.5,0.75` scores the choices on held-out training
identities from one training run.
"""
from __future__ import annotations

from typing import Any, Dict

import torch
from torch import nn

from train.config import ConfigError


def alpha(config: Dict[str, Any]) -> float:
    """The recipe's init.wise_alpha (default 1.0, plain fine-tuning), checked."""
    init = config.get("init") or {}
    return checked(float(init.get("wise_alpha", 1.0)), bool(init.get("from")))


def checked(value: float, has_start: bool) -> float:
    """`value` as a WiSE-FT weight: between 0 and 1, and below 1 only for a run with a pretrained start."""
    if not 0.0 <= value <= 1.0:
        raise ConfigError(f"init.wise_alpha must be between 0 (the start) and 1 (the trained weights), got {value}")
    if value != 1.0 and not has_start:
        raise ConfigError("init.wise_alpha averages the trained weights with a pretrained start: set init.from")
    return value


@torch.no_grad()
def average_with_start(model: nn.Module, start: Dict[str, torch.Tensor], weight: float) -> None:
    """In place: every floating tensor of `model` (BatchNorm statistics included) becomes
    (1 - weight) * start + weight * itself; integer counters keep the trained value."""
    state = model.state_dict()
    if set(state) != set(start):
        missing, extra = sorted(set(state) - set(start)), sorted(set(start) - set(state))
        raise ValueError(f"the start's tensors differ from the model's (model only: {missing[:3]}, "
                         f"start only: {extra[:3]})")
    for key, tensor in state.items():
        if tensor.shape != start[key].shape:
            raise ValueError(f"{key}: start {tuple(start[key].shape)}, trained {tuple(tensor.shape)}")
        if tensor.is_floating_point():
            tensor.lerp_(start[key].to(tensor), 1.0 - weight)
