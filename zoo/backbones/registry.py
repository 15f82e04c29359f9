"""The backbone registry: `BACKBONES.get("ir50")(width=..., head=..., conv3x3=...)`."""
from ..registry import Registry

BACKBONES: Registry = Registry("backbone")
