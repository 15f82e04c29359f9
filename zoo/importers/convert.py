"""Source layers -> a zoo model: the format-independent half of the importers.

A format reader (mxnet.py, safetensors_state.py, onnx_graph.py) turns a file into a
`SourceModel`: its parameterised layers (`Layer`: conv, bn, prelu, linear) in execution
order, plus what the file says about its input (normalisation, size). `convert` then walks
those layers side by side with the zoo architecture's own Conv2d / BatchNorm / PReLU /
Linear modules (in the order the zoo model runs them), checking the kind, every shape and,
where the source records them, kernel, stride, padding and groups. Any mismatch stops the
import naming the source layer and the zoo key it was meant to fill.

Layouts the zoo's modules do not have are rewritten exactly, never approximated:

- a conv with a bias where the zoo has conv (no bias) -> BN: the bias moves into the BN's
  running mean (mean - bias), or, when the source has no BN there (ONNX exports fold BN into
  the conv), into an identity BN's shift (running var 1, gamma sqrt(1 + eps), beta = bias);
- a 1x1 conv where the zoo has a Linear (the CASIA model's `linear1`): reshaped;
- MXNet's `fix_gamma=True` BN: gamma loaded as ones, as MXNet computes it;
- a graph that normalises its input by (x - 127.5) * s instead of the zoo's (x - 127.5) / 128:
  the first conv's weights are multiplied by 128 * s (exact, zero padding included).
"""
from __future__ import annotations

import dataclasses
import math
from collections import Counter
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
from torch import nn

from ..backbones import BACKBONES, INPUT_SIZE
from ..model import FaceModel, build, parse_name, set_bn_eps
from .core import TORCH_BN_EPS, ImporterError, Layer, SourceModel, input_scale_for


@dataclass
class Target:
    path: str  # module path, e.g. "backbone.stem.0.0"
    kind: str
    module: nn.Module

    def describe(self) -> str:
        m = self.module
        if self.kind == "conv":
            return (f"{self.path}.weight (Conv2d {tuple(m.weight.shape)}, stride {tuple(m.stride)}, "
                    f"padding {tuple(m.padding)}, groups {m.groups})")
        if self.kind == "linear":
            return f"{self.path}.weight (Linear {tuple(m.weight.shape)})"
        if self.kind == "bn":
            return f"{self.path}.weight ({type(m).__name__} {m.num_features})"
        return f"{self.path}.weight (PReLU {tuple(m.weight.shape)})"


def target_layers(model: nn.Module) -> List[Target]:
    """The zoo model's parameterised modules in the order its forward pass runs them."""
    targets = []
    for path, module in model.named_modules():
        if isinstance(module, nn.Conv2d):
            targets.append(Target(path, "conv", module))
        elif isinstance(module, nn.modules.batchnorm._BatchNorm):
            targets.append(Target(path, "bn", module))
        elif isinstance(module, nn.PReLU):
            targets.append(Target(path, "prelu", module))
        elif isinstance(module, nn.Linear):
            targets.append(Target(path, "linear", module))
        elif not list(module.children()) and any(True for _ in module.parameters(recurse=False)):
            raise ImporterError(f"{model.name}: module {path} ({type(module).__name__}) has weights no importer "
                                "can fill; import into the plain backbone instead")
    return targets


def expected_adds(model: nn.Module) -> Optional[int]:
    """Residual additions the zoo model makes (MobileFaceNet and IR-ResNet blocks)."""
    count, known = 0, False
    for module in model.modules():
        if hasattr(module, "use_shortcut"):
            count += bool(module.use_shortcut)
            known = True
        elif hasattr(module, "shortcut") and hasattr(module, "residual"):
            count += 1
            known = True
    return count if known else None


# ---------------------------------------------------------------------------------------
# what the source says about the architecture


def infer_architecture(source: SourceModel, backbone: str) -> Dict[str, Any]:
    """embedding_dim, input_size, width and head of the source, read from its layers."""
    layers = source.layers
    if not layers:
        raise ImporterError(f"{source.files[0]}: no layers with weights found")
    first = layers[0]
    if first.kind != "conv":
        raise ImporterError(f"{first.describe()}: a face network starts with a convolution; this source "
                            f"starts with a {first.op}")
    stem_channels = int(first.tensors["weight"].shape[0])
    width = stem_channels / 64.0
    linears = [i for i, l in enumerate(layers) if l.kind == "linear" or _is_embedding_conv(l, layers, i)]
    if not linears:
        raise ImporterError(f"{source.files[0]}: no fully-connected embedding layer found "
                            f"(last layer: {layers[-1].describe()})")
    fc_index = linears[-1]
    fc = layers[fc_index]
    embedding_dim = int(fc.tensors["weight"].shape[0])
    if source.embedding_dim is not None and source.embedding_dim != embedding_dim:
        raise ImporterError(f"{source.files[0]}: the graph's output has {source.embedding_dim} values but its "
                            f"last layer {fc.name!r} gives {embedding_dim}")
    gdc = _gdc_before(layers, fc_index)
    if gdc is not None:
        head = "gdc"
        kernel = tuple(int(v) for v in layers[gdc].tensors["weight"].shape[2:])
        grid, grid_from = kernel, f"the global depthwise conv {layers[gdc].name!r} ({kernel[0]}x{kernel[1]})"
    else:
        head = "fc"
        in_features = int(np.prod(fc.tensors["weight"].shape[1:]))
        channels = _channels_before(layers, fc_index)
        if channels is None or in_features % channels:
            raise ImporterError(f"{fc.describe()}: cannot tell the final feature map from {in_features} inputs")
        cells = in_features // channels
        if cells == 1 or cells % 7:
            raise ImporterError(f"{fc.describe()}: {in_features} inputs = {channels} channels x {cells} cells, "
                                "not a 7-row feature map of a 112-high face")
        grid, grid_from = (7, cells // 7), f"{fc.name!r}: {in_features} inputs = {channels} channels x 7 x {cells // 7}"
    input_size = (grid[0] * 16, grid[1] * 16)
    size_from = f"final feature map {grid[0]}x{grid[1]} ({grid_from}) x 16"
    if source.input_size is not None:
        declared = tuple(source.input_size)
        if declared != input_size and declared != (INPUT_SIZE, INPUT_SIZE):
            raise ImporterError(f"{source.files[0]}: the graph input is {declared[0]}x{declared[1]} but its layers "
                                f"need {input_size[0]}x{input_size[1]} ({size_from})")
        size_from = (f"the graph input {declared[0]}x{declared[1]}" + ("" if declared == input_size else
                     f", centre crop {input_size[0]}x{input_size[1]} from {size_from}"))
    default_head = "gdc" if backbone == "mobilefacenet" else "fc"
    return {"embedding_dim": embedding_dim, "input_size": input_size, "width": width,
            "head": None if head == default_head else head, "_size_from": size_from, "_head": head}


def _is_embedding_conv(layer: Layer, layers: Sequence[Layer], index: int) -> bool:
    """A 1x1 conv used as the embedding FC (CASIA's `linear1`): last conv, after the GDC."""
    if layer.kind != "conv" or tuple(layer.tensors["weight"].shape[2:]) != (1, 1):
        return False
    later = [l.kind for l in layers[index + 1:]]
    return all(k == "bn" for k in later) and _gdc_before(layers, index) is not None


def _gdc_before(layers: Sequence[Layer], index: int) -> Optional[int]:
    """Index of a global depthwise conv right before layer `index` (BNs between allowed)."""
    i = index - 1
    while i >= 0 and layers[i].kind == "bn":
        i -= 1
    if i < 0 or layers[i].kind != "conv":
        return None
    weight = layers[i].tensors["weight"]
    groups = layers[i].attrs.get("groups", weight.shape[0] if weight.shape[1] == 1 else 1)
    if weight.shape[1] == 1 and groups == weight.shape[0] and max(weight.shape[2:]) > 3:
        return i
    return None


def _channels_before(layers: Sequence[Layer], index: int) -> Optional[int]:
    for layer in reversed(layers[:index]):
        weight = layer.tensors.get("weight", layer.tensors.get("running_mean"))
        if weight is not None:
            return int(weight.shape[0])
    return None


# ---------------------------------------------------------------------------------------
# matching


def convert(source: SourceModel, arch: str, input_std: Optional[float] = None) -> Tuple[FaceModel, Dict[str, Any]]:
    """The zoo model holding `source`'s weights, and a record of what was read and assumed."""
    try:
        method, backbone = parse_name(arch)
    except KeyError as err:
        raise ImporterError(f"--arch {arch!r}: {err.args[0]}") from None
    if method != "plain":
        raise ImporterError(f"--arch {arch!r}: importers fill a plain backbone ({', '.join(BACKBONES)}); "
                            f"start a {method} model from the imported one with init_from")
    arch_info = infer_architecture(source, backbone)
    config = {k: v for k, v in arch_info.items() if not k.startswith("_")}
    if config["head"] is None:
        config.pop("head")
    try:
        model = build(backbone, **config).eval()
    except ValueError as err:
        raise ImporterError(f"{source.files[0]}: what the source describes does not build as {backbone}: {err}") from None
    factor, normalisation = input_scale_for(source, input_std)
    state, eps = _match(source, model, backbone)
    bn_eps = _eps_config(eps)
    for path, value in eps.items():
        if value is None:  # synthetic identity BN: gamma sqrt(1 + eps) with the eps it will run with
            effective = bn_eps.get(path, bn_eps.get("*", TORCH_BN_EPS))
            state[f"{path}.weight"] = torch.full_like(state[f"{path}.weight"], math.sqrt(1.0 + effective))
    first_conv = target_layers(model)[0]
    if factor != 1.0:
        key = f"{first_conv.path}.weight"
        state[key] = (state[key].double() * factor).float()
    model.config = dataclasses.replace(model.config, bn_eps=bn_eps)  # what config.json will rebuild
    set_bn_eps(model, bn_eps)
    expected = model.state_dict()
    missing = sorted(k for k in expected if k not in state and not k.endswith("num_batches_tracked"))
    if missing:
        raise ImporterError(f"{source.files[0]}: nothing in the source for {len(missing)} zoo key(s), e.g. {missing[:3]}")
    for key, value in expected.items():
        state.setdefault(key, value)
    model.load_state_dict(state, strict=True)
    adds = expected_adds(model)
    if source.residual_adds is not None and adds is not None and adds != source.residual_adds:
        raise ImporterError(f"{source.files[0]}: the source adds {source.residual_adds} residual branches, "
                            f"{backbone} has {adds} shortcuts; wrong --arch?")
    real_eps = [v for v in eps.values() if v is not None]
    record = {
        "embedding_dim": config["embedding_dim"], "input_size": list(config["input_size"]),
        "input_size_from": arch_info["_size_from"], "width": config["width"], "head": arch_info["_head"],
        "bn_eps": bn_eps, "bn_eps_in_file": source.eps_in_file, "bn_layers": len(eps), "bn_eps_counts": {f"{k:g}": n for k, n in Counter(map(_round_eps, real_eps)).items()},
        "bn_folded_into_conv": sum(v is None for v in eps.values()),
        "input_normalisation": normalisation, "first_conv_scaled_by": factor,
        "source_layers": len(source.layers), "residual_adds": source.residual_adds,
    }
    return model, record


def _match(source: SourceModel, model: FaceModel, backbone: str) -> Tuple[Dict[str, torch.Tensor], Dict[str, Optional[float]]]:
    targets = target_layers(model)
    layers = source.layers
    state: Dict[str, torch.Tensor] = {}
    eps: Dict[str, Optional[float]] = {}
    i = 0
    carried_bias: Optional[np.ndarray] = None  # a conv bias waiting for its BN
    carried_from: Optional[Layer] = None
    folded = False  # the last conv/linear's BN was folded into it by the source
    for t_index, target in enumerate(targets):
        where = f"{backbone} {target.describe()}"
        if target.kind == "bn" and folded:
            # the source has no BN here: identity BN carrying the folded conv's bias
            channels = target.module.num_features
            shift = carried_bias if carried_bias is not None else np.zeros(channels, np.float32)
            _check_shape(carried_from, "bias", shift.shape, (channels,), where)
            state.update({f"{target.path}.weight": torch.ones(channels), f"{target.path}.bias": _t(shift),
                          f"{target.path}.running_mean": torch.zeros(channels),
                          f"{target.path}.running_var": torch.ones(channels)})
            eps[target.path] = None
            carried_bias, carried_from, folded = None, None, False
            continue
        if i >= len(layers):
            last = layers[-1].name if layers else "(nothing)"
            raise ImporterError(f"{source.files[0]}: the source ends after {last!r} but {where} still needs "
                                f"weights ({len(targets) - t_index} zoo layers left); wrong --arch?")
        layer = layers[i]
        i += 1
        if target.kind == "conv":
            _expect(layer, ("conv",), target, where)
            weight = layer.tensors["weight"]
            _check_shape(layer, "weight", weight.shape, tuple(target.module.weight.shape), where)
            _check_conv_attrs(layer, target.module, where)
            state[f"{target.path}.weight"] = _t(weight)
            bias = layer.tensors.get("bias")
            if target.module.bias is not None:
                state[f"{target.path}.bias"] = _t(bias if bias is not None else np.zeros(weight.shape[0], np.float32))
                bias = None
            folded = _next_is_bn(targets, t_index) and not _feeds_bn(layers, i - 1)
            if bias is not None and not folded and not _feeds_bn(layers, i - 1):
                raise ImporterError(f"{layer.describe()}: has a bias that {where} cannot take (no BatchNorm after it)")
            carried_bias, carried_from = bias, layer
        elif target.kind == "linear":
            _expect(layer, ("linear", "conv"), target, where)
            weight = layer.tensors["weight"]
            if layer.kind == "conv":
                if tuple(weight.shape[2:]) != (1, 1):
                    raise ImporterError(f"{layer.describe()}: a {weight.shape[2]}x{weight.shape[3]} conv cannot fill {where}")
                weight = weight.reshape(weight.shape[0], weight.shape[1])
            _check_shape(layer, "weight", weight.shape, tuple(target.module.weight.shape), where)
            state[f"{target.path}.weight"] = _t(weight)
            bias = layer.tensors.get("bias")
            if target.module.bias is not None:
                state[f"{target.path}.bias"] = _t(bias if bias is not None else np.zeros(weight.shape[0], np.float32))
            elif bias is not None:
                raise ImporterError(f"{layer.describe()}: has a bias but {where} has none")
            folded = _next_is_bn(targets, t_index) and not _feeds_bn(layers, i - 1)
            carried_bias, carried_from = None, layer
        elif target.kind == "bn":
            _expect(layer, ("bn",), target, where)
            channels = target.module.num_features
            tensors = dict(layer.tensors)
            for key in ("weight", "bias", "running_mean", "running_var"):
                if key not in tensors and not (key == "weight" and layer.attrs.get("fix_gamma")):
                    raise ImporterError(f"{layer.describe()}: no {key} in the source for {where}")
                if key in tensors:
                    _check_shape(layer, key, tensors[key].shape, (channels,), where)
            gamma = np.ones(channels, np.float32) if layer.attrs.get("fix_gamma") else tensors["weight"]
            mean = tensors["running_mean"].astype(np.float64)
            if carried_bias is not None:  # conv(x) + b then BN: same as BN with mean - b
                _check_shape(carried_from, "bias", carried_bias.shape, (channels,), where)
                mean = mean - carried_bias.astype(np.float64)
            var = tensors["running_var"]
            if np.any(var < 0):
                raise ImporterError(f"{layer.describe()}: negative running variance")
            state.update({f"{target.path}.weight": _t(gamma), f"{target.path}.bias": _t(tensors["bias"]),
                          f"{target.path}.running_mean": _t(mean), f"{target.path}.running_var": _t(var)})
            eps[target.path] = float(layer.attrs.get("eps", TORCH_BN_EPS))
            carried_bias, carried_from, folded = None, None, False
        else:  # prelu
            _expect(layer, ("prelu",), target, where)
            slope = layer.tensors["weight"]
            expected = tuple(target.module.weight.shape)
            if slope.size == expected[0] and slope.ndim >= 1:
                slope = slope.reshape(expected)
            _check_shape(layer, "weight", slope.shape, expected, where)
            state[f"{target.path}.weight"] = _t(slope)
    if folded:
        raise ImporterError(f"{carried_from.describe()}: the zoo needs a BatchNorm after it and the source has none")
    if i < len(layers):
        raise ImporterError(f"{layers[i].describe()}: no place for it in {backbone}: the architecture ends at "
                            f"{targets[-1].path} ({len(layers) - i} source layer(s) left over); wrong --arch?")
    return state, eps


def _feeds_bn(layers: Sequence[Layer], index: int) -> bool:
    layer = layers[index]
    if layer.feeds_bn is not None:
        return layer.feeds_bn
    return index + 1 < len(layers) and layers[index + 1].kind == "bn"


def _next_is_bn(targets: Sequence[Target], index: int) -> bool:
    return index + 1 < len(targets) and targets[index + 1].kind == "bn"


def _expect(layer: Layer, kinds: Tuple[str, ...], target: Target, where: str) -> None:
    if layer.kind not in kinds:
        raise ImporterError(f"{layer.describe()} is a {layer.kind} where {where} expects a {target.kind}; "
                            "the source's layers do not follow this architecture (wrong --arch?)")


def _check_shape(layer: Optional[Layer], key: str, got, expected, where: str) -> None:
    if tuple(got) != tuple(expected):
        name = layer.describe() if layer is not None else "source"
        raise ImporterError(f"{name}: {key} shape {tuple(got)} does not fit {where}: expected {tuple(expected)}")


def _check_conv_attrs(layer: Layer, conv: nn.Conv2d, where: str) -> None:
    attrs = layer.attrs
    checks = (("stride", tuple(conv.stride)), ("padding", tuple(conv.padding)), ("groups", conv.groups),
              ("dilation", tuple(conv.dilation)))
    for key, expected in checks:
        if key in attrs and attrs[key] != expected:
            raise ImporterError(f"{layer.describe()}: {key} {attrs[key]} does not fit {where}: expected {expected}")


def _t(array) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(np.asarray(array, dtype=np.float32)).copy())


def _eps_config(eps: Dict[str, Optional[float]]) -> Dict[str, float]:
    """{"*": most common eps, path: eps for the others}; folded BNs follow "*"."""
    real = {k: _round_eps(v) for k, v in eps.items() if v is not None}
    if not real:
        return {"*": TORCH_BN_EPS}
    common = Counter(real.values()).most_common(1)[0][0]
    return {"*": common, **{k: v for k, v in real.items() if v != common}}


def _round_eps(value: float) -> float:
    """float32-stored eps (ONNX's 9.99999974e-06) back to the value that was meant (1e-05)."""
    return float(f"{value:.6g}")


def verify(model: FaceModel, source: SourceModel, count: int = 2, seed: int = 0) -> Optional[Dict[str, Any]]:
    """Run the source's own forward pass and the imported model on the same faces; compare."""
    if source.reference is None:
        return None
    generator = torch.Generator().manual_seed(seed)
    images = torch.rand(count, 3, INPUT_SIZE, INPUT_SIZE, generator=generator) * 2 - 1
    images = torch.round((images * 128 + 127.5).clamp(0, 255)) / 128 - 127.5 / 128  # real 8-bit pixel values
    with torch.no_grad():
        ours = model.eval()(images).double().numpy()
    theirs = np.asarray(source.reference(images.numpy(), tuple(model.config.input_size)), np.float64)
    theirs = theirs.reshape(ours.shape) if theirs.size == ours.size else theirs
    if theirs.shape != ours.shape:
        raise ImporterError(f"{source.reference_name}: the source's output {theirs.shape} differs from the "
                            f"imported model's {ours.shape}")
    scale = float(np.abs(theirs).max()) or 1.0
    max_diff = float(np.abs(ours - theirs).max())
    cosine = float(np.min(np.sum(ours * theirs, 1) / (np.linalg.norm(ours, axis=1) * np.linalg.norm(theirs, axis=1))))
    result = {"reference": source.reference_name, "images": count, "max_abs_diff": max_diff,
              "relative_max_diff": max_diff / scale, "min_cosine": cosine}
    if not max_diff / scale < 1e-4:
        raise ImporterError(f"{source.files[0]}: the imported model does not compute what the source does "
                            f"(checked against {source.reference_name}: max difference {max_diff:.3g} "
                            f"on outputs up to {scale:.3g}, min cosine {cosine:.6f}); the layers matched by shape "
                            "but not by wiring: wrong --arch, or an input normalisation other than assumed")
    return result
