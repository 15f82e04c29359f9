"""HPDA: pyramid masks, the divergence loss, every fusion/head option on real faces, errors, checkpoints."""
import pytest
import torch
import torch.nn.functional as F

import zoo
from zoo.methods.hpda import LANet, divergence_loss
from faces import lfw_faces

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
    if scales == 4:  # the coarsest scale pools 7x7 to 1x1: its masks are constant over the face
        coarsest = explanation.maps["mask/layer2/scale3/branch1"]
        assert torch.allclose(coarsest, coarsest[:, :1, :1].expand_as(coarsest))


def test_divergence_loss_on_hand_made_masks():
    blob = torch.zeros(7, 7)
    blob[1:4, 1:4] = 1.0
    other = torch.zeros(7, 7)
    other[4:7, 3:6] = 1.0  # disjoint: d = 18 pixels at distance 1, far beyond t = 1
    identical = torch.stack([blob, blob, blob])[None, None]  # (N=1, S=1, B=3, 7, 7)
    distinct = torch.stack([blob, other, 1 - blob])[None, None]
    assert divergence_loss(identical, margin=1.0).item() == pytest.approx(2.0)  # every pair at the margin: 2t
    assert divergence_loss(distinct, margin=1.0).item() == 0.0
    assert divergence_loss(identical, margin=0.25).item() == pytest.approx(0.5)
    # S = 1, B = 2, masks 0.1 apart on all 49 pixels: d = 0.49; two ordered pairs, 2/(S B (B-1)) = 1
    near = torch.stack([torch.full((7, 7), 0.5), torch.full((7, 7), 0.6)])[None, None]
    assert divergence_loss(near, margin=1.0).item() == pytest.approx(2 * (1 - 0.49))
    # the mean over faces, and the same normalisation over scales
    batch = torch.cat([identical, distinct])  # (2, 1, 3, 7, 7)
    assert divergence_loss(batch, margin=1.0).item() == pytest.approx(1.0)
    assert divergence_loss(torch.cat([identical, distinct], dim=1), margin=1.0).item() == pytest.approx(1.0)
    assert divergence_loss(torch.rand(2, 3, 1, 7, 7), margin=1.0).item() == 0.0  # B = 1: no pairs


def test_sgd_on_the_divergence_loss_alone_makes_it_fall(faces):
    torch.manual_seed(0)
    model = zoo.build("hpda-mobilefacenet", **SMALL).train()
    optimiser = torch.optim.SGD([p for m in model.modules() if isinstance(m, LANet) for p in m.parameters()], lr=1.0)
    losses = []
    for _ in range(5):
        model(faces)
        loss = model.auxiliary_losses()["divergence"]
        losses.append(loss.item())
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    assert losses[0] > 0.1, "untrained branches should start with overlapping masks"
    assert all(b < a for a, b in zip(losses, losses[1:])) and losses[-1] < 0.5 * losses[0], losses


@pytest.mark.parametrize("options", [
    {"fusion": "hbp"}, {"fusion": "concat"}, {"fusion": "add"},
    {"heads": "global"}, {"heads": "local"}, {"hierarchical": False}, {"diverse": False, "branches": 1}])
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
    parts = {name.split(".")[0] for name, _ in model.named_parameters()}
    assert ("global_fc" in parts) == (options.get("heads") != "local")
    assert all((part in parts) == local for part in ("pda", "fusion", "local_fc"))
    assert ("joint_fc" in parts) == ("heads" not in options)
    model.eval()
    with torch.no_grad():
        model(faces[:2])
    assert model.auxiliary_losses() == {}  # an eval forward leaves no stale loss behind
    layers = 1 if options.get("hierarchical") is False else 3
    expected_masks = 3 * options.get("branches", 3) * layers if local else 0
    assert len(model.explain(faces[:2]).maps) == expected_masks


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
    ("diverse", 1, "diverse must be True or False")])
def test_bad_options_are_refused_clearly(option, value, message):
    with pytest.raises(ValueError, match=message):
        zoo.build("hpda-ir34", **{**SMALL, option: value})


def test_backbones_without_three_last_stage_blocks_or_with_a_head_are_refused():
    supported = "supported: ir34, ir50, ir100, mobilefacenet"
    with pytest.raises(ValueError, match=f"does not support backbone 'ir18'; {supported}"):
        zoo.build("hpda-ir18", width=WIDTH)
    with pytest.raises(ValueError, match="replaces the backbone head"):
        zoo.build("hpda-ir34", head="gdc", **SMALL)


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
