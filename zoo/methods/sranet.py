"""SRANet: self residual attention in every residual block (Ling et al., IEEE Access 2019).

In each residual block (IR-ResNet's IR block, MobileFaceNet's bottleneck), a self channel
attention (SCA) and then a self spatial attention (SSA) refine a feature F, each as a
residual `F + BN(term)`:

    SCA  A_C = softmax_rows(pool(theta F) pool(phi F)^T)     (C x C/2)
         F_C = F + BN(A_C rho(F))                            rho: C -> C/2, not pooled
    SSA  A_S = softmax_rows((phi F)^T pool(theta F))         (HW x HW/4)
         F_S = F + BN(pool(rho F) A_S^T)                     rho: C -> C

theta/phi/rho are 1x1 convs (SCA: theta C->C, phi C->C/2; SSA: theta, phi C->C/r, r = 16,
at least one channel). `pool` is the paper's light reduction, 2x2 average pool + 2x2 max pool
(Eqs. 1, 5, 6: the two are summed); the ablation variants use only one of them ("avg",
"max") or none ("naive": the full HW x HW spatial matrix). Odd maps such as 7x7 are pooled
with ceil_mode, so a 7x7 map has a 4x4 key grid.

Where the attention sits (`placement`):
- "in_block" (default): Fig. 4 draws the attention inside the residual block, on the
  residual branch, before the block's shortcut sum: X_R = X + A(R(X)), A = SSA o SCA, R the
  block's residual branch ("finally we can obtain the refined feature X_R by residual
  shortcut learning"). Blocks whose shortcut is a projection (IR's 1x1 conv + BN at a
  downsampling unit) add that projection instead of X; MobileFaceNet's bottlenecks without a
  shortcut (stride 2 or a channel change) give A(R(X)).
- "after_block": the attention on the block's output, A(R(X) + X) (the text's "append them
  after every residual bottleneck"; FaceScope's first reading).
With the zero-initialised attention BN (below) both start as the identity, so SRANet starts
from a trained plain model (`init_from`, by name) computing exactly that model.

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

How it is computed (the maths above, to float rounding; tests/test_sranet.py keeps the plain
formulation as the reference): on a channels_last map, where every product reads rows of
channels and the 2x2 pooling is vectorised (on contiguous NCHW maps the max pool alone took a
quarter of SRANet-MobileFaceNet's time); the projections one pooling serves (SCA's theta and
phi, SSA's theta and rho) as one conv with their kernels stacked; SSA's HW x HW/4 attention
by blocks of query rows, never whole (`attend`). What is left is the attention's own
arithmetic: a max pool does not commute with a projection, so every pooled projection runs at
full resolution, and SSA's product with the values costs C HW^2/4 per block (at IR-50's 56x56
stage, two thirds of what the block's two 3x3 convs cost). `python bench/method_cost.py`
measures the cost against the backbone. An exported graph computes the same maths in its own
layout (`GraphSelfResidualAttention`).
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
PLACEMENTS = ("in_block", "after_block")
# Logits per block of query rows in `attend`: 2^18 values (1 MiB of fp32), about one core's cache.
ATTENTION_BLOCK = 1 << 18


def reduce_spatial(x: torch.Tensor, variant: str, pool_size: int) -> torch.Tensor:
    """The key/value reduction of a variant: (N,C,H,W) -> (N,C,h',w'). ceil_mode only where a side
    does not divide (a 7x7 map): it changes nothing elsewhere, and onnxruntime's average pool with
    it takes a slow path (11% of the exported SRANet-MobileFaceNet's time in its profile)."""
    if variant == "naive":
        return x
    ceil = bool(x.shape[-2] % pool_size or x.shape[-1] % pool_size)
    if variant == "avg":
        return F.avg_pool2d(x, pool_size, ceil_mode=ceil)
    if variant == "max":
        return F.max_pool2d(x, pool_size, ceil_mode=ceil)
    return F.avg_pool2d(x, pool_size, ceil_mode=ceil) + F.max_pool2d(x, pool_size, ceil_mode=ceil)


def tokens(x: torch.Tensor) -> torch.Tensor:
    """(N,C,H,W) -> (N,HW,C), the layout every product here reads: a view of a channels_last map."""
    return x.permute(0, 2, 3, 1).flatten(1, 2)


def from_tokens(x: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """(N,HW,C) -> (N,C,H,W) held in channels_last memory: a view, no copy."""
    return x.unflatten(1, (height, width)).permute(0, 3, 1, 2)


def attend(queries: torch.Tensor, keys: torch.Tensor, values: torch.Tensor,
           keep_attention: bool) -> Tuple[torch.Tensor, Optional[torch.Tensor]]:
    """softmax_rows(queries keys^T) values: (N,L,d), (N,S,d), (N,S,e) -> (N,L,e), and the (N,L,S)
    attention itself when `keep_attention` (explain).

    Otherwise, once the N x L x S logits outgrow ATTENTION_BLOCK, by blocks of query rows (whole
    faces together where they are small), so that a block's logits stay in cache: at 56x56 the
    light HW x HW/4 matrix is 10 MB a face, and writing it out and reading it back twice costs
    more than the products themselves. The blocks are an eager-mode device of the CPU: a GPU
    (where each block would be a few small kernel launches) and a graph being compiled or
    exported (torch.compile, ONNX: blocks would tie the graph to one batch size) take the
    whole matrix.
    """
    length, key_count = queries.shape[1], keys.shape[1]
    whole = (keep_attention or queries.device.type != "cpu" or torch.compiler.is_compiling()
             or len(queries) * length * key_count <= ATTENTION_BLOCK)
    if whole:
        attention = torch.softmax(queries @ keys.transpose(1, 2), dim=-1)
        return attention @ values, attention if keep_attention else None
    rows = max(1, ATTENTION_BLOCK // key_count)
    faces = max(1, ATTENTION_BLOCK // (length * key_count))
    results = []
    for face_queries, face_keys, face_values in zip(queries.split(faces), keys.split(faces), values.split(faces)):
        key_columns = face_keys.transpose(1, 2)
        results.append(torch.cat([torch.softmax(block @ key_columns, dim=-1) @ face_values
                                  for block in face_queries.split(rows, dim=1)], dim=1))
    return torch.cat(results), None


def zero_init_bn(channels: int) -> nn.BatchNorm2d:
    bn = nn.BatchNorm2d(channels)
    nn.init.zeros_(bn.weight)
    return bn


class _SelfAttention(nn.Module):
    """The three 1x1 projections (theta, phi, rho) and the zero-initialised BN both attentions
    share; `full` names the projections that keep all channels (the rest reduce them)."""

    def __init__(self, channels: int, variant: str, pool_size: int, reduction: int, full: Tuple[str, ...]):
        super().__init__()
        reduced = max(1, channels // reduction)
        self.variant, self.pool_size = variant, pool_size
        for name in ("theta", "phi", "rho"):
            setattr(self, name, nn.Conv2d(channels, channels if name in full else reduced, 1))
        self.bn = zero_init_bn(channels)

    def project(self, x: torch.Tensor, *names: str) -> torch.Tensor:
        """The 1x1 convs `names` of a channels_last x as (N, HW, c) tokens: one matrix product of
        x's tokens with their kernels stacked, so x is read once (a 1x1 conv is a product; as one,
        it takes the BLAS path, where torch's CPU conv took its slow generic one)."""
        weight, bias = self.stacked(*names)
        return F.linear(tokens(x), weight.flatten(1), bias)

    def stacked(self, *names: str) -> Tuple[torch.Tensor, torch.Tensor]:
        """The 1x1 convs `names` as one: their kernels (c, C, 1, 1) and biases stacked."""
        convs = [getattr(self, name) for name in names]
        return torch.cat([conv.weight for conv in convs]), torch.cat([conv.bias for conv in convs])

    def pooled_projections(self, x: torch.Tensor, *names: str) -> Tuple[torch.Tensor, ...]:
        """The projections `names` reduced by the variant's pooling (one pooling serves them all),
        a (N, c, h', w') map each."""
        projected = from_tokens(self.project(x, *names), *x.shape[-2:])
        pooled = reduce_spatial(projected, self.variant, self.pool_size)
        return pooled.split([getattr(self, name).out_channels for name in names], dim=1)

    def residual(self, x: torch.Tensor, refined: torch.Tensor) -> torch.Tensor:
        """x + BN(term), the term given as (N, HW, C) tokens."""
        return x + self.bn(from_tokens(refined, *x.shape[-2:]))


class SelfChannelAttention(_SelfAttention):
    """Light SCA: returns (F_C, A_C) with A_C of shape (N, C, C/reduction) (small at any map size,
    so it is always formed)."""

    def __init__(self, channels: int, variant: str, pool_size: int, reduction: int):
        super().__init__(channels, variant, pool_size, reduction, full=("theta",))

    def forward(self, x: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        theta, phi = map(tokens, self.pooled_projections(x, "theta", "phi"))  # (N, K, C), (N, K, C/2)
        attention = torch.softmax(theta.transpose(1, 2) @ phi, dim=-1)  # (N, C, C/2)
        refined = self.project(x, "rho") @ attention.transpose(1, 2)  # (N, HW, C)
        return self.residual(x, refined), attention


class SelfSpatialAttention(_SelfAttention):
    """Light SSA: returns (F_S, A_S) with A_S shaped (N, H, W, h', w') (per query, its key grid)
    when `keep_attention`, else (F_S, None)."""

    def __init__(self, channels: int, variant: str, pool_size: int, reduction: int):
        super().__init__(channels, variant, pool_size, reduction, full=("rho",))

    def forward(self, x: torch.Tensor, keep_attention: bool = False) -> Tuple[torch.Tensor, Optional[torch.Tensor]]:
        n, _, h, w = x.shape
        keys, values = self.pooled_projections(x, "theta", "rho")  # (N, C/r, h', w'), (N, C, h', w')
        queries = self.project(x, "phi")  # (N, HW, C/r)
        refined, attention = attend(queries, tokens(keys), tokens(values), keep_attention)  # (N, HW, C), (N, HW, K)
        if attention is not None:
            attention = attention.view(n, h, w, *keys.shape[-2:])
        return self.residual(x, refined), attention


class SelfResidualAttention(nn.Module):
    """SCA then SSA after one block; either may be switched off for the ablation rows.

    Returns (refined, A_C or None, A_S or None), the attentions only with `keep_attention`
    (explain), so no attention tensor outlives the forward pass otherwise. Works on a
    channels_last copy of x (where the products read rows of channels and the 2x2 pooling is
    vectorised) and hands back x's own memory format.
    """

    def __init__(self, channels: int, variant: str, pool_size: int, channel_attention: bool,
                 spatial_attention: bool, channel_reduction: int, spatial_reduction: int):
        super().__init__()
        self.channel = (SelfChannelAttention(channels, variant, pool_size, channel_reduction)
                        if channel_attention else None)
        self.spatial = (SelfSpatialAttention(channels, variant, pool_size, spatial_reduction)
                        if spatial_attention else None)

    def forward(self, x: torch.Tensor, keep_attention: bool = False
                ) -> Tuple[torch.Tensor, Optional[torch.Tensor], Optional[torch.Tensor]]:
        channels_last = x.is_contiguous(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
        channel_attention = spatial_attention = None
        if self.channel is not None:
            x, channel_attention = self.channel(x)
        if self.spatial is not None:
            x, spatial_attention = self.spatial(x, keep_attention)
        return (x if channels_last else x.contiguous(),
                channel_attention if keep_attention else None, spatial_attention)

    def graph_form(self) -> nn.Module:
        """What an exported graph runs in this module's place (`zoo.export`): its eval-mode function
        written for a graph (GraphSelfResidualAttention)."""
        return GraphSelfResidualAttention(self)


def _conv1x1(x: torch.Tensor, module: _SelfAttention, *names: str) -> torch.Tensor:
    """The 1x1 convs `names` of `module` as one Conv over their stacked kernels."""
    return F.conv2d(x, *module.stacked(*names))


def _pooled(x: torch.Tensor, module: _SelfAttention, *names: str) -> Tuple[torch.Tensor, ...]:
    """The projections `names`, reduced by the variant's pooling, as (N, c, h'w') each."""
    pooled = reduce_spatial(_conv1x1(x, module, *names), module.variant, module.pool_size).flatten(2)
    return pooled.split([getattr(module, name).out_channels for name in names], dim=1)


def _bn_affine(bn: nn.BatchNorm2d) -> Tuple[torch.Tensor, torch.Tensor]:
    """An eval-mode BN as y * scale + shift, both (C, 1)."""
    scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
    return scale[:, None], (bn.bias - bn.running_mean * scale)[:, None]


class GraphSelfResidualAttention(nn.Module):
    """SelfResidualAttention's eval-mode function as an ONNX graph should compute it: the products
    channel-first on NCHW maps (their reshapes are free there, where the token layout of the eager
    module costs a Transpose per product), every projection a 1x1 Conv (onnxruntime's fast blocked
    kernels), and each attention BN folded into the small side of its product, so no BN or extra
    pass runs over the map:
        SCA  x + BN(A_C r) = x + (scale * A_C) r + shift                      (C x C/2 scaled)
        SSA  x + BN(V A_S^T) = x + (scale * V + shift) A_S^T, as A_S's rows sum to 1  (C x h'w')
    The maths of the reference formulation in tests/test_sranet.py. onnxruntime, one thread, the
    zoo's SRANet-MobileFaceNet: 12.4 CPU ms per face against 13.8-14.4 for the eager module's graph
    (batch 1 and 8, timed in alternation).
    """

    def __init__(self, attention: SelfResidualAttention):
        super().__init__()
        self.channel, self.spatial = attention.channel, attention.spatial

    def forward(self, x: torch.Tensor, keep_attention: bool = False) -> Tuple[torch.Tensor, None, None]:
        if keep_attention:
            raise ValueError("the exported form keeps no attention: explain runs on the torch model")
        height, width = x.shape[-2:]
        if self.channel is not None:
            theta, phi = _pooled(x, self.channel, "theta", "phi")  # (N, C, K), (N, C/2, K)
            scale, shift = _bn_affine(self.channel.bn)
            attention = torch.softmax(theta @ phi.transpose(1, 2), dim=-1)  # (N, C, C/2)
            term = (scale * attention) @ _conv1x1(x, self.channel, "rho").flatten(2) + shift
            x = x + term.unflatten(2, (height, width))
        if self.spatial is not None:
            keys, values = _pooled(x, self.spatial, "theta", "rho")  # (N, C/r, K), (N, C, K)
            scale, shift = _bn_affine(self.spatial.bn)
            queries = _conv1x1(x, self.spatial, "phi").flatten(2)  # (N, C/r, HW)
            attention = torch.softmax(queries.transpose(1, 2) @ keys, dim=-1)  # (N, HW, K)
            term = (scale * values + shift) @ attention.transpose(1, 2)  # (N, C, HW)
            x = x + term.unflatten(2, (height, width))
        return x, None, None


def _check_options(name: str, options: Dict) -> None:
    if options["variant"] not in VARIANTS:
        raise ValueError(f"{name}: variant must be one of {VARIANTS}, got {options['variant']!r}")
    if options["placement"] not in PLACEMENTS:
        raise ValueError(f"{name}: placement must be one of {PLACEMENTS}, got {options['placement']!r}")
    for key in ("channel_attention", "spatial_attention"):
        if not isinstance(options[key], bool):
            raise ValueError(f"{name}: {key} must be True or False, got {options[key]!r}")
    for key in ("channel_reduction", "spatial_reduction", "pool_size"):
        value = options[key]
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name}: {key} must be a positive integer, got {value!r}")


@METHODS.register("sranet")
class SRANetModel(FaceModel):
    """An IR-ResNet or MobileFaceNet with a SelfResidualAttention in every residual block.

    Options (paper defaults): `variant` "light" (avg+max pooling; "naive", "avg", "max" for
    Tables 1-2), `channel_attention` / `spatial_attention` True (Table 3: baseline, SSANet,
    SCANet, SRANet), `channel_reduction` 2 (SCA's phi and rho: C -> C/2), `spatial_reduction`
    16 (SSA's r), `pool_size` 2, `placement` "in_block" (Fig. 4: X + A(R(X))) or
    "after_block" (A(R(X) + X)). The backbone keeps its own head (IR: BN-Dropout-FC-BN, as
    in the paper; MobileFaceNet: 1x1 conv + GDC). On MobileFaceNet (not in the paper) SCA
    and SSA refine every bottleneck the same way.
    """

    method = "sranet"
    supported_backbones = ("ir18", "ir34", "ir50", "ir100", "mobilefacenet")
    default_options = {"variant": "light", "channel_attention": True, "spatial_attention": True,
                       "channel_reduction": 2, "spatial_reduction": 16, "pool_size": 2, "placement": "in_block"}
    analyses = ("residual-attention",)

    def __init__(self, config: ModelConfig):
        super().__init__(config)
        _check_options(self.name, self.options)
        attention_options = {k: v for k, v in self.options.items() if k != "placement"}
        self.attention = nn.ModuleList(SelfResidualAttention(channels, **attention_options)
                                       for channels in self.backbone.block_channels)

    def _block(self, block: nn.Module, attention: SelfResidualAttention, x: torch.Tensor,
               keep: Optional[list] = None) -> torch.Tensor:
        """One block with its attention where `placement` puts it; `keep` collects (A_C, A_S)."""
        def refine(features: torch.Tensor) -> torch.Tensor:
            refined, channel_attention, spatial_attention = attention(features, keep_attention=keep is not None)
            if keep is not None:
                keep.append((channel_attention, spatial_attention))
            return refined

        if self.options["placement"] == "in_block":
            return block(x, refine=refine)
        return refine(block(x))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = self.backbone.begin(images)
        for block, attention in zip(self.backbone.blocks, self.attention):
            x = self._block(block, attention, x)
        return self.backbone.head(x)

    @torch.no_grad()
    def explain(self, images: torch.Tensor, query: Optional[Tuple[float, float]] = None) -> Explanation:
        """Per block i (0-based index into `backbone.blocks`):

        maps  "channel_mean/block{i}/before" | "/after": channel mean of the block output without
              and with its attention (Fig. 6 compares these), (N, H, W); both from the same
              block input (the attended network's);
              "spatial_attention/block{i}": the A_S row of `query`, a (y, x) pixel of the
              112x112 input (default: the centre) mapped onto the block's grid (through the
              backbone's centre crop, if its input_size is narrower), over the key grid,
              (N, h', w'); sums to 1.
        values "channel_attention/block{i}": A_C, (N, C, C/2), every block;
               "spatial_attention_matrix/block{i}": A_S, (N, HW, h'w'), blocks of the last
               two stages only (a 56x56 naive A_S is 3136 x 3136 per face).
        """
        check_images(images, self.name)
        query_y, query_x = (INPUT_SIZE / 2, INPUT_SIZE / 2) if query is None else query
        if not (0 <= query_y < INPUT_SIZE and 0 <= query_x < INPUT_SIZE):
            raise ValueError(f"{self.name}: query {query} is outside the {INPUT_SIZE}x{INPUT_SIZE} input")
        keep_matrix_from = max(self.backbone.block_stage) - 1
        crop_height, crop_width = self.backbone.input_size  # the network may see a centre crop
        crop_top, crop_left = (INPUT_SIZE - crop_height) // 2, (INPUT_SIZE - crop_width) // 2
        explanation = Explanation()
        maps, values = explanation.maps, explanation.values
        with self.evaluating():
            x = self.backbone.begin(images)
            for i, (block, attention) in enumerate(zip(self.backbone.blocks, self.attention)):
                before, kept = block(x), []
                x = self._block(block, attention, x, kept)
                (channel_attention, spatial_attention), = kept
                maps[f"channel_mean/block{i}/before"] = before.mean(dim=1)
                maps[f"channel_mean/block{i}/after"] = x.mean(dim=1)
                if channel_attention is not None:
                    values[f"channel_attention/block{i}"] = channel_attention
                if spatial_attention is not None:
                    h, w = spatial_attention.shape[1:3]
                    row = _grid_index(query_y, crop_top, crop_height, h)
                    col = _grid_index(query_x, crop_left, crop_width, w)
                    maps[f"spatial_attention/block{i}"] = spatial_attention[:, row, col].clone()
                    if self.backbone.block_stage[i] >= keep_matrix_from:
                        values[f"spatial_attention_matrix/block{i}"] = spatial_attention.flatten(3).flatten(1, 2)
        return explanation


def _grid_index(coordinate: float, crop_start: int, crop_size: int, cells: int) -> int:
    """The cell of a `cells`-long feature grid over the crop [crop_start, crop_start + crop_size)
    of the 112-pixel input that holds input `coordinate` (clamped onto the crop)."""
    return min(cells - 1, max(0, math.floor((coordinate - crop_start) * cells / crop_size)))
