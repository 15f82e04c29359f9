"""SCAN-CNN: scale attention conv maths, RMO gradient confinement, and exact folding."""
import pytest
import torch
import torch.nn.functional as F

import zoo
from zoo.methods.scan import ScaleAttentionConv2d, gaussian_kernels, scale_kernel, scale_map
from faces import lfw_faces


@pytest.fixture(scope="module")
def faces():
    return lfw_faces(8, seed=2)


def test_gaussian_is_normalised_with_variance_t():
    t = torch.tensor([0.25, 0.5, 1.0, 2.0])
    g = gaussian_kernels(t)
    assert g.shape == (4, 5, 5)
    assert torch.allclose(g.sum(dim=(1, 2)), torch.ones(4))
    r = torch.arange(5.0) - 2
    variance_x = (g.sum(dim=1) * r**2).sum(dim=1)  # marginal variance along x
    # sampling (small t) and the 5x5 support (large t) bend the variance away from t a little
    assert torch.allclose(variance_x[1:3], t[1:3], rtol=0.1)
    assert (variance_x.diff() > 0).all()
    assert torch.allclose(gaussian_kernels(torch.tensor([1e-4]))[0, 2, 2], torch.tensor(1.0))


def test_scale_kernel_is_centre_of_full_convolution():
    torch.manual_seed(0)
    k, t = torch.randn(4, 3, 3, 3), torch.tensor([0.3, 0.7, 1.0, 2.0])
    expected = []
    for o in range(4):
        g = gaussian_kernels(t[o:o + 1])[0]
        # full 2-D convolution of every 3x3 slice with g (g is symmetric, so correlation = convolution)
        full = F.conv2d(F.pad(k[o][:, None], (4, 4, 4, 4)), g[None, None])  # (3,1,7,7)
        expected.append(t[o] * full[:, 0, 2:5, 2:5])
    assert torch.allclose(scale_kernel(k, t), torch.stack(expected), atol=1e-6)


def test_tiny_t_reduces_the_scale_kernel_to_t_times_k():
    k = torch.randn(2, 1, 3, 3)
    t = torch.full((2,), 1e-4)
    assert torch.allclose(scale_kernel(k, t), t[:, None, None, None] * k, atol=1e-9)


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


def test_folded_model_is_exactly_the_plain_architecture(faces):
    model = _trained("scan-ir18", faces, steps=1)
    folded = model.fold()
    plain = zoo.build("ir18", width=0.25)
    assert folded.parameter_count() == plain.parameter_count() < model.parameter_count()
    assert {k: v.shape for k, v in folded.state_dict().items()} == {k: v.shape for k, v in plain.state_dict().items()}
    convs = lambda m: [(n, tuple(c.weight.shape)) for n, c in m.named_modules() if isinstance(c, torch.nn.Conv2d)]
    assert convs(folded) == convs(plain)
    assert not any(isinstance(m, ScaleAttentionConv2d) for m in folded.modules())


def test_rmo_gradient_stays_in_its_layer():
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
    assert second.weight.grad.abs().sum() > 0 and second.shortcut_weight.grad.abs().sum() > 0


def test_rmo_matches_a_reference_on_a_detached_input():
    torch.manual_seed(0)
    layer = ScaleAttentionConv2d(3, 4, rmo_lambda=0.5).train()
    x = torch.randn(2, 3, 10, 10)
    out = layer(x)
    layer.rmo_loss.backward()
    ours = {n: p.grad.clone() for n, p in layer.named_parameters()}
    layer.zero_grad()
    reference_out = F.conv2d(x.detach(), layer.merged_kernel(), padding=1)
    norms = reference_out.flatten(1).norm(dim=1)
    reference = torch.exp(-0.5 * norms / 100).mean()
    reference.backward()
    assert torch.allclose(layer.rmo_loss, reference)
    assert torch.allclose(out, reference_out)
    for name, p in layer.named_parameters():
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
