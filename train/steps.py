"""One optimisation step, the same for every method.

The recognition loss and the method's weighted auxiliary losses (SCAN's RMO, HPDA's
divergence) train the model through the trainer's optimiser; then a method that trains some
parameters by losses of its own (`FaceModel.extra_losses`, e.g. a REINFORCE policy) gets
each of them minimised by its own optimiser (`FaceModel.extra_optimizers`).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict

import torch

from train.distributed import mean_over_processes


@dataclass
class StepResult:
    loss: torch.Tensor                     # the total loss that was optimised (detached)
    terms: Dict[str, float]                # each term, for the logs
    own: torch.Tensor                      # (N,) cosine to the own class centre, after the step
    nearest: torch.Tensor                  # (N,) cosine to the nearest other class centre
    embeddings: torch.Tensor               # (N, 512) detached raw embeddings
    extra: Dict[str, float] = field(default_factory=dict)

    @property
    def correct(self) -> torch.Tensor:
        """(N,) bool: the nearest class centre is the right one."""
        return self.own >= self.nearest


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
    with trainer.autocast():
        embeddings, _logits, raw_terms = trainer.objective(images, labels)
    weights = trainer.config["aux"]
    terms = {name: float(weights.get(name, 1.0)) * value for name, value in raw_terms.items()
             if name == "recognition" or float(weights.get(name, 1.0))}
    return embeddings, terms


def standard_step(trainer, images, labels) -> StepResult:
    embeddings, terms = forward_losses(trainer, images, labels)
    check_finite(terms, trainer.step, trainer.lr)
    loss = sum(terms.values())
    trainer.optimizer.zero_grad(set_to_none=True)
    loss.backward()
    trainer.optimizer.step()
    # right = nearest class centre; margin logits would hide the target
    own, nearest = trainer.head.own_and_nearest(embeddings.detach().float(), labels)
    return StepResult(loss.detach(), {k: v.item() for k, v in terms.items()}, own, nearest, embeddings.detach())


def extra_step(trainer, result: StepResult) -> StepResult:
    """The method's own losses after the batch's step, each minimised by the method's optimiser
    of that name with gradients averaged over the processes."""
    losses, logged = trainer.model.extra_losses(result.correct, trainer.method_state, trainer.method_settings,
                                                mean_over_processes)
    check_finite(losses, trainer.step, trainer.lr)
    for name, loss in losses.items():
        optimizer = trainer.extra_optimizers[name]
        params = [p for group in optimizer.param_groups for p in group["params"]]
        for p, grad in zip(params, torch.autograd.grad(loss, params)):
            p.grad = mean_over_processes(grad)
        optimizer.step()
        result.terms[name] = loss.item()
    result.extra.update(logged)
    return result


def training_step(trainer, images, labels) -> StepResult:
    """One batch: the recognition (+ auxiliary) step, then the method's own losses, if any."""
    return extra_step(trainer, standard_step(trainer, images, labels))
