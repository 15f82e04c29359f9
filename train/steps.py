"""One optimisation step, the same for every method, and the log window that reads its losses.

The recognition loss and the method's weighted auxiliary losses (SCAN's RMO, HPDA's
divergence) train the model through the trainer's optimiser; then a method that trains some
parameters by losses of its own (`FaceModel.extra_losses`, e.g. a REINFORCE policy) gets
each of them minimised by its own optimiser (`FaceModel.extra_optimizers`).

Nothing in a step waits for the GPU: losses stay on the device until the log window closes,
and the N x C cosines behind accuracy and the margin records are computed only on the steps
that log or record them (and on every step for a method whose own losses read them).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

import torch

from train.distributed import mean_over_processes


@dataclass
class StepResult:
    loss: torch.Tensor                       # the total loss that was optimised (detached)
    terms: Dict[str, torch.Tensor]           # each term (detached), the method's own losses included
    own: Optional[torch.Tensor] = None       # (N,) cosine to the own class centre after the step, when scored
    nearest: Optional[torch.Tensor] = None   # (N,) cosine to the nearest other class centre, when scored
    extra: Dict[str, float] = field(default_factory=dict)

    @property
    def correct(self) -> torch.Tensor:
        """(N,) bool: the nearest class centre is the right one (a scored step only)."""
        return self.own >= self.nearest


class NonFiniteLoss(FloatingPointError):
    """Training produced NaN or inf; the message names the term and the step."""


class LossWindow:
    """The loss terms of the steps since the last log, kept on the device.

    Reading a loss (`.item()`, `isfinite(...).all()`) waits for the GPU, so it happens once per
    window: `close` averages every step's terms over the processes in one all-reduce and copies
    them to the host. A NaN or inf on any process makes that average non-finite on all of them,
    so every process stops at the same step, none left waiting in a collective.
    """

    def __init__(self):
        self.first_step = 0
        self.names: List[str] = []
        self.rows: List[torch.Tensor] = []

    def add(self, step: int, loss: torch.Tensor, terms: Dict[str, torch.Tensor]) -> None:
        if not self.rows:
            self.first_step, self.names = step, ["loss", *terms]
        self.rows.append(torch.stack([loss, *terms.values()]).float())

    def close(self, lr: float, scalars: Dict[str, torch.Tensor]) -> Dict[str, Any]:
        """The window's mean loss and terms, and `scalars` of its last step, over all processes.
        Raises NonFiniteLoss naming the first step and term that was not finite."""
        rows = torch.stack(self.rows)
        flat = torch.cat([rows.flatten(), torch.stack(list(scalars.values())).float()])
        flat = mean_over_processes(flat).cpu()  # the window's one wait for the device
        rows, values = flat[:rows.numel()].view_as(rows), flat[rows.numel():]
        self.rows = []
        bad = ~torch.isfinite(rows[:, 1:])
        if bad.any():
            step, term = (int(i) for i in bad.nonzero()[0])
            raise NonFiniteLoss(f"step {self.first_step + step}: loss term {self.names[term + 1]!r} is "
                                f"{rows[step, term + 1].item()} (learning rate {lr:g}); the last checkpoint is "
                                "intact. Lower optim.lr, or check the data for corrupt images, then resume.")
        means = rows.mean(dim=0).tolist()
        return {"loss": means[0], "terms": dict(zip(self.names[1:], means[1:])),
                **dict(zip(scalars, values.tolist()))}


def forward_losses(trainer, images, labels):
    """Recognition + auxiliary losses of one forward pass, weighted by the recipe's [aux]."""
    with trainer.autocast():
        embeddings, _logits, raw_terms = trainer.objective(images, labels)
    weights = trainer.config["aux"]
    terms = {name: float(weights.get(name, 1.0)) * value for name, value in raw_terms.items()
             if name == "recognition" or float(weights.get(name, 1.0))}
    return embeddings, terms


def standard_step(trainer, images, labels, scored: bool) -> StepResult:
    embeddings, terms = forward_losses(trainer, images, labels)
    loss = sum(terms.values())
    trainer.optimizer.zero_grad(set_to_none=True)
    loss.backward()
    trainer.optimizer.step()
    result = StepResult(loss.detach(), {name: value.detach() for name, value in terms.items()})
    if scored or trainer.extra_optimizers:  # right = nearest class centre; margin logits would hide the target
        result.own, result.nearest = trainer.head.own_and_nearest(embeddings.detach().float(), labels)
    return result


def extra_step(trainer, result: StepResult) -> StepResult:
    """The method's own losses after the batch's step, each minimised by the method's optimiser
    of that name with gradients averaged over the processes."""
    if not trainer.extra_optimizers:
        return result
    losses, logged = trainer.model.extra_losses(result.correct, trainer.method_state, trainer.method_settings,
                                                mean_over_processes)
    for name, loss in losses.items():
        optimizer = trainer.extra_optimizers[name]
        params = [p for group in optimizer.param_groups for p in group["params"]]
        for p, grad in zip(params, torch.autograd.grad(loss, params)):
            p.grad = mean_over_processes(grad)
        optimizer.step()
        result.terms[name] = loss.detach()
    result.extra.update(logged)
    return result


def training_step(trainer, images, labels, scored: bool) -> StepResult:
    """One batch: the recognition (+ auxiliary) step, then the method's own losses, if any.
    `scored`: the step logs or records, so it needs each face's own and nearest cosines."""
    return extra_step(trainer, standard_step(trainer, images, labels, scored))
