"""Backbones. Importing this package registers every backbone module below."""
from . import ir_resnet, mobilefacenet  # noqa: F401  (registration side effects)
from .base import (CHANNEL_ORDERS, EMBEDDING_DIM, INPUT_MEAN, INPUT_SIZE, INPUT_STD, TEMPLATE_LANDMARKS, Backbone,
                   Conv3x3Factory, from_input, plain_conv3x3, to_input)
from .registry import BACKBONES

__all__ = ["BACKBONES", "Backbone", "Conv3x3Factory", "plain_conv3x3", "INPUT_SIZE", "EMBEDDING_DIM", "TEMPLATE_LANDMARKS",
           "INPUT_MEAN", "INPUT_STD", "CHANNEL_ORDERS", "to_input", "from_input"]
