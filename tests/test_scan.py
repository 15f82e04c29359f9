"""SCAN-CNN: scale attention conv maths (Eq. 2 and sum-normalised Gaussians), RMO gradient
confinement to k_s and the fused training conv against the formulation it replaced, exact
folding, exact fine-tuning starts from a trained plain model, and explain on the model's device."""
import math

import pytest
import torch
import torch.nn.functional as F

import zoo
from zoo.methods.scan import ScaleAttentionConv2d, gaussian_kernels, scale_kernel, scale_map
from faces import lfw_faces, pretrained_like


class ReferenceWeightOnlyConvGrad(torch.autograd.Function):
    """The RMO path SCAN had before its fused training conv: a precomputed conv output whose
    gradient flows to the kernel only, through a second weight-gradient convolution."""

    @staticmethod
    def forward(ctx, output, inputs, weight, stride, groups):
        ctx.save_for_backward(inputs, weight)
        ctx.stride, ctx.groups = stride, groups
        return output.clone()

    @staticmethod
    def backward(ctx, grad_output):
        inputs, weight = ctx.saved_tensors
        grad_weight = torch.nn.grad.conv2d_weight(inputs.to(grad_output.dtype), weight.shape, grad_output,
                                                  ctx.stride, 1, 1, ctx.groups)
        return None, None, grad_weight.to(weight.dtype), None, None


def reference_forward(layer, x):
    """ScaleAttentionConv2d.forward as it was (kept here as the reference the fused conv must equal)."""
    scale = layer.scale_kernel()
    kernel = scale if layer.shortcut_weight is None else scale + layer.shortcut_weight
    out = F.conv2d(x, kernel, stride=layer.stride, padding=1, groups=layer.groups)
    if layer.training and layer.rmo and torch.is_grad_enabled():
        trained = kernel if layer.rmo_kernels == "layer" else scale  # what RMO's gradient reaches
        local = ReferenceWeightOnlyConvGrad.apply(out.detach(), x.detach(), trained, layer.stride, layer.groups)
        norms = local.flatten(1).norm(dim=1)
        layer.rmo_loss = torch.exp(-layer.rmo_lambda * norms / (out.shape[-2] * out.shape[-1])).mean()
    else:
        layer.rmo_loss = None
    return out


def assert_same_gradients(ours, reference):
    assert ours.keys() == reference.keys()
    for name, grad in reference.items():
        assert (ours[name] is None) == (grad is None), name
        if grad is not None:
            assert torch.allclose(ours[name], grad, atol=1e-5 * grad.abs().max().item() + 1e-12), name


@pytest.fixture(scope="module")
def faces():
    return lfw_faces(8, seed=2)


def test_gaussian_follows_eq2_with_variance_t():
    t = torch.tensor([0.25, 0.5, 1.0, 2.0])
    g = gaussian_kernels(t)
    assert g.shape == (4, 5, 5)
    r = torch.arange(5.0) - 2
    sq = r[:, None] ** 2 + r[None, :] ** 2
    for k in range(4):  # Eq. 2 for D = 2, sampled on the integer grid
        assert torch.allclose(g[k], torch.exp(-sq / (2 * t[k])) / (2 * math.pi * t[k]))
    assert g[2, 2, 2].item() == pytest.approx(1 / (2 * math.pi))
    # sampling (small t) and the 5x5 support (large t) make the sum drift from the integral's 1
    assert torch.allclose(g.sum(dim=(1, 2))[1:3], torch.ones(2), atol=0.02)
    assert g.sum(dim=(1, 2))[3] < 0.9
    marginal = g.sum(dim=1) / g.sum(dim=(1, 2))[:, None]
    variance_x = (marginal * r**2).sum(dim=1)
    assert torch.allclose(variance_x[1:3], t[1:3], rtol=0.1)
    assert (variance_x.diff() > 0).all()


def test_sum_normalised_gaussian_option():
    t = torch.tensor([0.25, 0.5, 1.0, 2.0])
    g = gaussian_kernels(t, "sum")
    assert torch.allclose(g.sum(dim=(1, 2)), torch.ones(4))
    assert torch.allclose(g, gaussian_kernels(t) / gaussian_kernels(t).sum(dim=(1, 2), keepdim=True))
    assert torch.allclose(gaussian_kernels(torch.tensor([1e-4]), "sum")[0, 2, 2], torch.tensor(1.0))
    with pytest.raises(ValueError, match="gaussian_norm must be one of"):
        gaussian_kernels(t, "peak")


@pytest.mark.parametrize("norm", ["eq2", "sum"])
def test_scale_kernel_is_centre_of_full_convolution(norm):
    torch.manual_seed(0)
    k, t = torch.randn(4, 3, 3, 3), torch.tensor([0.3, 0.7, 1.0, 2.0])
    expected = []
    for o in range(4):
        g = gaussian_kernels(t[o:o + 1], norm)[0]
        # full 2-D convolution of every 3x3 slice with g (g is symmetric, so correlation = convolution)
        full = F.conv2d(F.pad(k[o][:, None], (4, 4, 4, 4)), g[None, None])  # (3,1,7,7)
        expected.append(t[o] * full[:, 0, 2:5, 2:5])
    assert torch.allclose(scale_kernel(k, t, norm), torch.stack(expected), atol=1e-6)


def test_scale_kernel_of_a_unit_impulse_by_hand():
    """k = unit impulse, t = 1: k_s = t * crop3x3(g_1) = exp(-(i^2 + j^2) / 2) / (2 pi), i, j in -1..1."""
    k = torch.zeros(1, 1, 3, 3)
    k[0, 0, 1, 1] = 1.0
    centre, edge, corner = 1 / (2 * math.pi), math.exp(-0.5) / (2 * math.pi), math.exp(-1.0) / (2 * math.pi)
    expected = torch.tensor([[corner, edge, corner], [edge, centre, edge], [corner, edge, corner]])
    assert torch.allclose(scale_kernel(k, torch.ones(1))[0, 0], expected, atol=1e-7)
    # t = 2: t * exp(-r^2 / 4) / (4 pi): the 1/(2 pi t) and t^(gamma m) cancel
    expected_2 = torch.tensor([[math.exp(-0.5), math.exp(-0.25), math.exp(-0.5)],
                               [math.exp(-0.25), 1.0, math.exp(-0.25)],
                               [math.exp(-0.5), math.exp(-0.25), math.exp(-0.5)]]) / (2 * math.pi)
    assert torch.allclose(scale_kernel(k, torch.full((1,), 2.0))[0, 0], expected_2, atol=1e-7)


def test_tiny_t_reduces_the_scale_kernel_to_a_plain_conv_under_eq2_and_to_zero_under_sum():
    k = torch.randn(2, 1, 3, 3)
    t = torch.full((2,), 1e-4)
    assert torch.allclose(scale_kernel(k, t), k / (2 * math.pi), atol=1e-7)  # section 6.2's "plain convolution"
    assert torch.allclose(scale_kernel(k, t, "sum"), t[:, None, None, None] * k, atol=1e-9)


def _trained(name, faces, steps=3):
    """A few SGD steps so t, kernels and BatchNorm statistics leave their initial values."""
    torch.manual_seed(0)
    model = zoo.build(name, width=0.25).train()
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    for _ in range(steps):
        loss = -model(faces).std() + model.auxiliary_losses()["rmo"]
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model.eval()


@pytest.mark.parametrize("name", ["scan-ir18", "scan-mobilefacenet"])
def test_folded_model_matches_unfolded_on_real_faces(name, faces):
    model = _trained(name, faces)
    t_values = torch.cat(list(model.learnt_t().values()))
    assert not torch.allclose(t_values, torch.ones_like(t_values)), "t should have moved during training"
    folded = model.fold().eval()
    with torch.no_grad():
        a, b = model(faces), folded(faces)
    assert torch.allclose(a, b, rtol=1e-5, atol=1e-5 * a.abs().max().item())
    assert torch.allclose(model.embed(faces), folded.embed(faces), atol=1e-6)


def test_inference_form_is_the_fold_and_keeps_the_learnt_t(faces):
    model = _trained("scan-ir18", faces, steps=1)
    folded = model.inference_form()
    assert folded.method == "scan-folded" and torch.equal(folded.embed(faces), model.fold().embed(faces))
    learnt = model.learnt_t()
    assert folded.learnt_t().keys() == learnt.keys()
    assert all(torch.equal(folded.learnt_t()[k].float(), t) for k, t in learnt.items())
    assert model.epoch_records() == {"scan_t": {k: [round(v, 6) for v in t.tolist()] for k, t in learnt.items()}}
    assert folded.epoch_records() == {} and folded.inference_form() is folded


def test_folded_model_is_exactly_the_plain_architecture(faces):
    model = _trained("scan-ir18", faces, steps=1)
    folded = model.fold()
    plain = zoo.build("ir18", width=0.25)
    assert folded.parameter_count() == plain.parameter_count() < model.parameter_count()
    assert {k: v.shape for k, v in folded.state_dict().items()} == {k: v.shape for k, v in plain.state_dict().items()}
    convs = lambda m: [(n, tuple(c.weight.shape)) for n, c in m.named_modules() if isinstance(c, torch.nn.Conv2d)]
    assert convs(folded) == convs(plain)
    assert not any(isinstance(m, ScaleAttentionConv2d) for m in folded.modules())


def test_rmo_gradient_stays_in_its_layer_and_reaches_k_and_t_only():
    torch.manual_seed(0)
    first = ScaleAttentionConv2d(3, 8)
    second = ScaleAttentionConv2d(8, 8)
    x = torch.randn(2, 3, 16, 16, requires_grad=True)
    first.train(), second.train()
    second(first(x))
    second.rmo_loss.backward()
    assert x.grad is None
    assert all(p.grad is None for p in first.parameters())
    assert second.t.grad is not None and second.t.grad.abs().sum() > 0
    assert second.weight.grad.abs().sum() > 0
    assert second.shortcut_weight.grad is None  # k_i is trained by the recognition loss only

    whole = ScaleAttentionConv2d(8, 8, rmo_kernels="layer").train()  # the option: RMO trains k_s and k_i
    whole(first(x))
    whole.rmo_loss.backward()
    assert x.grad is None and whole.shortcut_weight.grad.abs().sum() > 0 and whole.t.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="rmo_kernels must be one of"):
        ScaleAttentionConv2d(8, 8, rmo_kernels="input")


@pytest.mark.parametrize("shortcut", [True, False])
def test_rmo_matches_a_reference_on_a_detached_input(shortcut):
    torch.manual_seed(0)
    layer = ScaleAttentionConv2d(3, 4, rmo_lambda=0.5, shortcut=shortcut).train()
    x = torch.randn(2, 3, 10, 10)
    out = layer(x)
    layer.rmo_loss.backward()
    ours = {n: p.grad for n, p in layer.named_parameters()}
    layer.zero_grad(set_to_none=True)
    # the reference: L_scale of a convolution of the detached input, k_i held constant
    kernel = layer.scale_kernel() + (layer.shortcut_weight.detach() if shortcut else 0)
    reference_out = F.conv2d(x.detach(), kernel, padding=1)
    norms = reference_out.flatten(1).norm(dim=1)
    reference = torch.exp(-0.5 * norms / 100).mean()
    reference.backward()
    assert torch.allclose(layer.rmo_loss, reference)
    assert torch.allclose(out, reference_out)
    for name, p in layer.named_parameters():
        if p.grad is None:
            assert name == "shortcut_weight" and ours[name] is None
        else:
            assert torch.allclose(ours[name], p.grad, atol=1e-7), name


def test_ablation_switches(faces):
    no_rmo = zoo.build("scan-ir18", width=0.25, rmo=False).train()
    no_rmo(faces[:2])
    assert no_rmo.auxiliary_losses() == {}
    no_lsc = zoo.build("scan-ir18", width=0.25, shortcut=False)
    assert all(m.shortcut_weight is None for m in no_lsc.scale_convs().values())
    full = zoo.build("scan-ir18", width=0.25).train()
    full(faces[:2])
    assert set(full.rmo_losses()) == set(full.scale_convs())


def test_gaussian_norm_option(faces):
    assert zoo.build("scan-ir18", width=0.25).options["gaussian_norm"] == "eq2"
    torch.manual_seed(0)
    eq2 = zoo.build("scan-ir18", width=0.25).eval()
    torch.manual_seed(0)
    summed = zoo.build("scan-ir18", width=0.25, gaussian_norm="sum").eval()
    layer, other = eq2.scale_convs()["stem.0"], summed.scale_convs()["stem.0"]
    assert torch.equal(layer.weight, other.weight) and layer.gaussian_norm == "eq2" and other.gaussian_norm == "sum"
    assert torch.allclose(other.scale_kernel(), scale_kernel(other.weight, other.positive_t, "sum"))
    assert not torch.allclose(layer.scale_kernel(), other.scale_kernel())
    with torch.no_grad():
        assert not torch.allclose(eq2(faces[:2]), summed(faces[:2]))
    with pytest.raises(ValueError, match="gaussian_norm must be one of"):
        zoo.build("scan-ir18", width=0.25, gaussian_norm="unit")


def test_t_is_excluded_from_weight_decay_and_kept_positive():
    model = zoo.build("scan-ir18", width=0.25)
    names = model.no_weight_decay()
    assert names and all(n.endswith(".t") for n in names)
    assert len(names) == len(model.scale_convs())
    layer = next(iter(model.scale_convs().values()))
    with torch.no_grad():
        layer.t.fill_(-3.0)
    assert (layer.positive_t > 0).all()


def test_scale_map_picks_the_t_of_the_strongest_channel():
    t = torch.tensor([0.5, 1.0, 2.0])
    response = torch.zeros(1, 3, 2, 2)
    response[0, 0, 0, 0] = 5.0
    response[0, 2, 0, 1] = -7.0  # strength is magnitude
    response[0, 1, 1, :] = 1.0
    expected = torch.tensor([[[0.5, 2.0], [1.0, 1.0]]])
    assert torch.equal(scale_map(response, t), expected)


def test_explain_gives_scale_maps_before_and_after_folding(faces, tmp_path):
    model = _trained("scan-ir18", faces, steps=1)
    maps = model.explain(faces[:2])
    layers = list(model.scale_convs())
    assert set(maps.maps) == {f"scale_map/{k}" for k in layers}
    assert maps.maps["scale_map/stem.0"].shape == (2, 112, 112)
    assert maps.maps[f"scale_map/{layers[-1]}"].shape == (2, 7, 7)
    for key in layers:
        assert torch.isin(maps.maps[f"scale_map/{key}"], maps.values[f"t/{key}"]).all()
    folded = zoo.load(zoo.save(model.fold(), tmp_path / "folded"))
    folded_maps = folded.explain(faces[:2])
    for key, value in maps.maps.items():
        agree = (folded_maps.maps[key] == value).float().mean()
        assert agree > 0.99, key  # argmax ties may break differently by float rounding


@pytest.mark.parametrize("name, options", [
    ("mobilefacenet", {}), ("ir18", {}), ("mobilefacenet", {"gaussian_norm": "sum"}),
    ("mobilefacenet", {"shortcut": False})])
def test_init_from_a_plain_model_computes_it_exactly(name, options, faces):
    arch = {"embedding_dim": 128, "bn_eps": {"*": 1e-3}} if name == "mobilefacenet" else {}
    plain = pretrained_like(name, faces, prelu=True, **arch)
    torch.manual_seed(2)
    scan = zoo.build(f"scan-{name}", width=0.25, **arch, **options)
    untrained = scan.init_from(plain)
    assert untrained == sorted(f"backbone.{key}.t" for key in scan.scale_convs())
    assert all(torch.equal(m.t, torch.ones_like(m.t)) for m in scan.scale_convs().values())
    # Without LSC, k = A_t^-1 W is stored in float32: the rounding of k is amplified by the
    # condition number of k -> k_s (about 90 at t = 1), so that start is exact to ~1e-5 only.
    kernel_tol, embedding_tol = (1e-5, 1e-4) if options.get("shortcut") is False else (1e-6, 1e-5)
    for key, module in scan.scale_convs().items():
        trained_weight = plain.state_dict()[f"backbone.{key}.weight"]
        scale = trained_weight.abs().max()
        assert (module.merged_kernel() - trained_weight).abs().max() <= kernel_tol * scale, key
        if module.shortcut_weight is not None:
            assert torch.equal(module.weight, trained_weight)  # k = W, k_i = W - k_s(W, t)
    expected = plain.embed(faces)
    assert torch.allclose(scan.embed(faces), expected, atol=embedding_tol)
    assert torch.allclose(scan.fold().embed(faces), expected, atol=embedding_tol)
    scan.train()(faces[:4])  # RMO is live from the first fine-tuning step
    assert set(scan.rmo_losses()) == set(scan.scale_convs())


def test_init_from_refuses_another_architecture(faces):
    scan = zoo.build("scan-ir18", width=0.25)
    with pytest.raises(ValueError, match="cannot start from ir18"):
        scan.init_from(zoo.build("ir18", width=0.5))


@pytest.mark.fast
@pytest.mark.parametrize("in_channels, out_channels, stride, groups, shortcut", [
    (3, 8, 1, 1, True), (8, 16, 2, 1, True), (8, 8, 1, 8, True), (8, 16, 2, 2, True), (8, 8, 1, 1, False)])
@pytest.mark.parametrize("losses", ["both", "recognition", "rmo"])
@pytest.mark.parametrize("rmo_kernels", ["scale", "layer"])
def test_fused_training_conv_equals_the_reference(in_channels, out_channels, stride, groups, shortcut, losses,
                                                  rmo_kernels):
    """Output, L_scale and every gradient (input, k, t, k_i) as the two-pass formulation gives them,
    for full, strided, grouped and depthwise convs, with the recognition loss, RMO or both, RMO
    training k_s alone or k_s and k_i."""
    torch.manual_seed(0)
    layer = ScaleAttentionConv2d(in_channels, out_channels, stride, groups, shortcut=shortcut, rmo_lambda=0.5,
                                 rmo_kernels=rmo_kernels).train()
    with torch.no_grad():
        layer.t.uniform_(0.3, 2.0)
    x = torch.randn(3, in_channels, 12, 12, requires_grad=True)
    upstream = torch.randn(3, out_channels, 12 // stride, 12 // stride)
    results = []
    for forward in (layer, lambda inputs: reference_forward(layer, inputs)):
        layer.zero_grad(set_to_none=True)
        x.grad = None
        out = forward(x)
        terms = {"recognition": [(out * upstream).sum()], "rmo": [3.0 * layer.rmo_loss]}
        sum(terms["recognition"] + terms["rmo"] if losses == "both" else terms[losses]).backward()
        results.append((out.detach(), layer.rmo_loss.detach(),
                        {"input": x.grad, **{name: p.grad for name, p in layer.named_parameters()}}))
    (out, rmo, gradients), (reference_out, reference_rmo, reference_gradients) = results
    assert torch.equal(out, reference_out) and torch.allclose(rmo, reference_rmo)
    assert_same_gradients(gradients, reference_gradients)


@pytest.mark.parametrize("name", ["scan-ir18", "scan-mobilefacenet"])
def test_training_gradients_equal_the_reference_on_real_faces(name, faces, monkeypatch):
    torch.manual_seed(0)
    model = _trained(name, faces, steps=1).train()
    gradients = []
    for forward in (ScaleAttentionConv2d.forward, reference_forward):
        monkeypatch.setattr(ScaleAttentionConv2d, "forward", forward)
        model.zero_grad(set_to_none=True)
        (-model(faces).std() + model.auxiliary_losses()["rmo"]).backward()
        gradients.append({n: p.grad for n, p in model.named_parameters()})
    assert_same_gradients(*gradients)


def test_folded_explain_keeps_t_on_the_models_device():
    """The folded model's t ride in its config (host memory); the scale map indexes them with the
    responses' argmax, so both must sit on the model's device. On the meta device a host t
    indexed by meta indices gives host garbage instead of failing, which is what this catches
    without a GPU (on CUDA it was a crash)."""
    folded = zoo.build("scan-ir18", width=0.25).fold().to("meta")
    explanation = folded.explain(torch.empty(2, 3, 112, 112, device="meta"))
    assert explanation.maps and all(m.device.type == "meta" for m in explanation.maps.values())
    assert all(t.device.type == "meta" for t in explanation.values.values())
    response, t = torch.randn(1, 3, 2, 2, device="meta"), torch.tensor([0.5, 1.0, 2.0])
    assert scale_map(response, t).device.type == "meta"
