"""HPDA: hierarchical pyramid diverse attention (Wang et al., CVPR 2020).

Global CNN: the backbone's final feature map -> a global embedding. Local CNNs: the outputs
of the last three blocks of the last stage (7x7 maps) each go through a pyramid diverse
attention (PDA), and a hierarchical bilinear pooling (HBP) fuses the three, then FC.
Joint: concat (2 x embedding_dim) -> FC -> BN1d (embedding_dim: 512 in the paper).

Global head (`global_head`):
- "backbone" (default): the backbone's own embedding head without its final BN1d (IR:
  BN-Dropout-FC; MobileFaceNet: 1x1 conv 128->512 + BN + PReLU, GDC, FC); HPDA's final BN1d
  takes that BN's place. Not the paper's: chosen because the zoo fine-tunes every method from
  a pretrained plain network, and this way `init_from` starts HPDA exactly at the pretrained
  embedding (the head and its BN copied, the joint FC set to [identity | zero], so joint =
  the global part). The local branch then receives no gradient through the joint FC until
  the FC's local half leaves zero after the first step (the divergence loss trains the
  LANets from the start).
- "gap": the paper's GAP + FC(embedding_dim). On MobileFaceNet the 1x1 conv 128 -> 512
  (+ BN + PReLU) of its head is kept before the GAP, so the global branch pools the same
  512-channel map the plain network's head sees; only the GDC/FC/BN embedding part goes.

PDA, per tapped layer X (c x h x w): for scale i (0-based) X is average-pooled to
max(1, h - 2i) (7, 5, 3, 1 for S = 4, as the paper's S ablation lists); each of B LANets
(1x1 conv c -> c/r, ReLU, 1x1 conv -> 1, sigmoid) gives a mask M_i^j at that scale's own
grid (h_i x w_i), upsampled bilinearly to h x w; R = X * M; a scale's B maps are
concatenated -> 1x1 conv -> c; the S scales are concatenated (S*c channels).

Divergence loss (Eq. 2), per layer:
    L_D = 2/(S B (B-1)) sum_i sum_j sum_{k != j} max(0, t - d(M_i^j, M_i^k)),
on the masks at their own scale, as the paper defines them (M_i^j in R^{h_i x w_i}), not
on the upsampled copies. The paper writes (M^j - M^k)^2 with no reduction over pixels;
`divergence_reduction` chooses it:
- "mean" (default): d = the MEAN over the h_i x w_i pixels of the squared difference, so the
  margin means the same at every scale (d is in [0, 1]: 1 only for complementary binary
  masks). With t = 1 (the paper's value) a hinge switches off only for exactly
  complementary binary masks, so the term stays active and keeps pushing the branches
  apart. Since at a pixel three values in [0, 1] have pairwise squared differences summing
  to at most 2, for B = 3, t = 1 the loss never goes below 2/3 (reached when every pixel
  belongs fully to one branch: a partition of the face). Margins t >= 1 only shift it.
- "sum": d = the SUM over those pixels (49, 25 and 9 at 7x7, 5x5, 3x3), so t is a budget
  in pixels and the hinges switch off once masks differ by an RMS of sqrt(t / h_i w_i).
  (Summed over the upsampled 7x7 masks, the first FaceScope reading, t = 1 switched off at
  an RMS of 0.14 and the trained hpda-mobilefacenet had L_D = 0 in all three layers: diverse
  learning was off.)
The double sum counts every pair twice and is kept as written (twice the mean hinge over
pairs; the loss weight absorbs the factor). With B = 1 there are no pairs and L_D = 0.
Averaged over the batch and the tapped layers.

HBP (Eq. 5): z = concat(U'x1 o V'x2, U'x1 o S'x3, V'x2 o S'x3), U, V, S 1x1 convs to d,
each product sum-pooled over space, then signed square root and L2 normalisation (the
standard bilinear-pooling normalisation, which the paper leaves implicit).
"""
from __future__ import annotations

from itertools import combinations
from typing import Dict, List, Optional, Sequence, Tuple, Union

import torch
import torch.nn.functional as F
from torch import nn

from ..backbones.base import EmbeddingHead
from ..model import METHODS, Explanation, FaceModel, ModelConfig, check_images

FUSIONS = ("hbp", "concat", "add")
HEADS = ("both", "global", "local")
GLOBAL_HEADS = ("backbone", "gap")
REDUCTIONS = ("mean", "sum")


class LANet(nn.Sequential):
    """Local attention network: a spatial mask in [0, 1] from two 1x1 convs."""

    def __init__(self, channels: int, reduction: int):
        hidden = max(1, channels // reduction)
        super().__init__(nn.Conv2d(channels, hidden, 1), nn.ReLU(inplace=True), nn.Conv2d(hidden, 1, 1), nn.Sigmoid())


class PyramidDiverseAttention(nn.Module):
    """One tapped layer: (N,c,h,w) -> (features (N,S*c,h,w), masks per scale [(N,B,h_i,w_i)] at their own grid)."""

    def __init__(self, channels: int, scales: int, branches: int, reduction: int):
        super().__init__()
        self.lanets = nn.ModuleList(
            nn.ModuleList(LANet(channels, reduction) for _ in range(branches)) for _ in range(scales))
        self.merges = nn.ModuleList(nn.Conv2d(branches * channels, channels, 1) for _ in range(scales))

    def forward(self, x: torch.Tensor) -> Tuple[torch.Tensor, List[torch.Tensor]]:
        h, w = x.shape[-2:]
        features, masks = [], []
        for i, (lanets, merge) in enumerate(zip(self.lanets, self.merges)):
            pooled = F.adaptive_avg_pool2d(x, (max(1, h - 2 * i), max(1, w - 2 * i)))
            scale_masks = torch.cat([lanet(pooled) for lanet in lanets], dim=1)  # (N, B, h_i, w_i)
            upsampled = upsample_masks(scale_masks, (h, w))
            features.append(merge((x.unsqueeze(1) * upsampled.unsqueeze(2)).flatten(1, 2)))
            masks.append(scale_masks)
        return torch.cat(features, dim=1), masks


def upsample_masks(masks: torch.Tensor, size: Tuple[int, int]) -> torch.Tensor:
    """(N, B, h_i, w_i) -> (N, B, h, w), bilinear (the paper's upsampling)."""
    return F.interpolate(masks, size=size, mode="bilinear", align_corners=False)


def divergence_per_face(masks: Union[torch.Tensor, Sequence[torch.Tensor]], margin: float,
                        reduction: str = "mean") -> torch.Tensor:
    """Eq. 2 per face: masks as a list over scales of (N, B, h_i, w_i), or one (N, S, B, h, w)
    tensor of S same-sized scales; -> (N,). See the module docstring for the reading."""
    if reduction not in REDUCTIONS:
        raise ValueError(f"divergence reduction must be one of {REDUCTIONS}, got {reduction!r}")
    scales = list(masks.unbind(dim=1)) if isinstance(masks, torch.Tensor) else list(masks)
    n, branches = scales[0].shape[:2]
    if branches < 2:
        return scales[0].new_zeros(n)
    pairs = ~torch.eye(branches, dtype=torch.bool, device=scales[0].device)
    total = scales[0].new_zeros(n)
    for scale_masks in scales:
        flat = scale_masks.flatten(2)  # (N, B, P)
        squared = (flat.unsqueeze(2) - flat.unsqueeze(1)).pow(2)  # (N, B, B, P)
        distance = squared.mean(dim=-1) if reduction == "mean" else squared.sum(dim=-1)
        total = total + (margin - distance).clamp(min=0)[:, pairs].sum(dim=1)
    return total * 2 / (len(scales) * branches * (branches - 1))


def divergence_loss(masks: Union[torch.Tensor, Sequence[torch.Tensor]], margin: float,
                    reduction: str = "mean") -> torch.Tensor:
    """Eq. 2 averaged over the batch (see `divergence_per_face`)."""
    return divergence_per_face(masks, margin, reduction).mean()


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
    for key, allowed in (("fusion", FUSIONS), ("heads", HEADS), ("global_head", GLOBAL_HEADS),
                         ("divergence_reduction", REDUCTIONS)):
        if options[key] not in allowed:
            raise ValueError(f"{name}: {key} must be one of {allowed}, got {options[key]!r}")


def _embedding_head(head: nn.Module) -> Tuple[str, EmbeddingHead]:
    """The backbone head's EmbeddingHead and its path inside the head ("" or "1")."""
    for path, module in head.named_modules():
        if isinstance(module, EmbeddingHead):
            return path, module
    raise ValueError("the backbone head has no EmbeddingHead")


@METHODS.register("hpda")
class HPDAModel(FaceModel):
    """Global + local (PDA on the last stage's last three blocks, fused by HBP) embedding.

    Needs a last stage of at least three blocks: IR-34/50/100 and MobileFaceNet, not IR-18.
    Options (paper defaults): `scales` S 3, `branches` B 3, `margin` t 1.0, `reduction` r 8
    (LANet), `hbp_dim` d 512, `diverse` True (divergence loss on), `hierarchical` True
    (False: Table 1's "w/o hierarchical", PDA and a self-bilinear U'x o V'x on the last block
    only), `fusion` "hbp" | "concat" | "add", `heads` "both" | "global" | "local" (a single
    head's output goes straight to the final BN1d). FaceScope's: `global_head` "backbone"
    (default) | "gap" and `divergence_reduction` "mean" (default) | "sum" (module docstring).
    `config.dropout` applies before the local FC (and the global FC with "gap"; the
    backbone head has its own). `config.head` picks the backbone head's kind and is only
    meaningful with global_head="backbone".
    """

    method = "hpda"
    supported_backbones = ("ir34", "ir50", "ir100", "mobilefacenet")
    default_options = {"scales": 3, "branches": 3, "margin": 1.0, "reduction": 8, "hbp_dim": 512,
                       "diverse": True, "hierarchical": True, "fusion": "hbp", "heads": "both",
                       "global_head": "backbone", "divergence_reduction": "mean"}
    analyses = ("pyramid-masks",)

    def __init__(self, config: ModelConfig):
        super().__init__(config)
        options = self.options
        _check_options(self.name, options)
        backbone_global = options["heads"] != "local" and options["global_head"] == "backbone"
        if config.head is not None and not backbone_global:
            raise ValueError(f"{self.name}: HPDA replaces the backbone head with its global and local heads "
                             f"unless global_head='backbone'; head must be None, got {config.head!r}")
        dim = config.embedding_dim
        head_path, embedding_head = _embedding_head(self.backbone.head)
        head_prefix = "backbone.head." + (f"{head_path}." if head_path else "")
        # Names of trained plain-model tensors this configuration has no place for, and the
        # backbone head's BN1d whose role HPDA's final BN takes (init_from uses both).
        self._dropped_prefixes: Tuple[str, ...] = ()
        self._head_bn_prefix: Optional[str] = None
        self.global_fc = None
        if options["heads"] == "local":
            self.backbone.head = nn.Identity()
            self._dropped_prefixes = ("backbone.head.",)
        elif backbone_global:
            embedding_head.bn = nn.Identity()  # HPDA's final BN1d plays its part
            self._head_bn_prefix = head_prefix + "bn."
        else:
            # the paper's GAP + FC; MobileFaceNet keeps its 1x1 conv (head[0]) before the GAP
            kept = list(self.backbone.head.children())[:-1] if head_path else []
            self.backbone.head = nn.Sequential(*kept) if kept else nn.Identity()
            convs = [m for m in self.backbone.head.modules() if isinstance(m, nn.Conv2d)]
            channels = convs[-1].out_channels if convs else self.backbone.block_channels[-1]
            self.global_fc = nn.Linear(channels, dim)
            self._dropped_prefixes = (head_prefix,)
        last_stage = self.backbone.last_stage_blocks
        self.tapped_blocks = last_stage[-3:] if options["hierarchical"] else last_stage[-1:]
        self.dropout = nn.Dropout(config.dropout)
        if options["heads"] != "global":
            channels = [self.backbone.block_channels[i] for i in self.tapped_blocks]
            self.pda = nn.ModuleList(PyramidDiverseAttention(c, options["scales"], options["branches"],
                                                             options["reduction"]) for c in channels)
            # which PDA output feeds each projection; one layer under HBP pairs with itself (U'x o V'x)
            single_hbp = len(channels) == 1 and options["fusion"] == "hbp"
            self.fusion_inputs = [0, 0] if single_hbp else list(range(len(channels)))
            self.fusion = LayerFusion([options["scales"] * channels[i] for i in self.fusion_inputs],
                                      options["fusion"], options["hbp_dim"])
            self.local_fc = nn.Linear(self.fusion.out_features, dim)
        else:
            self.pda = self.fusion = self.local_fc = None
        self.joint_fc = nn.Linear(2 * dim, dim) if options["heads"] == "both" else None
        self.bn = nn.BatchNorm1d(dim)
        self.divergence: Optional[torch.Tensor] = None

    def _global(self, x: torch.Tensor) -> torch.Tensor:
        if self.global_fc is None:
            return self.backbone.head(x)  # the backbone's embedding head, short of its BN1d
        return self.global_fc(self.dropout(self.backbone.head(x).mean(dim=(2, 3))))

    def _embed_with_masks(self, images: torch.Tensor) -> Tuple[torch.Tensor, List[List[torch.Tensor]]]:
        """Raw embedding and, per tapped layer, its masks per scale at their own grid [(N, B, h_i, w_i)]."""
        x = self.backbone.begin(images)
        taps = []
        for i, block in enumerate(self.backbone.blocks):
            x = block(x)
            if i in self.tapped_blocks:
                taps.append(x)
        parts, masks = [], []
        if self.options["heads"] != "local":
            parts.append(self._global(x))
        if self.pda is not None:
            features = []
            for pda, tap in zip(self.pda, taps):
                feature, mask = pda(tap)
                features.append(feature)
                masks.append(mask)
            parts.append(self.local_fc(self.dropout(self.fusion([features[i] for i in self.fusion_inputs]))))
        joint = self.joint_fc(torch.cat(parts, dim=1)) if self.joint_fc is not None else parts[0]
        return self.bn(joint), masks

    def _divergence(self, masks: List[List[torch.Tensor]]) -> torch.Tensor:
        """L_D averaged over the tapped layers, per face: (N,)."""
        options = self.options
        return torch.stack([divergence_per_face(m, options["margin"], options["divergence_reduction"])
                            for m in masks]).mean(dim=0)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        embedding, masks = self._embed_with_masks(images)
        if self.training and self.options["diverse"] and masks:
            self.divergence = self._divergence(masks).mean()
        else:
            self.divergence = None
        return embedding

    def auxiliary_losses(self) -> Dict[str, torch.Tensor]:
        """{"divergence": L_D} after a training forward with `diverse` on."""
        return {} if self.divergence is None else {"divergence": self.divergence}

    @torch.no_grad()
    def mask_divergence(self, images: torch.Tensor) -> torch.Tensor:
        """L_D of `images` in eval mode, whatever `diverse` says (so the "w/o diverse learning"
        ablation can be compared): (N,), averaged over the tapped layers; empty without PDA."""
        check_images(images, self.name)
        with self.evaluating():
            _, masks = self._embed_with_masks(images)
        return self._divergence(masks) if masks else images.new_zeros(0)

    def init_from(self, trained: FaceModel) -> List[str]:
        """Start from a trained plain model of the same backbone.

        Backbone tensors are copied by name. With global_head="backbone" the trained head is
        copied too, its BN1d (weights, statistics and epsilon) becomes HPDA's final BN, and
        the joint FC is [identity | zero]: the untrained HPDA model computes `trained`'s
        embedding exactly (train and eval mode). With "gap" (or heads="local") the trained
        head's embedding part has no place here and is dropped (MobileFaceNet's 1x1 conv is
        kept under "gap"). Returns the names of the tensors left at their initialisation.
        """
        source, target = trained.state_dict(), self.state_dict()
        state, misfits = {}, []
        for key, value in source.items():
            name = key
            if self._head_bn_prefix is not None and key.startswith(self._head_bn_prefix):
                name = "bn." + key[len(self._head_bn_prefix):]
            if name in target and target[name].shape == value.shape:
                state[name] = value
            elif not key.startswith(self._dropped_prefixes):
                misfits.append(key)
        if misfits:
            raise ValueError(f"{self.name}: cannot start from {trained.name}: {len(misfits)} tensor(s) have no "
                             f"same-shaped place here, e.g. {misfits[:3]}")
        if self.joint_fc is not None and self.global_fc is None:
            dim = self.config.embedding_dim
            weight = torch.zeros_like(self.joint_fc.weight)
            weight[:, :dim] = torch.eye(dim, dtype=weight.dtype)
            state["joint_fc.weight"], state["joint_fc.bias"] = weight, torch.zeros_like(self.joint_fc.bias)
        self.load_state_dict({**target, **state})
        if self._head_bn_prefix is not None:
            eps = trained.get_submodule(self._head_bn_prefix[:-1]).eps
            if self.bn.eps != eps:
                self.bn.eps = eps
                self.config.bn_eps = {**self.config.bn_eps, "bn": eps}
        return sorted(set(target) - set(state))

    @torch.no_grad()
    def explain(self, images: torch.Tensor) -> Explanation:
        """The local branch's masks (none when `heads` is "global").

        maps "mask/layer{l}/scale{s}/branch{b}": every mask upsampled to its layer's h x w (as
        R = X * M uses it), (N, h, w) in [0, 1]; l indexes the tapped layers shallow to deep,
        s the scales fine to coarse (all 0-based).
        values "tapped_blocks": the indices into `backbone.blocks` of the tapped layers;
        "divergence/layer{l}": each face's L_D of that layer's masks at their own scale, (N,).
        """
        check_images(images, self.name)
        with self.evaluating():
            _, masks = self._embed_with_masks(images)
        explanation = Explanation()
        if masks:
            explanation.values["tapped_blocks"] = torch.tensor(self.tapped_blocks)
        options = self.options
        for l, layer_masks in enumerate(masks):
            explanation.values[f"divergence/layer{l}"] = divergence_per_face(
                layer_masks, options["margin"], options["divergence_reduction"])
            size = layer_masks[0].shape[-2:]  # scale 0 keeps the layer's own grid
            for s, scale_masks in enumerate(layer_masks):
                upsampled = upsample_masks(scale_masks, size)
                for b in range(upsampled.shape[1]):
                    explanation.maps[f"mask/layer{l}/scale{s}/branch{b}"] = upsampled[:, b]
        return explanation
