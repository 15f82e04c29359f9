"""IR-ResNet, the ArcFace ("improved residual") backbone used by SCAN, SRANet, ARFace and HPDA.

Unit: BN-Conv3x3-BN-PReLU-Conv3x3(stride)-BN, plus a shortcut (identity, or 1x1 conv + BN
when the shape changes). Stem: Conv3x3-BN-PReLU at full 112x112 resolution; four stages
downsample to 56, 28, 14, 7.
"""
from __future__ import annotations

from typing import Callable, Optional

import torch
from torch import nn

from .base import (EMBEDDING_DIM, INPUT_SIZE, Backbone, Conv3x3Factory, EmbeddingHead, check_input_size, final_grid,
                   plain_conv3x3, scaled)
from .registry import BACKBONES

UNITS_PER_STAGE = {18: (2, 2, 2, 2), 34: (3, 4, 6, 3), 50: (3, 4, 14, 3), 100: (3, 13, 30, 3)}
STAGE_CHANNELS = (64, 128, 256, 512)


class IRBlock(nn.Module):
    def __init__(self, in_channels: int, out_channels: int, stride: int, conv3x3: Conv3x3Factory):
        super().__init__()
        self.residual = nn.Sequential(
            nn.BatchNorm2d(in_channels),
            conv3x3(in_channels, out_channels, 1),
            nn.BatchNorm2d(out_channels),
            nn.PReLU(out_channels),
            conv3x3(out_channels, out_channels, stride),
            nn.BatchNorm2d(out_channels),
        )
        if in_channels == out_channels and stride == 1:
            self.shortcut = nn.Identity()
        else:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1, stride, bias=False), nn.BatchNorm2d(out_channels))

    def forward(self, x: torch.Tensor, refine: Optional[Callable[[torch.Tensor], torch.Tensor]] = None) -> torch.Tensor:
        """shortcut(x) + residual(x); `refine` (e.g. SRANet's attention) acts on residual(x) before the add."""
        out = self.residual(x)
        if refine is not None:
            out = refine(out)
        return out + self.shortcut(x)


class IRResNet(Backbone):
    def __init__(self, depth: int, width: float = 1.0, head: str = "fc", dropout: float = 0.0,
                 conv3x3: Conv3x3Factory = plain_conv3x3, embedding_dim: int = EMBEDDING_DIM,
                 input_size=(INPUT_SIZE, INPUT_SIZE)):
        super().__init__()
        self.input_size = check_input_size(input_size)
        if depth not in UNITS_PER_STAGE:
            raise ValueError(f"IR-ResNet depth {depth} unsupported; use one of {sorted(UNITS_PER_STAGE)}")
        channels = [scaled(c, width) for c in STAGE_CHANNELS]
        self.stem = nn.Sequential(conv3x3(3, channels[0], 1), nn.BatchNorm2d(channels[0]), nn.PReLU(channels[0]))
        blocks, self.block_channels, self.block_stage = [], [], []
        in_channels = channels[0]
        for stage, (units, out_channels) in enumerate(zip(UNITS_PER_STAGE[depth], channels)):
            for unit in range(units):
                blocks.append(IRBlock(in_channels, out_channels, 2 if unit == 0 else 1, conv3x3))
                self.block_channels.append(out_channels)
                self.block_stage.append(stage)
                in_channels = out_channels
        self.blocks = nn.ModuleList(blocks)
        self.head = EmbeddingHead(in_channels, head, dropout, embedding_dim, final_grid(self.input_size))


def _register(depth: int) -> None:
    @BACKBONES.register(f"ir{depth}")
    def build(**kwargs) -> IRResNet:
        return IRResNet(depth, **kwargs)


for _depth in UNITS_PER_STAGE:
    _register(_depth)
