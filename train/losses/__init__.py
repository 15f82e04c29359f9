"""Classification heads (softmax and its margin variants) behind one registry.

    from train.losses import build_loss
    head = build_loss("npcface", num_classes=10572)   # holds W (num_classes x 512)
    loss, logits = head.loss(embeddings, labels)       # logits: final scaled, for cross-entropy

Every head is a `ClassificationHead`: `forward(embeddings, labels) -> logits`, `loss(...)`,
and `last`, the detached diagnostics of the last batch. Adding a loss is one module here
with `@LOSSES.register("name")`, imported below. Importing this package registers them all.
"""
from . import (  # noqa: F401  (registration side effects)
    adacos, arcface, arcnegface, cosface, curricularface, mv_softmax, npcface, softmax, sphereface)
from .base import ClassificationHead, CosineHead
from .registry import LOSSES


def build_loss(name: str, num_classes: int, embedding_dim: int = 512, **options) -> ClassificationHead:
    """The registered head `name`; `options` are that head's hyperparameters (s, m, t, ...)."""
    return LOSSES.get(name)(num_classes=num_classes, embedding_dim=embedding_dim, **options)


__all__ = ["LOSSES", "ClassificationHead", "CosineHead", "build_loss"]
