"""SRANet: attention shapes and normalisation per variant, residual zero-init, training, explain,
checkpoints, and the fast formulation against the plain one it replaced."""
import pytest
import torch

import zoo
from zoo.methods import sranet
from zoo.export import graph_form
from zoo.methods.sranet import (GraphSelfResidualAttention, SelfChannelAttention, SelfSpatialAttention, attend,
                                 reduce_spatial)
from faces import lfw_faces, pretrained_like

WIDTH = 0.25


@pytest.fixture(scope="module")
def faces():
    return lfw_faces(8, seed=3)


def attention_modules(model, kind):
    return [m for m in model.modules() if isinstance(m, kind)]


def push_apart(model, batch):
    """Backpropagate a loss that separates the faces' embeddings (all different people).

    Needs more than 2 faces: with 2, the final train-mode BN1d makes them antipodal whatever
    the input, and every gradient behind it vanishes.
    """
    embeddings = torch.nn.functional.normalize(model(batch))
    (embeddings @ embeddings.T).triu(diagonal=1).pow(2).mean().backward()


@pytest.mark.parametrize("variant, keys_14x14, keys_7x7", [
    ("light", 49, 16), ("avg", 49, 16), ("max", 49, 16), ("naive", 196, 49)])
def test_attention_rows_sum_to_one_with_the_variants_key_count(variant, keys_14x14, keys_7x7, faces):
    torch.manual_seed(0)
    model = zoo.build("sranet-ir18", width=WIDTH, variant=variant)
    explanation = model.explain(faces[:2])
    channels = model.backbone.block_channels
    for i, c in enumerate(channels):
        a_c = explanation.values[f"channel_attention/block{i}"]
        assert a_c.shape == (2, c, c // 2)
        assert torch.allclose(a_c.sum(dim=-1), torch.ones(2, c), atol=1e-5)
        row = explanation.maps[f"spatial_attention/block{i}"]
        assert torch.allclose(row.sum(dim=(1, 2)), torch.ones(2), atol=1e-5)
    # ir18 stages: blocks 0-1 at 56x56, 2-3 at 28x28, 4-5 at 14x14, 6-7 at 7x7
    last_two_stages = {4: (196, keys_14x14), 5: (196, keys_14x14), 6: (49, keys_7x7), 7: (49, keys_7x7)}
    for i, (queries, keys) in last_two_stages.items():
        a_s = explanation.values[f"spatial_attention_matrix/block{i}"]
        assert a_s.shape == (2, queries, keys)
        assert torch.allclose(a_s.sum(dim=-1), torch.ones(2, queries), atol=1e-5)
    assert not any(f"spatial_attention_matrix/block{i}" in explanation.values for i in range(4))
    side = 56 if variant == "naive" else 28
    assert explanation.maps["spatial_attention/block0"].shape == (2, side, side)


@pytest.mark.parametrize("placement", ["in_block", "after_block"])
def test_untrained_sranet_is_exactly_its_plain_backbone(placement, faces):
    """Zero-initialised attention BN: every attention term is 0, so only the residual path remains."""
    torch.manual_seed(0)
    plain = zoo.build("ir18", width=WIDTH)
    sranet = zoo.build("sranet-ir18", width=WIDTH, placement=placement)
    sranet.backbone.load_state_dict(plain.backbone.state_dict())
    for mode in (True, False):
        plain.train(mode)
        sranet.train(mode)
        with torch.no_grad():
            assert torch.equal(sranet(faces[:2]), plain(faces[:2]))
    explanation = sranet.explain(faces[:2])
    for i in range(len(sranet.backbone.blocks)):
        assert torch.equal(explanation.maps[f"channel_mean/block{i}/before"],
                           explanation.maps[f"channel_mean/block{i}/after"])


def live_attention(model):
    """Give every attention BN a non-zero affine map, so the attention terms are live."""
    generator = torch.Generator().manual_seed(5)
    with torch.no_grad():
        for module in attention_modules(model, SelfChannelAttention) + attention_modules(model, SelfSpatialAttention):
            module.bn.weight.copy_(torch.rand(module.bn.weight.shape, generator=generator) + 0.5)
            module.bn.bias.copy_(torch.rand(module.bn.bias.shape, generator=generator) - 0.5)
    return model.eval()


def test_default_placement_is_inside_the_block_on_the_residual_branch(faces):
    """Fig. 4: X_R = shortcut(X) + SSA(SCA(R(X))); "after_block": SSA(SCA(R(X) + shortcut(X)))."""
    torch.manual_seed(0)
    inside = live_attention(zoo.build("sranet-ir18", width=WIDTH))
    assert inside.options["placement"] == "in_block"
    after = live_attention(zoo.build("sranet-ir18", width=WIDTH, placement="after_block"))
    after.load_state_dict(inside.state_dict())
    with torch.no_grad():
        x = inside.backbone.begin(faces[:2])
        for i in (0, 1):  # block 0 downsamples (1x1 conv shortcut), block 1 has the identity shortcut
            block, attention = inside.backbone.blocks[i], inside.attention[i]
            residual, shortcut = block.residual(x), block.shortcut(x)
            expected_inside = shortcut + attention.spatial(attention.channel(residual)[0])[0]
            expected_after = attention(residual + shortcut)[0]
            assert torch.allclose(inside._block(block, attention, x), expected_inside, atol=1e-6)
            assert torch.allclose(after._block(block, attention, x), expected_after, atol=1e-6)
            assert not torch.allclose(expected_inside, expected_after, atol=1e-3)
            x = expected_inside
        assert not torch.allclose(inside(faces[:2]), after(faces[:2]), atol=1e-3)
    with pytest.raises(ValueError, match="placement must be one of"):
        zoo.build("sranet-ir18", width=WIDTH, placement="before_block")


@pytest.mark.parametrize("placement", ["in_block", "after_block"])
def test_sranet_mobilefacenet_starts_as_the_pretrained_network(placement, faces):
    arch = {"embedding_dim": 128, "bn_eps": {"*": 1e-3}}
    plain = pretrained_like("mobilefacenet", faces, **arch)
    torch.manual_seed(2)
    model = zoo.build("sranet-mobilefacenet", width=WIDTH, placement=placement, **arch)
    untrained = model.init_from(plain)
    assert untrained and all(name.startswith("attention.") for name in untrained)
    assert len(model.attention) == len(model.backbone.blocks) == 15
    assert torch.allclose(model.embed(faces), plain.embed(faces), atol=1e-5)


def test_explain_on_mobilefacenet(faces):
    torch.manual_seed(0)
    model = live_attention(zoo.build("sranet-mobilefacenet", width=WIDTH))
    explanation = model.explain(faces[:2])
    sizes = [28] * 5 + [14] * 7 + [7] * 3  # bottleneck stages at 28x28, 14x14, 7x7
    assert len(explanation.maps) == 3 * len(sizes)
    for i, size in enumerate(sizes):
        before, after = (explanation.maps[f"channel_mean/block{i}/{when}"] for when in ("before", "after"))
        assert before.shape == after.shape == (2, size, size) and not torch.equal(before, after)
        row = explanation.maps[f"spatial_attention/block{i}"]
        assert row.shape == (2, (size + 1) // 2, (size + 1) // 2)
        assert torch.allclose(row.sum(dim=(1, 2)), torch.ones(2), atol=1e-5)
        assert explanation.values[f"channel_attention/block{i}"].shape[0] == 2
        assert (f"spatial_attention_matrix/block{i}" in explanation.values) == (size < 28)
    assert explanation.values["spatial_attention_matrix/block14"].shape == (2, 49, 16)


def test_training_reaches_theta_phi_rho_once_the_attention_bn_moves(faces):
    torch.manual_seed(0)
    model = zoo.build("sranet-ir18", width=WIDTH).train()
    optimiser = torch.optim.SGD(model.parameters(), lr=0.1)
    projections = [(m, name) for kind in (SelfChannelAttention, SelfSpatialAttention)
                   for m in attention_modules(model, kind) for name in ("theta", "phi", "rho")]

    push_apart(model, faces[:4])
    for module, name in projections:  # zero-init: the attention term is cut off in the first step
        assert torch.count_nonzero(getattr(module, name).weight.grad) == 0
    bn_grads = [m.bn.weight.grad for m, _ in projections[::3]]
    assert all(torch.isfinite(g).all() and g.abs().sum() > 0 for g in bn_grads)
    optimiser.step()
    optimiser.zero_grad()
    push_apart(model, faces)
    for module, name in projections:
        grad = getattr(module, name).weight.grad
        assert torch.isfinite(grad).all() and grad.abs().sum() > 0, f"{type(module).__name__}.{name}"
    explanation = model.explain(faces[:2])
    before, after = (explanation.maps[f"channel_mean/block7/{when}"] for when in ("before", "after"))
    assert not torch.equal(before, after)


def test_explain_maps_and_query(faces):
    torch.manual_seed(0)
    model = zoo.build("sranet-ir18", width=WIDTH)
    explanation = model.explain(faces[:2])
    sizes = [56, 56, 28, 28, 14, 14, 7, 7]
    assert len(explanation.maps) == 3 * len(sizes)
    for i, size in enumerate(sizes):
        for when in ("before", "after"):
            feature_mean = explanation.maps[f"channel_mean/block{i}/{when}"]
            assert feature_mean.shape == (2, size, size) and torch.isfinite(feature_mean).all()
        row = explanation.maps[f"spatial_attention/block{i}"]
        assert row.shape == (2, (size + 1) // 2, (size + 1) // 2)
        assert row.min() >= 0 and row.max() <= 1
    matrix = explanation.values["spatial_attention_matrix/block7"]  # 7x7 queries over a 4x4 key grid
    centre = explanation.maps["spatial_attention/block7"]
    assert torch.equal(centre, matrix[:, 3 * 7 + 3].view(2, 4, 4))
    corner = model.explain(faces[:2], query=(111, 0)).maps["spatial_attention/block7"]
    assert torch.equal(corner, matrix[:, 6 * 7 + 0].view(2, 4, 4))
    with pytest.raises(ValueError, match="outside"):
        model.explain(faces[:1], query=(112, 0))


@pytest.mark.parametrize("channel, spatial", [(False, False), (True, False), (False, True)])
def test_ablation_rows_build_only_their_attention(channel, spatial, faces):
    model = zoo.build("sranet-ir18", width=WIDTH, channel_attention=channel, spatial_attention=spatial)
    assert len(attention_modules(model, SelfChannelAttention)) == (8 if channel else 0)
    assert len(attention_modules(model, SelfSpatialAttention)) == (8 if spatial else 0)
    explanation = model.explain(faces[:2])
    assert any(k.startswith("channel_attention/") for k in explanation.values) == channel
    assert any(k.startswith("spatial_attention/") for k in explanation.maps) == spatial
    if not (channel or spatial):
        assert model.parameter_count() == zoo.build("ir18", width=WIDTH).parameter_count()


def test_bad_options_and_backbones_are_refused():
    with pytest.raises(ValueError, match="variant must be one of"):
        zoo.build("sranet-ir18", width=WIDTH, variant="pooled")
    with pytest.raises(ValueError, match="pool_size must be a positive integer"):
        zoo.build("sranet-ir18", width=WIDTH, pool_size=0)
    with pytest.raises(ValueError, match="does not support backbone 'ir200'"):
        zoo.build(zoo.ModelConfig("sranet", "ir200"))


def test_checkpoint_round_trip_is_bit_exact(faces, tmp_path):
    torch.manual_seed(0)
    model = zoo.build("sranet-ir18", width=WIDTH, variant="max").train()
    optimiser = torch.optim.SGD(model.parameters(), lr=0.1)
    push_apart(model, faces[:4])
    optimiser.step()  # attention BN weights leave zero, so the round trip covers live attention
    model.eval()
    loaded = zoo.load(zoo.save(model, tmp_path / "sranet"))
    assert loaded.config == model.config and loaded.options["variant"] == "max"
    state, loaded_state = model.state_dict(), loaded.state_dict()
    assert state.keys() == loaded_state.keys()
    assert all(torch.equal(state[k], loaded_state[k]) for k in state)
    assert torch.equal(model.embed(faces[:3]), loaded.embed(faces[:3]))


# The formulation SRANet had before it was made fast (channel-first products, the whole HW x HW/4
# spatial matrix at once, each 1x1 conv on its own), kept here as the reference the fast one must equal.
def reference_channel_attention(module, x):
    n, c, h, w = x.shape
    theta = reduce_spatial(module.theta(x), module.variant, module.pool_size).flatten(2)
    phi = reduce_spatial(module.phi(x), module.variant, module.pool_size).flatten(2)
    attention = torch.softmax(theta @ phi.transpose(1, 2), dim=-1)
    refined = attention @ module.rho(x).flatten(2)
    return x + module.bn(refined.view(n, c, h, w)), attention


def reference_spatial_attention(module, x):
    n, c, h, w = x.shape
    keys = reduce_spatial(module.theta(x), module.variant, module.pool_size)
    queries = module.phi(x).flatten(2)
    attention = torch.softmax(queries.transpose(1, 2) @ keys.flatten(2), dim=-1)
    values = reduce_spatial(module.rho(x), module.variant, module.pool_size).flatten(2)
    refined = values @ attention.transpose(1, 2)
    return x + module.bn(refined.view(n, c, h, w)), attention.view(n, h, w, *keys.shape[-2:])


def reference_forward(model, images, kept=None):
    """The model's forward with the reference attentions; `kept` collects (A_C, A_S) per block."""
    def refine(features):
        attention, channel_attention, spatial_attention = model.attention[len(trace)], None, None
        if attention.channel is not None:
            features, channel_attention = reference_channel_attention(attention.channel, features)
        if attention.spatial is not None:
            features, spatial_attention = reference_spatial_attention(attention.spatial, features)
        trace.append((channel_attention, spatial_attention))
        return features

    trace = [] if kept is None else kept
    x = model.backbone.begin(images)
    for block in model.backbone.blocks:
        x = block(x, refine=refine) if model.options["placement"] == "in_block" else refine(block(x))
    return model.backbone.head(x)


@pytest.mark.fast
def test_attend_by_blocks_equals_the_whole_matrix(monkeypatch):
    torch.manual_seed(0)
    queries, keys, values = torch.randn(3, 50, 4), torch.randn(3, 13, 4) * 3, torch.randn(3, 13, 6)
    whole, attention = attend(queries, keys, values, keep_attention=True)
    assert torch.allclose(attention.sum(dim=-1), torch.ones(3, 50))
    for block in (13 * 7, 50 * 13, 50 * 13 * 2, 50 * 13 * 3, 1):  # rows of a face, 1, 2, all 3 faces, one row
        monkeypatch.setattr(sranet, "ATTENTION_BLOCK", block)
        blocked, none = attend(queries, keys, values, keep_attention=False)
        assert none is None and torch.allclose(blocked, whole, atol=1e-6)


@pytest.mark.parametrize("name, options", [
    ("sranet-ir18", {}), ("sranet-ir18", {"variant": "naive", "placement": "after_block"}),
    ("sranet-ir18", {"variant": "avg", "spatial_attention": False}), ("sranet-ir18", {"variant": "max"}),
    ("sranet-mobilefacenet", {})])
def test_fast_formulation_equals_the_reference(name, options, faces):
    """Same outputs in eval mode, whatever memory format the faces arrive in; explain's A_C and A_S
    equal the reference's; same outputs and gradients in train mode (in float64: batch-statistics
    BatchNorm on 4 faces amplifies float32 rounding far beyond itself)."""
    torch.manual_seed(0)
    model = live_attention(zoo.build(name, width=WIDTH, **options))
    batch = faces[:4]
    kept = []
    with torch.no_grad():
        expected = reference_forward(model, batch, kept)
        tolerance = 1e-5 * expected.abs().max().item()
        assert torch.allclose(model(batch), expected, atol=tolerance)
        assert torch.allclose(model(batch.contiguous(memory_format=torch.channels_last)), expected, atol=tolerance)
    explanation = model.explain(batch)
    # Probabilities: the projections run as matrix products here and as 1x1 convs in the reference,
    # and the live attention's large logits turn their float rounding into up to ~6e-5 after 8 blocks.
    for i, (channel_attention, spatial_attention) in enumerate(kept):
        if channel_attention is not None:
            assert torch.allclose(explanation.values[f"channel_attention/block{i}"], channel_attention, atol=2e-4)
        if spatial_attention is not None and f"spatial_attention_matrix/block{i}" in explanation.values:
            assert torch.allclose(explanation.values[f"spatial_attention_matrix/block{i}"],
                                  spatial_attention.flatten(3).flatten(1, 2), atol=2e-4)
    model.double().train()
    outputs, gradients = [], []
    for forward in (model, lambda images: reference_forward(model, images)):
        model.zero_grad()
        outputs.append(forward(batch.double()))
        embeddings = torch.nn.functional.normalize(outputs[-1])
        (embeddings @ embeddings.T).triu(diagonal=1).pow(2).mean().backward()
        gradients.append({k: p.grad.clone() for k, p in model.named_parameters() if p.grad is not None})
    assert torch.allclose(*outputs, atol=1e-10)
    fast, reference = gradients
    assert fast.keys() == reference.keys() and any(k.startswith("attention.") for k in fast)
    # Relative to each tensor's own scale, with a floor at the model's: a gradient that is zero in
    # exact arithmetic (a value bias that train-mode BatchNorm removes) is float64 rounding on both.
    floor = 1e-10 * max(grad.abs().max().item() for grad in reference.values())
    for key, grad in reference.items():
        assert torch.allclose(fast[key], grad, atol=1e-9 * grad.abs().max().item() + floor), key


@pytest.mark.parametrize("name, options", [
    ("sranet-ir18", {}), ("sranet-ir18", {"variant": "naive", "placement": "after_block"}),
    ("sranet-ir18", {"variant": "avg", "spatial_attention": False}),
    ("sranet-ir18", {"variant": "max", "channel_attention": False}), ("sranet-mobilefacenet", {})])
def test_graph_form_equals_the_reference_in_eval_mode(name, options, faces):
    """What ONNX exports (BN folded into A_C and the pooled values, products channel-first) computes
    the reference, with attention BNs whose running statistics are far from (0, 1). In float64: with
    such statistics the naive variant's float32 rounding alone (any formulation) reaches 5e-5 of the
    output's scale."""
    torch.manual_seed(0)
    model = live_attention(zoo.build(name, width=WIDTH, **options))
    generator = torch.Generator().manual_seed(6)
    with torch.no_grad():
        for module in attention_modules(model, SelfChannelAttention) + attention_modules(model, SelfSpatialAttention):
            module.bn.running_mean.copy_(torch.randn(module.bn.running_mean.shape, generator=generator))
            module.bn.running_var.copy_(torch.rand(module.bn.running_var.shape, generator=generator) * 3 + 0.2)
        model.double()
        expected = reference_forward(model, faces[:4].double())
        graph = graph_form(model)
        assert sum(isinstance(m, GraphSelfResidualAttention) for m in graph.modules()) == len(model.attention)
        assert graph.state_dict().keys() == model.state_dict().keys()
        assert torch.allclose(graph(faces[:4].double()), expected, atol=1e-10 * expected.abs().max().item())
        with pytest.raises(ValueError, match="keeps no attention"):
            graph.attention[0](torch.zeros(1, model.backbone.block_channels[0], 8, 8).double(), keep_attention=True)


def test_embedded_checkpoint_loads_strictly_and_embeds_as_the_reference(faces):
    model = zoo.load("sranet-mobilefacenet.fss-ft").eval()  # zoo.load loads the state dict strictly
    with torch.no_grad():
        expected = torch.nn.functional.normalize(reference_forward(model, faces))
    assert torch.allclose(model.embed(faces), expected, atol=1e-5)
