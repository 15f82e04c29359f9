"""What every backbone exposes, so that methods can wrap any of them.

A backbone is `stem -> blocks (flat list) -> head`. Methods that act between blocks
(SRANet's attention, ARFace's intermediate masks, HPDA's taps on the last stage) walk
`blocks` themselves instead of each backbone growing method-specific hooks.
"""
from __future__ import annotations

from typing import List, Protocol, Sequence, Tuple, Union

import numpy as np
import torch
from torch import nn

INPUT_SIZE = 112
EMBEDDING_DIM = 512
# How aligned uint8 crops become network input: (x - mean) / std in this channel order. The
# defaults are every zoo model's; `ModelConfig` carries them (as timm's pretrained configs carry
# mean and std) so a checkpoint states its own, and `to_input` / `from_input` are the one
# implementation of the convention and its inverse.
INPUT_MEAN, INPUT_STD, CHANNEL_ORDERS = 127.5, 128.0, ("RGB", "BGR")


def to_input(crops: Union[np.ndarray, torch.Tensor], mean: float = INPUT_MEAN, std: float = INPUT_STD,
             channel_order: str = "RGB") -> torch.Tensor:
    """(N,H,W,3) uint8 RGB crops (numpy or torch) -> (N,3,H,W) float32 network input."""
    tensor = torch.as_tensor(np.ascontiguousarray(crops) if isinstance(crops, np.ndarray) else crops)
    x = tensor.permute(0, 3, 1, 2).to(torch.float32, copy=True).sub_(mean).div_(std)
    return x.flip(1) if channel_order == "BGR" else x


def from_input(images: torch.Tensor, mean: float = INPUT_MEAN, std: float = INPUT_STD,
               channel_order: str = "RGB") -> np.ndarray:
    """The inverse of `to_input`: (N,3,H,W) float -> (N,H,W,3) uint8 RGB (exact on its output)."""
    images = images.detach().float().cpu()
    images = images.flip(1) if channel_order == "BGR" else images
    pixels = (images * std + mean).round().clamp(0, 255).to(torch.uint8)
    return np.ascontiguousarray(pixels.permute(0, 2, 3, 1).numpy())
# The ArcFace 112x112 alignment template (eyes, nose tip, mouth corners): every model's input
# has its landmarks here, and ARFace's patches sit on them.
TEMPLATE_LANDMARKS = ((38.2946, 51.6963), (73.5318, 51.5014), (56.0252, 71.7366),
                      (41.5493, 92.3655), (70.7299, 92.2041))


class Conv3x3Factory(Protocol):
    """Builds the 3x3 convolution a backbone uses (SCAN swaps in its scale-attention conv)."""

    def __call__(self, in_channels: int, out_channels: int, stride: int = 1, groups: int = 1) -> nn.Module: ...


def plain_conv3x3(in_channels: int, out_channels: int, stride: int = 1, groups: int = 1) -> nn.Module:
    return nn.Conv2d(in_channels, out_channels, 3, stride, 1, groups=groups, bias=False)


def scaled(channels: int, width: float) -> int:
    """Channel count after the width multiplier; at least 8 so attention reductions stay valid."""
    return max(8, int(round(channels * width)))


class Backbone(nn.Module):
    """`stem`, `blocks` and `head` plus the bookkeeping methods need.

    Subclasses fill `stem`, `blocks`, `head`, `block_channels` (output channels per block)
    and `block_stage` (stage index per block; the last stage runs at 7x7).
    """

    stem: nn.Module
    blocks: nn.ModuleList
    head: nn.Module
    block_channels: List[int]
    block_stage: List[int]
    input_size: Tuple[int, int] = (INPUT_SIZE, INPUT_SIZE)

    def begin(self, images: torch.Tensor) -> torch.Tensor:
        """The stem applied to the network's view of the aligned 112x112 face.

        A network trained on a narrower crop (CASIA's 112x96 MobileFaceNet sees columns
        8:104) keeps the one input contract of the zoo and takes its centre crop here.
        """
        height, width = self.input_size
        top, left = (images.shape[-2] - height) // 2, (images.shape[-1] - width) // 2
        if (top, left) != (0, 0):
            images = images[..., top:top + height, left:left + width]
        return self.stem(images)

    def features(self, images: torch.Tensor) -> torch.Tensor:
        x = self.begin(images)
        for block in self.blocks:
            x = block(x)
        return x

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(images))

    @property
    def last_stage_blocks(self) -> List[int]:
        last = max(self.block_stage)
        return [i for i, s in enumerate(self.block_stage) if s == last]


class EmbeddingHead(nn.Module):
    """Final feature map (C x 7 x 7) -> embedding.

    `fc` is ArcFace's BN-Dropout-FC-BN; `gdc` replaces the big FC by a global depthwise
    7x7 conv (MobileFaceNet's head), which keeps small zoo models a few MB.
    """

    def __init__(self, channels: int, kind: str = "fc", dropout: float = 0.0,
                 embedding_dim: int = EMBEDDING_DIM, spatial: Tuple[int, int] = (7, 7)):
        super().__init__()
        if kind == "fc":
            self.reduce = nn.Sequential(nn.BatchNorm2d(channels), nn.Dropout(dropout), nn.Flatten())
            in_features = channels * spatial[0] * spatial[1]
        elif kind == "gdc":
            self.reduce = nn.Sequential(
                nn.Conv2d(channels, channels, spatial, groups=channels, bias=False),
                nn.BatchNorm2d(channels), nn.Dropout(dropout), nn.Flatten())
            in_features = channels
        else:
            raise ValueError(f"unknown head {kind!r}; use 'fc' or 'gdc'")
        self.fc = nn.Linear(in_features, embedding_dim)
        self.bn = nn.BatchNorm1d(embedding_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn(self.fc(self.reduce(x)))


def check_input_size(input_size: Sequence[int]) -> Tuple[int, int]:
    """A (height, width) crop of the 112x112 face that four stride-2 stages divide evenly."""
    size = tuple(int(v) for v in input_size)
    if len(size) != 2 or any(v < 16 or v > INPUT_SIZE or v % 16 for v in size):
        raise ValueError(f"input_size must be (height, width), multiples of 16 up to {INPUT_SIZE}, got {input_size!r}")
    return size


def final_grid(input_size: Tuple[int, int]) -> Tuple[int, int]:
    """Feature-map size after the four stride-2 stages every backbone has (112 -> 7)."""
    return input_size[0] // 16, input_size[1] // 16
