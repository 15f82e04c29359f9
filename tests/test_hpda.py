"""HPDA: pyramid masks, the divergence loss on each scale's own grid, the diverse-learning ablation,
every fusion/head option on real faces, exact starts from a pretrained network, errors, checkpoints."""
import pytest
import torch
import torch.nn.functional as F

import zoo
from zoo.methods.hpda import LANet, divergence_loss, divergence_per_face
from faces import lfw_faces, pretrained_like

WIDTH = 0.25
SMALL = {"width": WIDTH, "hbp_dim": 16}


@pytest.fixture(scope="module")
def faces():
    return lfw_faces(8, seed=4)


def push_apart(model, batch):
    """A loss that separates the embeddings of different people (needs > 2 faces: see test_sranet)."""
    embeddings = F.normalize(model(batch))
    return (embeddings @ embeddings.T).triu(diagonal=1).pow(2).mean()


@pytest.mark.parametrize("scales, branches", [(3, 3), (4, 2)])
def test_every_mask_is_in_unit_range_at_the_layer_size(scales, branches, faces):
    torch.manual_seed(0)
    model = zoo.build("hpda-ir34", scales=scales, branches=branches, **SMALL)
    explanation = model.explain(faces[:2])
    assert explanation.values["tapped_blocks"].tolist() == model.backbone.last_stage_blocks[-3:] == [13, 14, 15]
    assert len(explanation.maps) == scales * branches * 3
    for layer in range(3):
        for s in range(scales):
            for b in range(branches):
                mask = explanation.maps[f"mask/layer{layer}/scale{s}/branch{b}"]
                assert mask.shape == (2, 7, 7)
                assert mask.min() >= 0 and mask.max() <= 1
        divergence = explanation.values[f"divergence/layer{layer}"]
        assert divergence.shape == (2,) and ((divergence > 0) & (divergence <= 2)).all()
    if scales == 4:  # the coarsest scale pools 7x7 to 1x1: its masks are constant over the face
        coarsest = explanation.maps["mask/layer2/scale3/branch1"]
        assert torch.allclose(coarsest, coarsest[:, :1, :1].expand_as(coarsest))


def test_masks_keep_their_own_grid_per_scale(faces):
    torch.manual_seed(0)
    model = zoo.build("hpda-mobilefacenet", scales=4, **SMALL).eval()
    with torch.no_grad():
        _, masks = model._embed_with_masks(faces[:2])
    assert len(masks) == 3
    assert [tuple(m.shape) for m in masks[0]] == [(2, 3, 7, 7), (2, 3, 5, 5), (2, 3, 3, 3), (2, 3, 1, 1)]
    per_face = torch.stack([divergence_per_face(layer, 1.0) for layer in masks]).mean(dim=0)
    assert torch.allclose(model.mask_divergence(faces[:2]), per_face)


def test_divergence_loss_on_hand_made_masks():
    blob = torch.zeros(7, 7)
    blob[1:4, 1:4] = 1.0
    other = torch.zeros(7, 7)
    other[4:7, 3:6] = 1.0  # disjoint from blob
    identical = torch.stack([blob, blob, blob])[None, None]  # (N=1, S=1, B=3, 7, 7)
    distinct = torch.stack([blob, other, 1 - blob])[None, None]
    # identical: d = 0, every one of the 6 ordered pairs at the margin, times 2/(S B (B-1)) = 1/3
    assert divergence_loss(identical, margin=1.0).item() == pytest.approx(2.0)
    # distinct: d(blob, other) = 18/49, d(blob, 1 - blob) = 49/49, d(other, 1 - blob) = 31/49;
    # hinges 31/49 + 0 + 18/49 = 1 per unordered pair set, twice over ordered pairs, / 3
    assert divergence_loss(distinct, margin=1.0).item() == pytest.approx(2 / 3)
    assert divergence_loss(identical, margin=0.25).item() == pytest.approx(0.5)
    # S = 1, B = 2, masks 0.1 apart on every pixel: d = 0.01; two ordered pairs, 2/(S B (B-1)) = 1
    near = torch.stack([torch.full((7, 7), 0.5), torch.full((7, 7), 0.6)])[None, None]
    assert divergence_loss(near, margin=1.0).item() == pytest.approx(2 * (1 - 0.01))
    # the mean over faces, and the same normalisation over scales
    batch = torch.cat([identical, distinct])  # (2, 1, 3, 7, 7)
    assert divergence_loss(batch, margin=1.0).item() == pytest.approx((2 + 2 / 3) / 2)
    assert divergence_loss(torch.cat([identical, distinct], dim=1), margin=1.0).item() == pytest.approx(4 / 3)
    assert divergence_loss(torch.rand(2, 3, 1, 7, 7), margin=1.0).item() == 0.0  # B = 1: no pairs
    # B = 3, t = 1: pairwise squared differences at a pixel sum to at most 2, so L_D >= 2/3,
    # reached by masks that partition the pixels (here three bands of a 3x3 grid)
    bands = torch.zeros(1, 3, 3, 3)
    for b in range(3):
        bands[0, b, b] = 1.0
    assert divergence_loss([bands], margin=1.0).item() == pytest.approx(2 / 3)


def test_divergence_is_computed_on_each_scales_own_grid_with_mean_or_sum_over_pixels():
    """S = 3 scales at 7x7, 5x5, 3x3, B = 2, t = 1:
    7x7: 0.5 vs 0.6 everywhere (mean d = 0.01, sum d = 0.49); 5x5: a checkerboard and its
    complement (mean d = 1, sum d = 25); 3x3: identical (d = 0). 2/(S B (B-1)) = 1/3."""
    fine = torch.stack([torch.full((7, 7), 0.5), torch.full((7, 7), 0.6)])[None]
    board = (torch.arange(5)[:, None] + torch.arange(5)[None, :]) % 2
    middle = torch.stack([board, 1 - board]).float()[None]
    coarse = torch.full((1, 2, 3, 3), 0.3)
    masks = [fine, middle, coarse]
    assert divergence_loss(masks, margin=1.0).item() == pytest.approx((2 * 0.99 + 0 + 2 * 1) / 3)
    assert divergence_loss(masks, margin=1.0, reduction="sum").item() == pytest.approx((2 * 0.51 + 0 + 2 * 1) / 3)
    # the same masks upsampled to 7x7 would give other distances: the scale's own grid counts
    upsampled = [torch.nn.functional.interpolate(m, size=(7, 7), mode="bilinear", align_corners=False) for m in masks]
    assert divergence_loss(upsampled, margin=1.0).item() != pytest.approx(divergence_loss(masks, margin=1.0).item())
    with pytest.raises(ValueError, match="reduction must be one of"):
        divergence_loss(masks, margin=1.0, reduction="max")


def test_sgd_on_the_divergence_loss_alone_makes_it_fall_towards_its_floor(faces):
    torch.manual_seed(0)
    model = zoo.build("hpda-mobilefacenet", **SMALL).train()
    # masks start nearly identical, where the mean-over-pixels hinge has a small gradient: a large step size
    optimiser = torch.optim.SGD([p for m in model.modules() if isinstance(m, LANet) for p in m.parameters()], lr=30.0)
    losses = []
    for _ in range(6):
        model(faces)
        loss = model.auxiliary_losses()["divergence"]
        losses.append(loss.item())
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    assert losses[0] > 1.9, "untrained branches should start with near-identical masks (L_D near 2t)"
    assert all(b < a for a, b in zip(losses, losses[1:])) and losses[-1] < 0.6 * losses[0], losses
    assert min(losses) >= 2 / 3 - 1e-6  # the B = 3, t = 1 floor


def test_diverse_learning_ablation_changes_the_masks(faces):
    """Table 1's "w/o diverse learning": same start, same recognition loss, with and without L_D."""
    divergence = {}
    for diverse in (True, False):
        torch.manual_seed(0)
        model = zoo.build("hpda-mobilefacenet", diverse=diverse, **SMALL).train()
        start = model.mask_divergence(faces).mean().item()
        optimiser = torch.optim.SGD(model.parameters(), lr=1.0, momentum=0.9)
        for _ in range(5):
            loss = push_apart(model, faces) + sum(model.auxiliary_losses().values(), torch.tensor(0.0))
            assert ("divergence" in model.auxiliary_losses()) == diverse
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
        divergence[diverse] = (start, model.mask_divergence(faces).mean().item())
    (start_on, end_on), (start_off, end_off) = divergence[True], divergence[False]
    assert start_on == start_off > 1.9  # same initial masks, the divergence term far from zero
    assert start_on - end_on > 0.02, divergence  # diverse learning pulls the masks apart
    assert abs(start_off - end_off) < 0.1 * (start_on - end_on), divergence  # without it they stay together


@pytest.mark.parametrize("options", [
    {"fusion": "hbp"}, {"fusion": "concat"}, {"fusion": "add"}, {"global_head": "gap"},
    {"divergence_reduction": "sum"}, {"heads": "global"}, {"heads": "local"}, {"hierarchical": False},
    {"diverse": False, "branches": 1}])
def test_forward_backward_on_real_faces_for_every_option(options, faces):
    torch.manual_seed(0)
    model = zoo.build("hpda-mobilefacenet", **SMALL, **options).train()
    embeddings = model(faces)
    assert embeddings.shape == (8, 512)
    losses = model.auxiliary_losses()
    local = options.get("heads") != "global"
    assert ("divergence" in losses) == (local and options.get("diverse", True))
    loss = push_apart(model, faces) + sum(losses.values(), torch.tensor(0.0))
    model.zero_grad()
    loss.backward()
    for name, parameter in model.named_parameters():
        assert parameter.grad is not None, f"{name} is unused"
        assert torch.isfinite(parameter.grad).all(), name
    names = [name for name, _ in model.named_parameters()]
    parts = {name.split(".")[0] for name in names}
    has_global = options.get("heads") != "local"
    gap = has_global and options.get("global_head") == "gap"
    assert ("global_fc" in parts) == gap
    # the backbone's embedding head (GDC + FC) serves as the global head unless "gap" or local-only
    assert any(n.startswith("backbone.head.1.fc.") for n in names) == (has_global and not gap)
    assert any(n.startswith("backbone.head.0.") for n in names) == has_global  # MobileFaceNet's 1x1 conv
    assert not any(".bn." in n and n.startswith("backbone.head") for n in names)  # HPDA's own BN ends it
    assert all((part in parts) == local for part in ("pda", "fusion", "local_fc"))
    assert ("joint_fc" in parts) == (options.get("heads", "both") == "both")
    model.eval()
    with torch.no_grad():
        model(faces[:2])
    assert model.auxiliary_losses() == {}  # an eval forward leaves no stale loss behind
    layers = 1 if options.get("hierarchical") is False else 3
    expected_masks = 3 * options.get("branches", 3) * layers if local else 0
    assert len(model.explain(faces[:2]).maps) == expected_masks


# a y1-like MobileFaceNet: 128-d embedding, its own BN epsilons (one for the head's BN1d alone)
Y1 = {"embedding_dim": 128, "bn_eps": {"*": 1e-3, "backbone.head.1.bn": 2e-5}}


@pytest.mark.parametrize("heads", ["both", "global"])
def test_init_from_starts_exactly_at_the_pretrained_embedding(heads, faces):
    plain = pretrained_like("mobilefacenet", faces, **Y1)
    torch.manual_seed(2)
    model = zoo.build("hpda-mobilefacenet", embedding_dim=128, heads=heads, **SMALL)
    zoo.model.inherit_bn_eps(model, plain.config.bn_eps)  # what the engine does before init_from
    untrained = model.init_from(plain)
    assert model.bn.eps == 2e-5 and model.config.bn_eps["bn"] == 2e-5  # the head BN's epsilon, kept in the config
    for key in ("weight", "bias", "running_mean", "running_var"):
        assert torch.equal(getattr(model.bn, key), getattr(plain.backbone.head[1].bn, key))
    assert torch.equal(model.backbone.head[0][0].weight, plain.backbone.head[0][0].weight)  # 1x1 conv 128->512 kept
    if heads == "both":
        assert torch.equal(model.joint_fc.weight, torch.cat([torch.eye(128), torch.zeros(128, 128)], dim=1))
        assert untrained and all(n.split(".")[0] in ("pda", "fusion", "local_fc") for n in untrained)
    else:
        assert untrained == []
    assert torch.allclose(model.embed(faces), plain.embed(faces), atol=1e-5)
    model.train(), plain.train()
    with torch.no_grad():  # the same in training mode (batch statistics in every BN)
        assert torch.allclose(model(faces), plain(faces), atol=1e-5)


def test_after_init_from_the_local_branch_joins_after_one_step(faces):
    plain = pretrained_like("mobilefacenet", faces, embedding_dim=128)
    model = zoo.build("hpda-mobilefacenet", embedding_dim=128, **SMALL)
    model.init_from(plain)
    model.train()
    optimiser = torch.optim.SGD(model.parameters(), lr=0.1)
    loss = push_apart(model, faces) + model.auxiliary_losses()["divergence"]
    optimiser.zero_grad()
    loss.backward()
    assert torch.count_nonzero(model.local_fc.weight.grad) == 0  # joint FC's local half is zero at first
    assert model.joint_fc.weight.grad[:, 128:].abs().sum() > 0
    assert all(p.grad.abs().sum() > 0 for m in model.modules() if isinstance(m, LANet) for p in m.parameters())
    optimiser.step()
    optimiser.zero_grad()
    push_apart(model, faces).backward()
    assert model.local_fc.weight.grad.abs().sum() > 0


def test_init_from_with_the_papers_gap_head(faces):
    plain = pretrained_like("mobilefacenet", faces, embedding_dim=128)
    model = zoo.build("hpda-mobilefacenet", embedding_dim=128, global_head="gap", **SMALL)
    untrained = model.init_from(plain)
    assert torch.equal(model.backbone.head[0][0].weight, plain.backbone.head[0][0].weight)
    assert model.global_fc.in_features == model.backbone.head[0][0].out_channels == 128  # 512 at width 1
    assert "global_fc.weight" in untrained and "joint_fc.weight" in untrained and "bn.running_var" in untrained
    assert not any(n.startswith("backbone.") for n in untrained)
    with pytest.raises(ValueError, match="cannot start from mobilefacenet"):
        zoo.build("hpda-mobilefacenet", **SMALL).init_from(plain)  # 512-d model from a 128-d one


def test_fusion_widths_follow_the_paper():
    models = {kind: zoo.build("hpda-ir34", fusion=kind, **SMALL) for kind in ("hbp", "concat", "add")}
    assert models["hbp"].fusion.out_features == 3 * 16  # three cross-layer products
    assert models["concat"].fusion.out_features == 3 * 16
    assert models["add"].fusion.out_features == 16
    single = zoo.build("hpda-ir34", hierarchical=False, **SMALL)
    assert single.tapped_blocks == [15] and single.fusion.out_features == 16  # U'x o V'x on the last block


@pytest.mark.parametrize("option, value, message", [
    ("scales", 0, "scales must be a positive integer"), ("branches", 0, "branches must be a positive integer"),
    ("branches", -1, "branches must be a positive integer"), ("margin", -1.0, "margin must be a non-negative"),
    ("fusion", "sum", "fusion must be one of"), ("heads", "none", "heads must be one of"),
    ("diverse", 1, "diverse must be True or False"), ("global_head", "fc", "global_head must be one of"),
    ("divergence_reduction", "max", "divergence_reduction must be one of")])
def test_bad_options_are_refused_clearly(option, value, message):
    with pytest.raises(ValueError, match=message):
        zoo.build("hpda-ir34", **{**SMALL, option: value})


def test_backbones_without_three_last_stage_blocks_or_with_a_head_are_refused():
    supported = "supported: ir34, ir50, ir100, mobilefacenet"
    with pytest.raises(ValueError, match=f"does not support backbone 'ir18'; {supported}"):
        zoo.build("hpda-ir18", width=WIDTH)
    with pytest.raises(ValueError, match="replaces the backbone head"):
        zoo.build("hpda-ir34", head="gdc", global_head="gap", **SMALL)
    with pytest.raises(ValueError, match="replaces the backbone head"):
        zoo.build("hpda-ir34", head="gdc", heads="local", **SMALL)
    gdc = zoo.build("hpda-ir34", head="gdc", **SMALL)  # the backbone head's kind, used as the global head
    assert isinstance(gdc.backbone.head.reduce[0], torch.nn.Conv2d)


def test_checkpoint_round_trip_is_bit_exact(faces, tmp_path):
    torch.manual_seed(0)
    model = zoo.build("hpda-ir34", scales=2, fusion="concat", **SMALL).train()
    optimiser = torch.optim.SGD(model.parameters(), lr=0.1)
    (push_apart(model, faces[:4]) + model.auxiliary_losses()["divergence"]).backward()
    optimiser.step()
    model.eval()
    loaded = zoo.load(zoo.save(model, tmp_path / "hpda"))
    assert loaded.config == model.config and loaded.options["fusion"] == "concat"
    state, loaded_state = model.state_dict(), loaded.state_dict()
    assert state.keys() == loaded_state.keys()
    assert all(torch.equal(state[k], loaded_state[k]) for k in state)
    assert torch.equal(model.embed(faces[:3]), loaded.embed(faces[:3]))
    original, reloaded = model.explain(faces[:2]), loaded.explain(faces[:2])
    assert all(torch.equal(original.maps[k], reloaded.maps[k]) for k in original.maps)
