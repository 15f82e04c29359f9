"""MobileFaceNet (Chen et al., 2018), ARFace's light backbone.

Conv3x3/2 -> depthwise 3x3 -> inverted-residual bottlenecks (expansion t, PReLU) ->
1x1 conv -> head. The paper's linear GDConv head is the `gdc` EmbeddingHead (default).
"""
from __future__ import annotations

from typing import Callable, Optional

import torch
from torch import nn

from .base import (EMBEDDING_DIM, INPUT_SIZE, Backbone, Conv3x3Factory, EmbeddingHead, check_input_size, final_grid,
                   plain_conv3x3, scaled)
from .registry import BACKBONES

# (expansion t, output channels c, repeats n, first stride s), as in the paper's Table 1.
BOTTLENECKS = ((2, 64, 5, 2), (4, 128, 1, 2), (2, 128, 6, 1), (4, 128, 1, 2), (2, 128, 2, 1))


def conv_bn_prelu(conv: nn.Module, channels: int) -> nn.Sequential:
    return nn.Sequential(conv, nn.BatchNorm2d(channels), nn.PReLU(channels))


class InvertedResidual(nn.Module):
    def __init__(self, in_channels: int, out_channels: int, stride: int, expansion: int,
                 conv3x3: Conv3x3Factory):
        super().__init__()
        hidden = in_channels * expansion
        self.residual = nn.Sequential(
            conv_bn_prelu(nn.Conv2d(in_channels, hidden, 1, bias=False), hidden),
            conv_bn_prelu(conv3x3(hidden, hidden, stride, groups=hidden), hidden),
            nn.Conv2d(hidden, out_channels, 1, bias=False),
            nn.BatchNorm2d(out_channels),
        )
        self.use_shortcut = stride == 1 and in_channels == out_channels

    def forward(self, x: torch.Tensor, refine: Optional[Callable[[torch.Tensor], torch.Tensor]] = None) -> torch.Tensor:
        """x + residual(x), or residual(x) where the shape changes; `refine` (e.g. SRANet's
        attention) acts on residual(x) before the add."""
        out = self.residual(x)
        if refine is not None:
            out = refine(out)
        return x + out if self.use_shortcut else out


class MobileFaceNet(Backbone):
    def __init__(self, width: float = 1.0, head: str = "gdc", dropout: float = 0.0,
                 conv3x3: Conv3x3Factory = plain_conv3x3, embedding_dim: int = EMBEDDING_DIM,
                 input_size=(INPUT_SIZE, INPUT_SIZE)):
        super().__init__()
        self.input_size = check_input_size(input_size)
        stem_channels = scaled(64, width)
        self.stem = nn.Sequential(
            conv_bn_prelu(conv3x3(3, stem_channels, 2), stem_channels),
            conv_bn_prelu(conv3x3(stem_channels, stem_channels, 1, groups=stem_channels), stem_channels),
        )
        blocks, self.block_channels, self.block_stage = [], [], []
        in_channels, stage = stem_channels, -1
        for expansion, channels, repeats, stride in BOTTLENECKS:
            out_channels = scaled(channels, width)
            stage += stride == 2
            for unit in range(repeats):
                blocks.append(InvertedResidual(in_channels, out_channels, stride if unit == 0 else 1,
                                               expansion, conv3x3))
                self.block_channels.append(out_channels)
                self.block_stage.append(stage)
                in_channels = out_channels
        self.blocks = nn.ModuleList(blocks)
        final_channels = scaled(512, width)
        self.head = nn.Sequential(
            conv_bn_prelu(nn.Conv2d(in_channels, final_channels, 1, bias=False), final_channels),
            EmbeddingHead(final_channels, head, dropout, embedding_dim, final_grid(self.input_size)),
        )


BACKBONES.register("mobilefacenet")(MobileFaceNet)
