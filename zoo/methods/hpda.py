"""HPDA: hierarchical pyramid diverse attention (Wang et al., CVPR 2020).

Global CNN: GAP of the backbone's final feature map + FC 512. Local CNNs: the outputs of
the last three blocks of the last stage (7x7 maps) each go through a pyramid diverse
attention (PDA), and a hierarchical bilinear pooling (HBP) fuses the three, then FC 512.
Joint: concat (1024) -> FC 512 -> BN1d. The backbone's own embedding head is removed.

PDA, per tapped layer X (c x h x w): for scale i (0-based) X is average-pooled to
max(1, h - 2i) (7, 5, 3, 1 for S = 4, as the paper's S ablation lists); each of B LANets
(1x1 conv c -> c/r, ReLU, 1x1 conv -> 1, sigmoid) gives a mask at that scale, upsampled
bilinearly to h x w; R = X * M; a scale's B maps are concatenated -> 1x1 conv -> c; the S
scales are concatenated (S*c channels).

Divergence loss (Eq. 2), per layer:
    L_D = 2/(S B (B-1)) sum_i sum_j sum_{k != j} max(0, t - d(M_i^j, M_i^k)),
d the SUM over the h x w pixels of the squared difference of two upsampled masks. The paper
writes (M^j - M^k)^2 with no reduction; a per-pixel hinge with t = 1 and masks in [0, 1]
would ask for exactly complementary binary masks, so the pixel sum is read as a distance
between whole masks. The double sum counts every pair twice and is kept as written (twice
the mean hinge; its weight in the total loss absorbs the factor). With B = 1 there are no
pairs and L_D = 0. Averaged over the batch and the tapped layers.

HBP (Eq. 5): z = concat(U'x1 o V'x2, U'x1 o S'x3, V'x2 o S'x3), U, V, S 1x1 convs to d,
each product sum-pooled over space, then signed square root and L2 normalisation (the
standard bilinear-pooling normalisation, which the paper leaves implicit).
"""
from __future__ import annotations

from itertools import combinations
from typing import Dict, List, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from ..backbones import EMBEDDING_DIM
from ..model import METHODS, Explanation, FaceModel, ModelConfig, check_images

FUSIONS = ("hbp", "concat", "add")
HEADS = ("both", "global", "local")


class LANet(nn.Sequential):
    """Local attention network: a spatial mask in [0, 1] from two 1x1 convs."""

    def __init__(self, channels: int, reduction: int):
        hidden = max(1, channels // reduction)
        super().__init__(nn.Conv2d(channels, hidden, 1), nn.ReLU(inplace=True), nn.Conv2d(hidden, 1, 1), nn.Sigmoid())


class PyramidDiverseAttention(nn.Module):
    """One tapped layer: (N,c,h,w) -> (features (N,S*c,h,w), upsampled masks (N,S,B,h,w))."""

    def __init__(self, channels: int, scales: int, branches: int, reduction: int):
        super().__init__()
        self.lanets = nn.ModuleList(
            nn.ModuleList(LANet(channels, reduction) for _ in range(branches)) for _ in range(scales))
        self.merges = nn.ModuleList(nn.Conv2d(branches * channels, channels, 1) for _ in range(scales))

    def forward(self, x: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        h, w = x.shape[-2:]
        features, masks = [], []
        for i, (lanets, merge) in enumerate(zip(self.lanets, self.merges)):
            pooled = F.adaptive_avg_pool2d(x, (max(1, h - 2 * i), max(1, w - 2 * i)))
            scale_masks = torch.cat([F.interpolate(lanet(pooled), size=(h, w), mode="bilinear", align_corners=False)
                                     for lanet in lanets], dim=1)  # (N, B, h, w)
            features.append(merge((x.unsqueeze(1) * scale_masks.unsqueeze(2)).flatten(1, 2)))
            masks.append(scale_masks)
        return torch.cat(features, dim=1), torch.stack(masks, dim=1)


def divergence_loss(masks: torch.Tensor, margin: float) -> torch.Tensor:
    """Eq. 2 for masks (N, S, B, h, w), averaged over the batch (see the module docstring)."""
    n, scales, branches = masks.shape[:3]
    if branches < 2:
        return masks.new_zeros(())
    flat = masks.flatten(3)
    distance = (flat.unsqueeze(3) - flat.unsqueeze(2)).pow(2).sum(dim=-1)  # (N, S, B, B)
    hinge = (margin - distance).clamp(min=0)
    pairs = ~torch.eye(branches, dtype=torch.bool, device=masks.device)
    per_face = hinge[:, :, pairs].sum(dim=(1, 2)) * 2 / (scales * branches * (branches - 1))
    return per_face.mean()


def signed_sqrt_l2(z: torch.Tensor) -> torch.Tensor:
    return F.normalize(torch.sign(z) * torch.sqrt(z.abs() + 1e-10), dim=1)


class LayerFusion(nn.Module):
    """Fuses the PDA outputs of the tapped layers into one vector.

    Every input gets its own 1x1 projection to `dim`. "hbp" multiplies every pair of
    projections (Eq. 5); "concat" and "add" are the paper's alternatives, which it builds
    with the same projections "for fair comparison". Each sum-pooled term is signed-sqrt and
    L2 normalised, so the three differ only in how layers interact.
    """

    def __init__(self, channels: List[int], kind: str, dim: int):
        super().__init__()
        self.kind = kind
        self.projections = nn.ModuleList(nn.Conv2d(c, dim, 1) for c in channels)
        terms = {"hbp": len(channels) * (len(channels) - 1) // 2, "concat": len(channels), "add": 1}[kind]
        self.out_features = terms * dim

    def forward(self, features: List[torch.Tensor]) -> torch.Tensor:
        projected = [projection(f) for projection, f in zip(self.projections, features)]
        if self.kind == "hbp":
            terms = [projected[a] * projected[b] for a, b in combinations(range(len(projected)), 2)]
        elif self.kind == "concat":
            terms = projected
        else:
            terms = [torch.stack(projected).sum(dim=0)]
        return torch.cat([signed_sqrt_l2(term.sum(dim=(2, 3))) for term in terms], dim=1)


def _check_options(name: str, options: Dict) -> None:
    for key in ("scales", "branches", "reduction", "hbp_dim"):
        value = options[key]
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name}: {key} must be a positive integer, got {value!r}")
    if isinstance(options["margin"], bool) or not isinstance(options["margin"], (int, float)) or options["margin"] < 0:
        raise ValueError(f"{name}: margin must be a non-negative number, got {options['margin']!r}")
    for key in ("diverse", "hierarchical"):
        if not isinstance(options[key], bool):
            raise ValueError(f"{name}: {key} must be True or False, got {options[key]!r}")
    if options["fusion"] not in FUSIONS:
        raise ValueError(f"{name}: fusion must be one of {FUSIONS}, got {options['fusion']!r}")
    if options["heads"] not in HEADS:
        raise ValueError(f"{name}: heads must be one of {HEADS}, got {options['heads']!r}")


@METHODS.register("hpda")
class HPDAModel(FaceModel):
    """Global + local (PDA on the last stage's last three blocks, fused by HBP) embedding.

    Needs a last stage of at least three blocks: IR-34/50/100 and MobileFaceNet, not IR-18.
    Options (paper defaults): `scales` S 3, `branches` B 3, `margin` t 1.0, `reduction` r 8
    (LANet), `hbp_dim` d 512, `diverse` True (divergence loss on), `hierarchical` True
    (False: Table 1's "w/o hierarchical", PDA and a self-bilinear U'x o V'x on the last block
    only), `fusion` "hbp" | "concat" | "add", `heads` "both" | "global" | "local" (a single
    head's 512-d output goes straight to the final BN1d). `config.dropout` applies before the
    global and local FCs.
    """

    method = "hpda"
    supported_backbones = ("ir34", "ir50", "ir100", "mobilefacenet")
    default_options = {"scales": 3, "branches": 3, "margin": 1.0, "reduction": 8, "hbp_dim": 512,
                       "diverse": True, "hierarchical": True, "fusion": "hbp", "heads": "both"}

    def __init__(self, config: ModelConfig):
        super().__init__(config)
        if config.head is not None:
            raise ValueError(f"{self.name}: HPDA replaces the backbone head with its global and local heads; "
                             f"head must be None, got {config.head!r}")
        options = self.options
        _check_options(self.name, options)
        self.backbone.head = nn.Identity()
        last_stage = self.backbone.last_stage_blocks
        self.tapped_blocks = last_stage[-3:] if options["hierarchical"] else last_stage[-1:]
        final_channels = self.backbone.block_channels[-1]
        self.dropout = nn.Dropout(config.dropout)
        self.global_fc = nn.Linear(final_channels, EMBEDDING_DIM) if options["heads"] != "local" else None
        if options["heads"] != "global":
            channels = [self.backbone.block_channels[i] for i in self.tapped_blocks]
            self.pda = nn.ModuleList(PyramidDiverseAttention(c, options["scales"], options["branches"],
                                                             options["reduction"]) for c in channels)
            # which PDA output feeds each projection; one layer under HBP pairs with itself (U'x o V'x)
            single_hbp = len(channels) == 1 and options["fusion"] == "hbp"
            self.fusion_inputs = [0, 0] if single_hbp else list(range(len(channels)))
            self.fusion = LayerFusion([options["scales"] * channels[i] for i in self.fusion_inputs],
                                      options["fusion"], options["hbp_dim"])
            self.local_fc = nn.Linear(self.fusion.out_features, EMBEDDING_DIM)
        else:
            self.pda = self.fusion = self.local_fc = None
        self.joint_fc = nn.Linear(2 * EMBEDDING_DIM, EMBEDDING_DIM) if options["heads"] == "both" else None
        self.bn = nn.BatchNorm1d(EMBEDDING_DIM)
        self.divergence: Optional[torch.Tensor] = None

    def _embed_with_masks(self, images: torch.Tensor) -> Tuple[torch.Tensor, List[torch.Tensor]]:
        """Raw embedding and, per tapped layer, its upsampled masks (N, S, B, h, w)."""
        x = self.backbone.stem(images)
        taps = []
        for i, block in enumerate(self.backbone.blocks):
            x = block(x)
            if i in self.tapped_blocks:
                taps.append(x)
        parts, masks = [], []
        if self.global_fc is not None:
            parts.append(self.global_fc(self.dropout(x.mean(dim=(2, 3)))))
        if self.pda is not None:
            features = []
            for pda, tap in zip(self.pda, taps):
                feature, mask = pda(tap)
                features.append(feature)
                masks.append(mask)
            parts.append(self.local_fc(self.dropout(self.fusion([features[i] for i in self.fusion_inputs]))))
        joint = self.joint_fc(torch.cat(parts, dim=1)) if self.joint_fc is not None else parts[0]
        return self.bn(joint), masks

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        embedding, masks = self._embed_with_masks(images)
        if self.training and self.options["diverse"] and masks:
            margin = self.options["margin"]
            self.divergence = torch.stack([divergence_loss(m, margin) for m in masks]).mean()
        else:
            self.divergence = None
        return embedding

    def auxiliary_losses(self) -> Dict[str, torch.Tensor]:
        """{"divergence": L_D} after a training forward with `diverse` on."""
        return {} if self.divergence is None else {"divergence": self.divergence}

    @torch.no_grad()
    def explain(self, images: torch.Tensor) -> Explanation:
        """The local branch's masks (none when `heads` is "global").

        maps "mask/layer{l}/scale{s}/branch{b}": every upsampled mask, (N, h, w) in [0, 1];
        l indexes the tapped layers shallow to deep, s the scales fine to coarse (all 0-based).
        values "tapped_blocks": the indices into `backbone.blocks` of the tapped layers.
        """
        check_images(images, self.name)
        was_training = self.training
        self.eval()
        try:
            _, masks = self._embed_with_masks(images)
        finally:
            self.train(was_training)
        explanation = Explanation()
        if masks:
            explanation.values["tapped_blocks"] = torch.tensor(self.tapped_blocks)
        for l, layer_masks in enumerate(masks):
            for s in range(layer_masks.shape[1]):
                for b in range(layer_masks.shape[2]):
                    explanation.maps[f"mask/layer{l}/scale{s}/branch{b}"] = layer_masks[:, s, b]
        return explanation
