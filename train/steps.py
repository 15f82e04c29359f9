"""One optimisation step per method, behind a registry.

Most methods train with `standard_step`: recognition loss + weighted auxiliary losses
(SCAN's RMO, HPDA's divergence). ARFace alternates, on every batch, a Feature-Net step with
a REINFORCE step of its Attention-Net. A new method with its own schedule registers here.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Dict

import torch
import torch.distributed as dist

from zoo.methods.arface import ReinforceBaseline
from zoo.registry import Registry

STEPS: Registry = Registry("training step")


@dataclass
class StepResult:
    loss: torch.Tensor                     # the total loss that was optimised (detached)
    terms: Dict[str, float]                # each term, for the logs
    correct: torch.Tensor                  # (N,) bool: nearest class centre is the right one
    embeddings: torch.Tensor               # (N, 512) detached raw embeddings
    extra: Dict[str, float] = field(default_factory=dict)


class NonFiniteLoss(FloatingPointError):
    """Training produced NaN or inf; the message names the term and the step."""


def check_finite(terms: Dict[str, torch.Tensor], step: int, lr: float) -> None:
    for name, value in terms.items():
        if not torch.isfinite(value).all():
            raise NonFiniteLoss(f"step {step}: loss term {name!r} is {value.item()} (learning rate {lr:g}); "
                                "the last checkpoint is intact. Lower optim.lr, or check the data "
                                "for corrupt images, then resume.")


def forward_losses(trainer, images, labels):
    """Recognition + auxiliary losses of one forward pass, weighted by the recipe's [aux]."""
    embeddings, _logits, raw_terms = trainer.objective(images, labels)
    weights = trainer.config["aux"]
    terms = {name: float(weights.get(name, 1.0)) * value for name, value in raw_terms.items()
             if name == "recognition" or float(weights.get(name, 1.0))}
    return embeddings, terms


@STEPS.register("standard")
def standard_step(trainer, images, labels) -> StepResult:
    embeddings, terms = forward_losses(trainer, images, labels)
    check_finite(terms, trainer.step, trainer.lr)
    loss = sum(terms.values())
    trainer.optimizer.zero_grad(set_to_none=True)
    loss.backward()
    trainer.optimizer.step()
    with torch.no_grad():  # right = nearest class centre; margin logits would hide the target
        correct = trainer.head.cosine(embeddings.detach().float()).argmax(1) == labels
    return StepResult(loss.detach(), {k: v.item() for k, v in terms.items()}, correct, embeddings.detach())


@STEPS.register("arface")
def arface_step(trainer, images, labels) -> StepResult:
    """Feature-Net step on the masked batch, then REINFORCE on the Attention-Net.

    Reward: per-sample correctness of the Feature-Net on that masked batch (its mean is the
    batch accuracy the paper names), against a moving-average baseline of past accuracies.
    """
    result = standard_step(trainer, images, labels)
    reward = result.correct.float()
    accuracy = reward.mean()
    if dist.is_initialized():
        dist.all_reduce(accuracy)
        accuracy /= dist.get_world_size()
    tracker = ReinforceBaseline(float(trainer.config["arface"].get("baseline_momentum", 0.99)))
    tracker.value = trainer.method_state.get("reward_baseline")
    baseline = tracker.update(accuracy)
    policy_loss = trainer.model.reinforce_loss(reward, baseline)
    check_finite({"policy": policy_loss}, trainer.step, trainer.lr)
    params = list(trainer.model.policy_parameters())
    grads = torch.autograd.grad(policy_loss, params)
    if dist.is_initialized():
        for g in grads:
            dist.all_reduce(g)
            g /= dist.get_world_size()
    for p, g in zip(params, grads):
        p.grad = g
    trainer.policy_optimizer.step()
    trainer.method_state["reward_baseline"] = tracker.value
    result.terms["policy"] = policy_loss.item()
    result.extra["reward_baseline"] = tracker.value
    return result


def step_for(method: str) -> Callable:
    return STEPS.get(method) if method in STEPS else STEPS.get("standard")
