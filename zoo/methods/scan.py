"""SCAN-CNN: learnt scale attention in every 3x3 convolution (Wang et al.).

Scale attention conv (SAC): each filter k gets its own learnable scale t (init 1, no weight
decay, kept positive) and works on the Gaussian scale-space of its input:

    k_s = t^(gamma*m) * crop3x3(k (*) g_t),   gamma*m = 1,

g_t a 5x5 Gaussian of variance t sampled on the integer grid, crop3x3 the centre of the
full 7x7 convolution. The Gaussian's normalisation is the option `gaussian_norm`:
- "eq2" (default): Eq. 2's g(x; t) = exp(-|x|^2 / 2t) / (2 pi t) (D = 2). Then
  k_s = crop3x3(k (*) exp(-|x|^2 / 2t)) / (2 pi): as t -> 0 the blur becomes the unit
  impulse and k_s -> k / (2 pi), a plain convolution, which is what section 6.2 says of the
  t's that RMO drives to zero ("these SAC layers reduce to the plain convolution"). The
  sampled kernel sums to 1 within 3% for 0.3 <= t <= 1.1 and to less for larger t, where the
  5x5 support cuts the Gaussian's tails (0.86 at t = 2).
- "sum": g_t normalised to sum 1 over its 5x5 support (the first FaceScope reading). Then
  t -> 0 gives k_s = t k -> 0: the scale kernel vanishes instead of reducing to a plain conv.
The local shortcut (LSC) adds an independent plain kernel k_i: f_out = (k_s + k_i) (*) f_in.

Response-maximisation objective (RMO), per SAC layer: L_scale = exp(-lambda ||f_out||_2 / (H W)),
||.||_2 the Frobenius norm of one sample's output, averaged over the batch; the model's
auxiliary loss is the sum over layers (the paper adds L_scale to the recognition loss). Its
gradient reaches only that layer's scale kernel k_s, i.e. its k and t (supplement Fig. 8: "the
gradients with respect to k_s are derived from the combination of RMO and recognition
loss"), never the layer input nor the shortcut kernel k_i, which the recognition loss alone
trains. In training the conv and its L_scale are one autograd node (`_ScaleAttentionConv`)
that hands RMO's gradient to k_s in its backward. With LSC that costs one weight-gradient
contraction more than a plain conv, and no formulation with exact gradients avoids it: k_i's
gradient (recognition only) and k_s's (recognition + RMO) are two different contractions of
the same input, each as large as a plain conv's weight gradient. The option `rmo_kernels`
says which kernels RMO trains:
- "scale" (default): k_s only, as above (Fig. 8). Training costs about 1.33x a plain ir18's.
- "layer": k_s and k_i, the layer's whole kernel k_u = k_s + k_i (still never the input, so
  RMO stays in its layer). Then both kernels take one gradient, recognition + RMO, and the
  backward is a plain conv's: the input's gradient and one weight gradient. A speed option
  (`bench/method_cost.py`); it also pushes the local shortcut to raise the layer's response,
  which the paper does not describe.
Without LSC the two readings coincide and cost a plain conv's backward.

For inference `fold()` merges k_s + k_i into one plain conv: the result is the plain
backbone (same parameter count and layers) plus each layer's t kept in the config, which
is all a scale map needs.

Fine-tuning (`ScanModel.init_from`): every 3x3 conv W of a trained plain model goes to its SAC
layer so that the merged kernel is W: k = W, t = its initial value, k_i = W - k_s(W, t).
Without LSC, k solves k_s(k, t) = W (k_s is linear in k, a per-filter 9x9 operator,
invertible for moderate t). The untrained SCAN model then computes the plain model.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Any, Dict, List

import torch
import torch.nn.functional as F
from torch import nn

from ..model import METHODS, Explanation, FaceModel, ModelConfig, build, check_images

GAUSSIAN_SIZE = 5
GAUSSIAN_NORMS = ("eq2", "sum")
RMO_KERNELS = ("scale", "layer")  # which kernels RMO's gradient trains (module docstring)


def gaussian_kernels(t: torch.Tensor, norm: str = "eq2") -> torch.Tensor:
    """(C,) variances -> (C,5,5) sampled Gaussians: Eq. 2's 1/(2 pi t) factor ("eq2") or
    normalised to sum 1 over the 5x5 support ("sum")."""
    if norm not in GAUSSIAN_NORMS:
        raise ValueError(f"gaussian_norm must be one of {GAUSSIAN_NORMS}, got {norm!r}")
    r = torch.arange(GAUSSIAN_SIZE, dtype=t.dtype, device=t.device) - GAUSSIAN_SIZE // 2
    sq = (r[:, None] ** 2 + r[None, :] ** 2)
    g = torch.exp(-sq[None] / (2 * t[:, None, None]))
    if norm == "sum":
        return g / g.sum(dim=(1, 2), keepdim=True)
    return g / (2 * math.pi * t[:, None, None])


def _centre_crop_operator(device) -> torch.Tensor:
    """Index table so that crop3x3(k (*) g)[i,j] = sum_{a,b} k[a,b] g[i-a+2, j-b+2]."""
    idx = torch.arange(3, device=device)
    offset = idx[:, None] - idx[None, :] + GAUSSIAN_SIZE // 2  # (i, a) -> row of g
    return offset


def scale_kernel(weight: torch.Tensor, t: torch.Tensor, norm: str = "eq2") -> torch.Tensor:
    """k_s = t * crop3x3(k (*) g_t) for a (C_out, C_in, 3, 3) kernel and (C_out,) scales.

    Always in the parameters' own precision, outside any autocast: the kernel is tiny, and a
    bf16 einsum would hand t a bf16 gradient (the conv that uses k_s may still autocast)."""
    with torch.autocast(weight.device.type, enabled=False):
        return _scale_kernel(weight.float(), t.float(), norm).to(weight.dtype)


def _scale_kernel(weight: torch.Tensor, t: torch.Tensor, norm: str) -> torch.Tensor:
    g = gaussian_kernels(t, norm)
    off = _centre_crop_operator(weight.device)
    # blur[o, i, a, j, b] = g[o, i-a+2, j-b+2]
    blur = g[:, off[:, :, None, None], off[None, None, :, :]]
    blurred = torch.einsum("ocab,oiajb->ocij", weight, blur)
    return t[:, None, None, None] * blurred


def scale_operator(t: torch.Tensor, norm: str = "eq2") -> torch.Tensor:
    """(C_out, 9, 9): the linear map k -> k_s of each filter, on flattened 3x3 kernels."""
    basis = torch.eye(9, dtype=t.dtype, device=t.device).view(1, 9, 3, 3).expand(len(t), 9, 3, 3)
    return scale_kernel(basis, t, norm).flatten(2).transpose(1, 2)  # column q: k_s of basis kernel q


class _ScaleAttentionConv(torch.autograd.Function):
    """f_out = (k_s + k_i) (*) f_in and RMO's L_scale of f_out, as one autograd node.

    Backward keeps the recognition gradient g and RMO's r = dL_scale/df_out apart: f_in's
    gradient comes from g alone, k_s's from g + r, and k_i's from g alone ("scale") or from
    g + r ("layer"). When every kernel takes g + r, one weight-gradient contraction of g + r
    serves them all, as in a plain conv's backward; when k_i takes g alone, r's weight gradient
    is one contraction more: two different contractions of the same f_in, which no single pass
    of the same width can give (stacking g and g + r as a convolution twice as wide costs as
    much, and a grouped one far more). r is a per-face multiple of f_out, so f_in, the kernel
    and f_out are all this node keeps.
    """

    @staticmethod
    def forward(ctx, inputs, scale, shortcut, stride, groups, rmo_lambda, rmo_to_shortcut):
        kernel = scale if shortcut is None else scale + shortcut
        out = F.conv2d(inputs, kernel, stride=stride, padding=1, groups=groups)
        # Over (C, H, W) in place: flattening a channels_last map (the engine's uint8 NHWC images
        # arrive so) would copy it.
        norms = torch.linalg.vector_norm(out, dim=(1, 2, 3), dtype=torch.promote_types(out.dtype, torch.float32))
        losses = torch.exp(-rmo_lambda * norms / (out.shape[-2] * out.shape[-1]))
        ctx.save_for_backward(inputs, kernel, out, norms, losses)
        ctx.stride, ctx.groups, ctx.rmo_lambda, ctx.rmo_to_shortcut = stride, groups, rmo_lambda, rmo_to_shortcut
        ctx.set_materialize_grads(False)  # an unused output's gradient arrives as None and costs nothing
        return out, losses.mean()

    @staticmethod
    def backward(ctx, grad_out, grad_rmo):
        """Under autocast the forward conv ran in bf16 while the saved input and kernel stayed fp32:
        the convolutions here take all three in the output's dtype (cuDNN and oneDNN refuse a mix),
        as autograd's own conv backward does; autograd casts each gradient to its input's dtype."""
        inputs, kernel, out, norms, losses = ctx.saved_tensors
        needs_input, needs_scale, needs_shortcut = ctx.needs_input_grad[:3]
        inputs, kernel = inputs.to(out.dtype), kernel.to(out.dtype)

        def convolution_backward(grad, output_mask):
            return torch.ops.aten.convolution_backward(grad, inputs, kernel, None, [ctx.stride] * 2, [1, 1], [1, 1],
                                                       False, [0, 0], ctx.groups, output_mask)[:2]

        coefficient = None  # r = coefficient * f_out, RMO's gradient with respect to f_out, when a kernel takes it
        if grad_rmo is not None and (needs_scale or (ctx.rmo_to_shortcut and needs_shortcut)):
            # d mean_n exp(-lambda |out_n| / HW) / d out_n = -lambda / (N HW) L_n out_n / |out_n|; 0 where out_n = 0
            faces, area = len(out), out.shape[-2] * out.shape[-1]
            coefficient = torch.where(norms > 0, grad_rmo * -ctx.rmo_lambda * losses / (faces * area * norms), 0.0)
            coefficient = coefficient.to(out.dtype).view(-1, 1, 1, 1)
        split = coefficient is not None and needs_shortcut and not ctx.rmo_to_shortcut  # k_i takes g alone
        grad_inputs = grad_recognition = None
        if grad_out is not None and (coefficient is None or split):
            grad_inputs, grad_recognition = convolution_backward(grad_out, [needs_input, needs_scale or needs_shortcut,
                                                                            False])
        elif grad_out is not None and needs_input:
            grad_inputs = convolution_backward(grad_out, [True, False, False])[0]
        grad_both = grad_recognition  # the weight gradient of g + r
        if coefficient is not None:
            rmo = out * coefficient if split or grad_out is None else torch.addcmul(grad_out, out, coefficient)
            extra = convolution_backward(rmo, [False, True, False])[1]
            grad_both = extra if grad_recognition is None or not split else grad_recognition + extra
        grad_scale = grad_both if needs_scale else None
        grad_shortcut = (grad_recognition if split else grad_both) if needs_shortcut else None
        return grad_inputs, grad_scale, grad_shortcut, None, None, None, None


class ScaleAttentionConv2d(nn.Module):
    """A 3x3 conv with per-filter learnt scale t, optional local shortcut and RMO."""

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1, groups: int = 1,
                 shortcut: bool = True, rmo: bool = True, rmo_lambda: float = 1.0,
                 t_init: float = 1.0, t_min: float = 1e-4, gaussian_norm: str = "eq2", rmo_kernels: str = "scale"):
        super().__init__()
        if gaussian_norm not in GAUSSIAN_NORMS:
            raise ValueError(f"gaussian_norm must be one of {GAUSSIAN_NORMS}, got {gaussian_norm!r}")
        if rmo_kernels not in RMO_KERNELS:
            raise ValueError(f"rmo_kernels must be one of {RMO_KERNELS}, got {rmo_kernels!r}")
        self.rmo_kernels = rmo_kernels
        self.stride, self.groups = stride, groups
        self.rmo, self.rmo_lambda, self.t_min = rmo, rmo_lambda, t_min
        self.gaussian_norm = gaussian_norm
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

    def scale_kernel(self) -> torch.Tensor:
        """k_s of every filter (a function of k and t)."""
        return scale_kernel(self.weight, self.positive_t, self.gaussian_norm)

    def merged_kernel(self) -> torch.Tensor:
        kernel = self.scale_kernel()
        return kernel if self.shortcut_weight is None else kernel + self.shortcut_weight

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training and self.rmo and torch.is_grad_enabled():
            # d L_scale / d k_u is handed to k_s only (supplement Fig. 8), or also to k_i ("layer").
            out, self.rmo_loss = _ScaleAttentionConv.apply(x, self.scale_kernel(), self.shortcut_weight, self.stride,
                                                           self.groups, self.rmo_lambda, self.rmo_kernels == "layer")
            return out
        self.rmo_loss = None
        return F.conv2d(x, self.merged_kernel(), stride=self.stride, padding=1, groups=self.groups)

    @torch.no_grad()
    def set_merged_kernel(self, kernel: torch.Tensor) -> None:
        """Make k_s + k_i equal `kernel` (a trained plain conv's weight) at the current t.

        With LSC: k = kernel, k_i = kernel - k_s(kernel, t). Without: k solves k_s(k, t) = kernel.
        Computed in float64 so the merged kernel matches `kernel` to float32 rounding.
        """
        if kernel.shape != self.weight.shape:
            raise ValueError(f"kernel of shape {tuple(kernel.shape)} does not fit a SAC layer of "
                             f"shape {tuple(self.weight.shape)}")
        target = kernel.detach().to(torch.float64)
        t = self.positive_t.detach().to(torch.float64)
        if self.shortcut_weight is not None:
            self.weight.copy_(target)
            self.shortcut_weight.copy_(target - scale_kernel(target, t, self.gaussian_norm))
        else:
            flat = target.flatten(2).transpose(1, 2)  # (C_out, 9, C_in)
            solved = torch.linalg.solve(scale_operator(t, self.gaussian_norm), flat)
            self.weight.copy_(solved.transpose(1, 2).reshape(target.shape))

    def folded(self) -> nn.Conv2d:
        out_channels, in_per_group = self.weight.shape[:2]
        conv = nn.Conv2d(in_per_group * self.groups, out_channels, 3, self.stride, 1, groups=self.groups, bias=False)
        with torch.no_grad():
            conv.weight.copy_(self.merged_kernel())
        return conv

    def extra_repr(self) -> str:
        return (f"{self.weight.shape[1] * self.groups}, {self.weight.shape[0]}, stride={self.stride}, "
                f"groups={self.groups}, shortcut={self.shortcut_weight is not None}, rmo={self.rmo}, "
                f"gaussian_norm={self.gaussian_norm!r}, rmo_kernels={self.rmo_kernels!r}")


def scale_map(response: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """Per location, the learnt t of the channel with the strongest response: (N,C,H,W) -> (N,H,W).

    This is FaceScope's reading of "the response peaks at the channel whose t matches the
    pattern's scale": a map of the dominant learnt scale over the face.
    """
    dominant = response.abs().argmax(dim=1)
    return t.to(response.device, response.dtype)[dominant]  # indices and t on one device


def layer_key(module_path: str) -> str:
    return module_path.removeprefix("backbone.")


class _ScaleMapMixin:
    """explain() and the analyses shared by the trained and the folded SCAN model.

    Subclasses provide `scale_layers() -> {layer key: (conv module, its per-filter t)}` and
    `learnt_t() -> {layer key: t}`.
    """

    analyses = ("t-density", "scale-map")

    @torch.no_grad()
    def explain(self, images: torch.Tensor) -> Explanation:
        check_images(images, self.name)
        responses, hooks = {}, []
        layers = self.scale_layers()
        for key, (module, _) in layers.items():
            hooks.append(module.register_forward_hook(
                lambda _m, _i, out, key=key: responses.__setitem__(key, out.detach())))
        try:
            with self.evaluating():
                self(images)
        finally:
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

    Options give the paper's ablation rows: `shortcut` (LSC) and `rmo` on/off; `rmo_lambda`
    (lambda, 1), `t_init` (1), `t_min` (the clamp keeping t positive), `gaussian_norm`
    ("eq2", Eq. 2's 1/(2 pi t); "sum": normalised to sum 1) and `rmo_kernels` ("scale": RMO
    trains k_s only; "layer": k_s and k_i, at a plain conv's backward cost; module docstring).
    """

    method = "scan"
    default_options = {"shortcut": True, "rmo": True, "rmo_lambda": 1.0, "t_init": 1.0, "t_min": 1e-4,
                       "gaussian_norm": "eq2", "rmo_kernels": "scale"}
    record_keys = {"t-density": "scan_t"}

    def __init__(self, config: ModelConfig):
        options = {**self.default_options, **config.options}
        for key, allowed in (("gaussian_norm", GAUSSIAN_NORMS), ("rmo_kernels", RMO_KERNELS)):
            if options[key] not in allowed:
                raise ValueError(f"{config.name}: {key} must be one of {allowed}, got {options[key]!r}")
        super().__init__(config)

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

    def epoch_records(self) -> Dict[str, Any]:
        """Every layer's t (rounded to 6 places): how the densities move over training."""
        return {self.record_keys["t-density"]: {k: [round(v, 6) for v in t.tolist()]
                                                for k, t in self.learnt_t().items()}}

    def init_from(self, trained: FaceModel) -> List[str]:
        """Start from a trained plain model: each 3x3 conv's weight W becomes its SAC layer's
        merged kernel (k = W, t as initialised, k_i = W - k_s(W, t); without LSC k solves
        k_s(k, t) = W), every other tensor is copied by name. The untrained SCAN model then
        computes `trained` (to float32 rounding), and so does its fold(). Returns the names of
        the tensors left at their initialisation: the t's."""
        source, target = trained.state_dict(), self.state_dict()
        sac = {name: m for name, m in self.named_modules() if isinstance(m, ScaleAttentionConv2d)}
        misfits = [k for k in source if k not in target or target[k].shape != source[k].shape]
        if misfits:
            raise ValueError(f"{self.name}: cannot start from {trained.name}: {len(misfits)} tensor(s) have no "
                             f"same-shaped place here, e.g. {misfits[:3]}")
        missing = [f"{path}.weight" for path in sac if f"{path}.weight" not in source]
        if missing:
            raise ValueError(f"{self.name}: cannot start from {trained.name}: it has no 3x3 conv for "
                             f"{len(missing)} SAC layer(s), e.g. {missing[:3]}")
        plain = {k: v for k, v in source.items() if k.rpartition(".")[0] not in sac}
        self.load_state_dict({**target, **plain})
        derived = set()
        for path, module in sac.items():
            module.set_merged_kernel(source[f"{path}.weight"])
            derived.update({f"{path}.weight", f"{path}.shortcut_weight"})
        return sorted(set(target) - set(plain) - derived)

    def inference_form(self) -> "FoldedScanModel":
        """The fold: the plain architecture's cost at inference, the same outputs."""
        return self.fold()

    def fold(self) -> "FoldedScanModel":
        """The inference model: plain convs holding k_s + k_i, identical outputs."""
        folded = build(dataclasses.replace(self.config, method="scan-folded",
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
        """Each layer's t on the layer's own device, as the unfolded model's are."""
        layers = {key: self.backbone.get_submodule(key) for key in self.options["t"]}
        return {key: (conv, torch.tensor(self.options["t"][key], device=conv.weight.device))
                for key, conv in layers.items()}

    def learnt_t(self) -> Dict[str, torch.Tensor]:
        """The t the config carries, exactly (float64, as JSON holds them)."""
        return {key: torch.tensor(t, dtype=torch.float64) for key, t in self.options["t"].items()}
