"""The loss registry: `LOSSES.get("arcface")(num_classes=..., embedding_dim=..., s=..., m=...)`."""
from zoo.registry import Registry

LOSSES: Registry = Registry("loss")
