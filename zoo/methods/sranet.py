"""SRANet: self residual attention after every IR block (Ling et al., IEEE Access 2019).

After each residual block of an IR-ResNet, a self channel attention (SCA) and then a self
spatial attention (SSA) refine the block's output F, each as a residual `F + BN(term)`:

    SCA  A_C = softmax_rows(pool(theta F) pool(phi F)^T)     (C x C/2)
         F_C = F + BN(A_C rho(F))                            rho: C -> C/2, not pooled
    SSA  A_S = softmax_rows((phi F)^T pool(theta F))         (HW x HW/4)
         F_S = F + BN(pool(rho F) A_S^T)                     rho: C -> C

theta/phi/rho are 1x1 convs (SCA: theta C->C, phi C->C/2; SSA: theta, phi C->C/r, r = 16,
at least one channel). `pool` is the paper's light reduction, 2x2 average pool + 2x2 max pool
(Eqs. 1, 5, 6: the two are summed); the ablation variants use only one of them ("avg",
"max") or none ("naive": the full HW x HW spatial matrix). Odd maps such as 7x7 are pooled
with ceil_mode, so a 7x7 map has a 4x4 key grid.

Readings of the paper:
- Eq. 8 normalises over the C/2 columns (its index name says i, its range says C/2); with
  "softmax on each row" and A_C of shape C x C/2 both say rows, so rows it is.
- The paper adds BN on the attention term and says no more. Here that BN's weight starts
  at zero (as non-local networks do), so every attention module starts as the identity and
  an untrained SRANet computes exactly its plain backbone. A consequence: in the very first
  step theta/phi/rho get zero gradient; they start learning once the BN weight moves.
- Tables 1-2 give model sizes. The SCA row (+14.3 MB on ResNet-50) matches theta+phi+rho
  exactly; the SSA row (+15.2 MB) is one more C x C conv than the text describes. This
  module follows the text.
"""
from __future__ import annotations

import math
from typing import Dict, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from ..backbones import INPUT_SIZE
from ..model import METHODS, Explanation, FaceModel, ModelConfig, check_images

VARIANTS = ("light", "naive", "avg", "max")


def reduce_spatial(x: torch.Tensor, variant: str, pool_size: int) -> torch.Tensor:
    """The key/value reduction of a variant: (N,C,H,W) -> (N,C,h',w')."""
    if variant == "naive":
        return x
    if variant == "avg":
        return F.avg_pool2d(x, pool_size, ceil_mode=True)
    if variant == "max":
        return F.max_pool2d(x, pool_size, ceil_mode=True)
    return F.avg_pool2d(x, pool_size, ceil_mode=True) + F.max_pool2d(x, pool_size, ceil_mode=True)


def zero_init_bn(channels: int) -> nn.BatchNorm2d:
    bn = nn.BatchNorm2d(channels)
    nn.init.zeros_(bn.weight)
    return bn


class SelfChannelAttention(nn.Module):
    """Light SCA: returns (F_C, A_C) with A_C of shape (N, C, C/reduction)."""

    def __init__(self, channels: int, variant: str, pool_size: int, reduction: int):
        super().__init__()
        reduced = max(1, channels // reduction)
        self.variant, self.pool_size = variant, pool_size
        self.theta = nn.Conv2d(channels, channels, 1)
        self.phi = nn.Conv2d(channels, reduced, 1)
        self.rho = nn.Conv2d(channels, reduced, 1)
        self.bn = zero_init_bn(channels)

    def forward(self, x: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        n, c, h, w = x.shape
        theta = reduce_spatial(self.theta(x), self.variant, self.pool_size).flatten(2)  # (N, C, K)
        phi = reduce_spatial(self.phi(x), self.variant, self.pool_size).flatten(2)  # (N, C/2, K)
        attention = torch.softmax(theta @ phi.transpose(1, 2), dim=-1)  # (N, C, C/2)
        refined = attention @ self.rho(x).flatten(2)  # (N, C, HW)
        return x + self.bn(refined.view(n, c, h, w)), attention


class SelfSpatialAttention(nn.Module):
    """Light SSA: returns (F_S, A_S) with A_S shaped (N, H, W, h', w'): per query, its key grid."""

    def __init__(self, channels: int, variant: str, pool_size: int, reduction: int):
        super().__init__()
        reduced = max(1, channels // reduction)
        self.variant, self.pool_size = variant, pool_size
        self.theta = nn.Conv2d(channels, reduced, 1)
        self.phi = nn.Conv2d(channels, reduced, 1)
        self.rho = nn.Conv2d(channels, channels, 1)
        self.bn = zero_init_bn(channels)

    def forward(self, x: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        n, c, h, w = x.shape
        keys = reduce_spatial(self.theta(x), self.variant, self.pool_size)  # (N, C/r, h', w')
        queries = self.phi(x).flatten(2)  # (N, C/r, HW)
        attention = torch.softmax(queries.transpose(1, 2) @ keys.flatten(2), dim=-1)  # (N, HW, K)
        values = reduce_spatial(self.rho(x), self.variant, self.pool_size).flatten(2)  # (N, C, K)
        refined = values @ attention.transpose(1, 2)  # (N, C, HW)
        return x + self.bn(refined.view(n, c, h, w)), attention.view(n, h, w, *keys.shape[-2:])


class SelfResidualAttention(nn.Module):
    """SCA then SSA after one block; either may be switched off for the ablation rows.

    Returns (refined, A_C or None, A_S or None); callers that only want features drop the rest,
    so no attention tensor outlives the forward pass unless `explain` keeps it.
    """

    def __init__(self, channels: int, variant: str, pool_size: int, channel_attention: bool,
                 spatial_attention: bool, channel_reduction: int, spatial_reduction: int):
        super().__init__()
        self.channel = (SelfChannelAttention(channels, variant, pool_size, channel_reduction)
                        if channel_attention else None)
        self.spatial = (SelfSpatialAttention(channels, variant, pool_size, spatial_reduction)
                        if spatial_attention else None)

    def forward(self, x: torch.Tensor) -> Tuple[torch.Tensor, Optional[torch.Tensor], Optional[torch.Tensor]]:
        channel_attention = spatial_attention = None
        if self.channel is not None:
            x, channel_attention = self.channel(x)
        if self.spatial is not None:
            x, spatial_attention = self.spatial(x)
        return x, channel_attention, spatial_attention


def _check_options(name: str, options: Dict) -> None:
    if options["variant"] not in VARIANTS:
        raise ValueError(f"{name}: variant must be one of {VARIANTS}, got {options['variant']!r}")
    for key in ("channel_attention", "spatial_attention"):
        if not isinstance(options[key], bool):
            raise ValueError(f"{name}: {key} must be True or False, got {options[key]!r}")
    for key in ("channel_reduction", "spatial_reduction", "pool_size"):
        value = options[key]
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name}: {key} must be a positive integer, got {value!r}")


@METHODS.register("sranet")
class SRANetModel(FaceModel):
    """An IR-ResNet with a SelfResidualAttention after every residual block.

    Options (paper defaults): `variant` "light" (avg+max pooling; "naive", "avg", "max" for
    Tables 1-2), `channel_attention` / `spatial_attention` True (Table 3: baseline, SSANet,
    SCANet, SRANet), `channel_reduction` 2 (SCA's phi and rho: C -> C/2), `spatial_reduction`
    16 (SSA's r), `pool_size` 2. The backbone keeps its BN-Dropout-FC-BN head, as in the paper.
    """

    method = "sranet"
    supported_backbones = ("ir18", "ir34", "ir50", "ir100")
    default_options = {"variant": "light", "channel_attention": True, "spatial_attention": True,
                       "channel_reduction": 2, "spatial_reduction": 16, "pool_size": 2}

    def __init__(self, config: ModelConfig):
        super().__init__(config)
        _check_options(self.name, self.options)
        self.attention = nn.ModuleList(SelfResidualAttention(channels, **self.options)
                                       for channels in self.backbone.block_channels)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = self.backbone.stem(images)
        for block, attention in zip(self.backbone.blocks, self.attention):
            x = attention(block(x))[0]
        return self.backbone.head(x)

    @torch.no_grad()
    def explain(self, images: torch.Tensor, query: Optional[Tuple[float, float]] = None) -> Explanation:
        """Per block i (0-based index into `backbone.blocks`):

        maps  "channel_mean/block{i}/before" | "/after": channel mean of the block output without
              and with its attention (Fig. 6 compares these), (N, H, W);
              "spatial_attention/block{i}": the A_S row of `query`, a (y, x) pixel of the
              112x112 input (default: the centre) mapped onto the block's grid, over the key
              grid, (N, h', w'); sums to 1.
        values "channel_attention/block{i}": A_C, (N, C, C/2), every block;
               "spatial_attention_matrix/block{i}": A_S, (N, HW, h'w'), blocks of the last
               two stages only (a 56x56 naive A_S is 3136 x 3136 per face).
        """
        check_images(images, self.name)
        query_y, query_x = (INPUT_SIZE / 2, INPUT_SIZE / 2) if query is None else query
        if not (0 <= query_y < INPUT_SIZE and 0 <= query_x < INPUT_SIZE):
            raise ValueError(f"{self.name}: query {query} is outside the {INPUT_SIZE}x{INPUT_SIZE} input")
        keep_matrix_from = max(self.backbone.block_stage) - 1
        explanation = Explanation()
        maps, values = explanation.maps, explanation.values
        was_training = self.training
        self.eval()
        try:
            x = self.backbone.stem(images)
            for i, (block, attention) in enumerate(zip(self.backbone.blocks, self.attention)):
                before = block(x)
                x, channel_attention, spatial_attention = attention(before)
                maps[f"channel_mean/block{i}/before"] = before.mean(dim=1)
                maps[f"channel_mean/block{i}/after"] = x.mean(dim=1)
                if channel_attention is not None:
                    values[f"channel_attention/block{i}"] = channel_attention
                if spatial_attention is not None:
                    h, w = before.shape[-2:]
                    row, col = math.floor(query_y * h / INPUT_SIZE), math.floor(query_x * w / INPUT_SIZE)
                    maps[f"spatial_attention/block{i}"] = spatial_attention[:, row, col].clone()
                    if self.backbone.block_stage[i] >= keep_matrix_from:
                        values[f"spatial_attention_matrix/block{i}"] = spatial_attention.flatten(3).flatten(1, 2)
        finally:
            self.train(was_training)
        return explanation
