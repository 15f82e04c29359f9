"""Backbones. Importing this package registers every backbone module below."""
from . import ir_resnet, mobilefacenet  # noqa: F401  (registration side effects)
from .base import EMBEDDING_DIM, INPUT_SIZE, TEMPLATE_LANDMARKS, Backbone, Conv3x3Factory, plain_conv3x3
from .registry import BACKBONES

__all__ = ["BACKBONES", "Backbone", "Conv3x3Factory", "plain_conv3x3", "INPUT_SIZE", "EMBEDDING_DIM", "TEMPLATE_LANDMARKS"]
