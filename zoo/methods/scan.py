"""SCAN-CNN: learnt scale attention in every 3x3 convolution (Wang et al.).

Scale attention conv (SAC): each filter k gets its own learnable scale t (init 1, no weight
decay, kept positive) and works on the Gaussian scale-space of its input:

    k_s = t^(gamma*m) * crop3x3(k (*) g_t),   gamma*m = 1,

g_t a 5x5 Gaussian of variance t normalised to sum 1 over its support (so t -> 0 gives the
unit impulse), crop3x3 the centre of the full 7x7 convolution. The local shortcut (LSC) adds
an independent plain kernel k_i: f_out = (k_s + k_i) (*) f_in.

Response-maximisation objective (RMO), per SAC layer: L_scale = exp(-lambda ||f_out||_2 / (H W)),
||.||_2 the Frobenius norm of one sample's output, averaged over the batch; the model's
auxiliary loss is the sum over layers (the paper adds L_scale to the recognition loss). Its
gradient reaches only that layer's own kernel parameters: the term reuses the forward output
and backpropagates through a weight-only convolution gradient, never into the layer input.

For inference `fold()` merges k_s + k_i into one plain conv: the result is the plain
backbone (same parameter count and layers) plus each layer's t kept in the config, which
is all a scale map needs.
"""
from __future__ import annotations

import math
from typing import Dict, List

import torch
import torch.nn.functional as F
from torch import nn

from ..model import METHODS, Explanation, FaceModel, ModelConfig, build, check_images

GAUSSIAN_SIZE = 5


def gaussian_kernels(t: torch.Tensor) -> torch.Tensor:
    """(C,) variances -> (C,5,5) Gaussians, each summing to 1."""
    r = torch.arange(GAUSSIAN_SIZE, dtype=t.dtype, device=t.device) - GAUSSIAN_SIZE // 2
    sq = (r[:, None] ** 2 + r[None, :] ** 2)
    g = torch.exp(-sq[None] / (2 * t[:, None, None]))
    return g / g.sum(dim=(1, 2), keepdim=True)


def _centre_crop_operator(device) -> torch.Tensor:
    """Index table so that crop3x3(k (*) g)[i,j] = sum_{a,b} k[a,b] g[i-a+2, j-b+2]."""
    idx = torch.arange(3, device=device)
    offset = idx[:, None] - idx[None, :] + GAUSSIAN_SIZE // 2  # (i, a) -> row of g
    return offset


def scale_kernel(weight: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """k_s = t * crop3x3(k (*) g_t) for a (C_out, C_in, 3, 3) kernel and (C_out,) scales."""
    g = gaussian_kernels(t)
    off = _centre_crop_operator(weight.device)
    # blur[o, i, a, j, b] = g[o, i-a+2, j-b+2]
    blur = g[:, off[:, :, None, None], off[None, None, :, :]]
    blurred = torch.einsum("ocab,oiajb->ocij", weight, blur)
    return t[:, None, None, None] * blurred


class _WeightOnlyConvGrad(torch.autograd.Function):
    """Returns a precomputed conv output whose gradient flows to the kernel only.

    Lets RMO reuse the forward output instead of convolving a detached input again.
    """

    @staticmethod
    def forward(ctx, output, inputs, weight, stride, groups):
        ctx.save_for_backward(inputs, weight)
        ctx.stride, ctx.groups = stride, groups
        return output.clone()

    @staticmethod
    def backward(ctx, grad_output):
        inputs, weight = ctx.saved_tensors
        grad_weight = torch.nn.grad.conv2d_weight(inputs, weight.shape, grad_output, ctx.stride, 1, 1, ctx.groups)
        return None, None, grad_weight, None, None


class ScaleAttentionConv2d(nn.Module):
    """A 3x3 conv with per-filter learnt scale t, optional local shortcut and RMO."""

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1, groups: int = 1,
                 shortcut: bool = True, rmo: bool = True, rmo_lambda: float = 1.0,
                 t_init: float = 1.0, t_min: float = 1e-4):
        super().__init__()
        self.stride, self.groups = stride, groups
        self.rmo, self.rmo_lambda, self.t_min = rmo, rmo_lambda, t_min
        shape = (out_channels, in_channels // groups, 3, 3)
        self.weight = nn.Parameter(torch.empty(shape))
        nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))
        self.t = nn.Parameter(torch.full((out_channels,), float(t_init)))
        if shortcut:
            self.shortcut_weight = nn.Parameter(torch.empty(shape))
            nn.init.kaiming_uniform_(self.shortcut_weight, a=math.sqrt(5))
        else:
            self.register_parameter("shortcut_weight", None)
        self.rmo_loss: torch.Tensor | None = None

    @property
    def positive_t(self) -> torch.Tensor:
        return self.t.clamp(min=self.t_min)

    def merged_kernel(self) -> torch.Tensor:
        kernel = scale_kernel(self.weight, self.positive_t)
        return kernel if self.shortcut_weight is None else kernel + self.shortcut_weight

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        kernel = self.merged_kernel()
        out = F.conv2d(x, kernel, stride=self.stride, padding=1, groups=self.groups)
        if self.training and self.rmo and torch.is_grad_enabled():
            local = _WeightOnlyConvGrad.apply(out.detach(), x.detach(), kernel, self.stride, self.groups)
            h, w = out.shape[-2:]
            norms = local.flatten(1).norm(dim=1)
            self.rmo_loss = torch.exp(-self.rmo_lambda * norms / (h * w)).mean()
        else:
            self.rmo_loss = None
        return out

    def folded(self) -> nn.Conv2d:
        out_channels, in_per_group = self.weight.shape[:2]
        conv = nn.Conv2d(in_per_group * self.groups, out_channels, 3, self.stride, 1, groups=self.groups, bias=False)
        with torch.no_grad():
            conv.weight.copy_(self.merged_kernel())
        return conv

    def extra_repr(self) -> str:
        return (f"{self.weight.shape[1] * self.groups}, {self.weight.shape[0]}, stride={self.stride}, "
                f"groups={self.groups}, shortcut={self.shortcut_weight is not None}, rmo={self.rmo}")


def scale_map(response: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """Per location, the learnt t of the channel with the strongest response: (N,C,H,W) -> (N,H,W).

    This is FaceScope's reading of "the response peaks at the channel whose t matches the
    pattern's scale": a map of the dominant learnt scale over the face.
    """
    dominant = response.abs().argmax(dim=1)
    return t.to(response.dtype)[dominant]


def layer_key(module_path: str) -> str:
    return module_path.removeprefix("backbone.")


class _ScaleMapMixin:
    """explain() shared by the trained and the folded SCAN model.

    Subclasses provide `scale_layers() -> {layer key: (conv module, its per-filter t)}`.
    """

    @torch.no_grad()
    def explain(self, images: torch.Tensor) -> Explanation:
        check_images(images, self.name)
        responses, hooks = {}, []
        layers = self.scale_layers()
        for key, (module, _) in layers.items():
            hooks.append(module.register_forward_hook(
                lambda _m, _i, out, key=key: responses.__setitem__(key, out.detach())))
        was_training = self.training
        self.eval()
        try:
            self(images)
        finally:
            self.train(was_training)
            for hook in hooks:
                hook.remove()
        explanation = Explanation()
        for key, (_, t) in layers.items():
            explanation.maps[f"scale_map/{key}"] = scale_map(responses[key], t)
            explanation.values[f"t/{key}"] = t.detach().clone()
        return explanation


@METHODS.register("scan")
class ScanModel(_ScaleMapMixin, FaceModel):
    """Any backbone with every 3x3 conv (stem included) replaced by a ScaleAttentionConv2d.

    Options give the paper's ablation rows: `shortcut` (LSC) and `rmo` on/off.
    """

    method = "scan"
    default_options = {"shortcut": True, "rmo": True, "rmo_lambda": 1.0, "t_init": 1.0, "t_min": 1e-4}

    def conv3x3_factory(self):
        options = dict(self.options)

        def factory(in_channels, out_channels, stride=1, groups=1):
            return ScaleAttentionConv2d(in_channels, out_channels, stride, groups, **options)

        return factory

    def scale_convs(self) -> Dict[str, ScaleAttentionConv2d]:
        return {layer_key(name): m for name, m in self.named_modules() if isinstance(m, ScaleAttentionConv2d)}

    def scale_layers(self):
        return {key: (m, m.positive_t.detach()) for key, m in self.scale_convs().items()}

    def rmo_losses(self) -> Dict[str, torch.Tensor]:
        """Each SAC layer's L_scale from the last training forward."""
        return {key: m.rmo_loss for key, m in self.scale_convs().items() if m.rmo_loss is not None}

    def auxiliary_losses(self) -> Dict[str, torch.Tensor]:
        losses = list(self.rmo_losses().values())
        return {"rmo": torch.stack(losses).sum()} if losses else {}

    def no_weight_decay(self) -> List[str]:
        return [name for name, _ in self.named_parameters() if name.endswith(".t")]

    def learnt_t(self) -> Dict[str, torch.Tensor]:
        return {key: m.positive_t.detach().clone() for key, m in self.scale_convs().items()}

    def fold(self) -> "FoldedScanModel":
        """The inference model: plain convs holding k_s + k_i, identical outputs."""
        folded = build(ModelConfig("scan-folded", self.config.backbone, self.config.width, self.config.head,
                                   self.config.dropout,
                                   options={"t": {k: v.tolist() for k, v in self.learnt_t().items()}}))
        sac_paths = {name for name, m in self.named_modules() if isinstance(m, ScaleAttentionConv2d)}
        target = folded.state_dict()
        source = self.state_dict()
        with torch.no_grad():
            for key in target:
                module_path = key.rpartition(".")[0]
                if module_path in sac_paths:
                    target[key].copy_(self.get_submodule(module_path).merged_kernel())
                else:
                    target[key].copy_(source[key])
        return folded.train(self.training)


@METHODS.register("scan-folded")
class FoldedScanModel(_ScaleMapMixin, FaceModel):
    """A folded SCAN model: exactly the plain architecture; the learnt t ride in the config."""

    method = "scan-folded"
    default_options = {"t": {}}

    def scale_layers(self):
        return {key: (self.backbone.get_submodule(key), torch.tensor(t))
                for key, t in self.options["t"].items()}
