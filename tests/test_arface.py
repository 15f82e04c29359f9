"""ARFace: the 31 modes, the mask M, input and intermediate masking, and the REINFORCE policy."""
import pytest
import torch

import zoo
from zoo.methods.arface import MODES, PATCH_NAMES, ReinforceBaseline, patch_boxes, resize_mask
from faces import lfw_faces, pretrained_like

NOSE, RIGHT_MOUTH = PATCH_NAMES.index("nose"), PATCH_NAMES.index("right_mouth")


@pytest.fixture(scope="module")
def faces():
    return lfw_faces(8, seed=3)


def mode_index(dropped):
    """Index of the mode that drops exactly the patches in `dropped`."""
    keep = torch.tensor([p not in dropped for p in range(len(PATCH_NAMES))])
    return int((MODES == keep).all(dim=1).nonzero())


def force_mode(model, mode):
    """Make the policy (almost surely) choose `mode` whatever the image."""
    with torch.no_grad():
        model.attention.classifier.weight.zero_()
        model.attention.classifier.bias.fill_(-20.0)
        model.attention.classifier.bias[mode] = 20.0


def test_31_distinct_modes_none_all_dropped():
    assert MODES.shape == (31, 5) and MODES.dtype == torch.bool
    assert MODES.any(dim=1).all()
    assert len({tuple(m.tolist()) for m in MODES}) == 31


def test_options_resolve_num_layers_and_validate():
    assert zoo.build("arface-mobilefacenet", width=0.25).options["num_layers"] == 3
    assert zoo.build("arface-ir50", width=0.25).options["num_layers"] == 9
    assert zoo.build("arface-ir18", width=0.25).options["num_layers"] == 3  # ResNet-50's 9/24 of 8 blocks
    with pytest.raises(ValueError, match="num_layers"):
        zoo.build("arface-ir18", width=0.25, num_layers=9)
    with pytest.raises(ValueError, match="does not support"):
        zoo.build(zoo.ModelConfig("arface", "ir200"))


def test_mask_is_zero_exactly_inside_dropped_boxes():
    model = zoo.build("arface-mobilefacenet", width=0.25)
    # Hand-computed: nose (56.03, 71.74) and right mouth corner (70.73, 92.20), radius 30, clipped.
    assert patch_boxes(30)[NOSE] == (26, 42, 86, 102)
    assert patch_boxes(30)[RIGHT_MOUTH] == (41, 62, 101, 112)
    mask = model.mode_mask(torch.tensor([mode_index({NOSE, RIGHT_MOUTH})]))
    expected = torch.ones(112, 112)
    expected[42:102, 26:86] = 0
    expected[62:112, 41:101] = 0
    assert mask.shape == (1, 1, 112, 112)
    assert torch.equal(mask[0, 0], expected)
    assert torch.equal(model.mode_mask(torch.tensor([mode_index(set())]))[0, 0], torch.ones(112, 112))


def test_explain_keep_probabilities_are_marginals(faces):
    torch.manual_seed(0)
    model = zoo.build("arface-mobilefacenet", width=0.25).eval()
    explanation = model.explain(faces)
    probability = explanation.values["mode_probability"]
    keep = explanation.values["keep_probability"]
    assert probability.shape == (8, 31) and torch.allclose(probability.sum(dim=1), torch.ones(8))
    expected = torch.stack([probability[:, MODES[:, p]].sum(dim=1) for p in range(5)], dim=1)
    assert keep.shape == (8, 5) and torch.allclose(keep, expected)
    assert ((keep >= 0) & (keep <= 1)).all()
    modes = probability.argmax(dim=1)
    assert torch.equal(explanation.values["kept"], MODES[modes])
    assert torch.equal(explanation.maps["mask"], model.mode_mask(modes)[:, 0])
    assert explanation.maps["mask"].shape == (8, 112, 112)


def test_eval_is_argmax_and_training_samples(faces):
    torch.manual_seed(0)
    model = zoo.build("arface-mobilefacenet", width=0.25).eval()
    first = model(faces)
    modes = model.last_modes.clone()
    assert torch.equal(model(faces), first)
    assert torch.equal(modes, model.attention(faces).argmax(dim=1))
    assert torch.equal(model.embed(faces), model.embed(faces))
    model.train()
    sampled = []
    for seed in range(5):
        torch.manual_seed(seed)
        model(faces)
        sampled.append(model.last_modes.clone())
    assert len({tuple(m.tolist()) for m in sampled}) > 1


def capture_block_outputs(model):
    """Hooks recording each block's output as the next module sees it (after any mask)."""
    seen, modules = {}, list(model.backbone.blocks)[1:] + [model.backbone.head]
    hooks = [m.register_forward_pre_hook(lambda _m, args, i=i: seen.__setitem__(i, args[0].detach()))
             for i, m in enumerate(modules)]
    return seen, hooks


@pytest.mark.parametrize("name, blocks", [("arface-mobilefacenet", 15), ("arface-ir18", 8)])
def test_intermediate_masks_in_training_only(name, blocks, faces):
    torch.manual_seed(0)
    model = zoo.build(name, width=0.25, num_layers=blocks, layer_mask_prob=1.0)  # mask every block
    mode = mode_index({NOSE})
    force_mode(model, mode)
    mask = model.mode_mask(torch.tensor([mode]))
    seen, hooks = capture_block_outputs(model)
    try:
        model.train()(faces[:2])
        assert model.last_masked_blocks == list(range(blocks))
        assert (model.last_modes == mode).all()
        trained = dict(seen)
        model.eval()(faces[:2])
    finally:
        for hook in hooks:
            hook.remove()
    sizes = set()
    for index, output in trained.items():
        resized = resize_mask(mask, output.shape[-2:])[0, 0]
        sizes.add(resized.shape)
        dropped = resized == 0
        assert dropped.any() and not dropped.all()
        assert (output[:, :, dropped] == 0).all(), f"block {index}"
        assert (seen[index][:, :, dropped] != 0).any(), f"block {index} masked in eval"
    assert len(sizes) == (3 if name == "arface-mobilefacenet" else 4)


def test_block_selection_respects_num_layers(faces):
    model = zoo.build("arface-mobilefacenet", width=0.25).train()
    counts = []
    for seed in range(10):
        torch.manual_seed(seed)
        model(faces[:2])
        counts.append(len(model.last_masked_blocks))
        assert len(set(model.last_masked_blocks)) == len(model.last_masked_blocks)
    assert max(counts) <= 3 and 0 < sum(counts) < 30


@pytest.mark.parametrize("name", ["arface-mobilefacenet", "arface-ir18"])
def test_recognition_gradient_skips_the_attention_net(name, faces):
    torch.manual_seed(0)
    model = zoo.build(name, width=0.25).train()
    images = faces.clone().requires_grad_(True)
    embeddings = model(images)
    assert embeddings.shape == (8, 512) and torch.isfinite(embeddings).all()
    embeddings.pow(2).mean().backward()
    assert all(p.grad is None for p in model.policy_parameters())
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.feature_parameters())
    assert images.grad is not None and (images.grad[model.mode_mask(model.last_modes).expand_as(images) == 0] == 0).all()


def test_reinforce_raises_the_rewarded_modes(faces):
    torch.manual_seed(0)
    model = zoo.build("arface-mobilefacenet", width=0.25).train()
    optimiser = torch.optim.SGD(model.policy_parameters(), lr=0.05, momentum=0.9)
    baseline = ReinforceBaseline(momentum=0.9)
    before = 1 - model.explain(faces).values["keep_probability"][:, NOSE]
    for _ in range(8):
        model(faces)
        reward = (~model.modes[model.last_modes, NOSE]).float()  # 1 when the nose is dropped
        loss = model.reinforce_loss(reward, baseline.update(reward))
        optimiser.zero_grad()
        loss.backward()
        assert all(p.grad is None for p in model.feature_parameters())
        optimiser.step()
    after = 1 - model.explain(faces).values["keep_probability"][:, NOSE]
    assert before.mean() < 0.6 and after.mean() > 0.8 and (after > before).all()


def test_reinforce_loss_and_baseline_arithmetic(faces):
    model = zoo.build("arface-mobilefacenet", width=0.25).train()
    images = faces.clone().requires_grad_(True)
    model(images)
    loss = model.reinforce_loss(0.75, 0.5)
    assert torch.allclose(loss, -0.25 * model.last_log_prob.mean())
    loss.backward()
    assert images.grad is None  # the policy sees detached images
    model.eval()(faces)
    with pytest.raises(RuntimeError, match="training-mode forward"):
        model.reinforce_loss(1.0, 0.0)
    baseline = ReinforceBaseline(momentum=0.9)
    assert baseline.update(0.5) == 0.5
    assert baseline.update(torch.tensor([1.0, 0.0, 1.0, 1.0])) == pytest.approx(0.5)
    assert baseline.value == pytest.approx(0.9 * 0.5 + 0.1 * 0.75)


def test_training_hooks_give_the_trainer_a_reinforce_step(faces):
    """extra_optimizers: the Attention-Net alone, at [arface] policy_lr; extra_losses: the
    policy loss against the baseline kept in the run's state (the first batch's own reward)."""
    torch.manual_seed(0)
    model = zoo.build("arface-mobilefacenet", width=0.25).train()
    settings = {**model.training_settings, "policy_lr": 0.05}
    optimizers = model.extra_optimizers(settings)
    assert list(optimizers) == ["policy"] and optimizers["policy"].defaults["lr"] == 0.05
    assert optimizers["policy"].param_groups[0]["params"] == list(model.policy_parameters())
    model(faces)
    correct, state = torch.tensor([True, False] * 4), {}
    losses, logged = model.extra_losses(correct, state, settings, lambda value: value)
    assert torch.equal(losses["policy"], model.reinforce_loss(correct.float(), 0.5))
    assert state == {"reward_baseline": 0.5} and logged == {"reward_baseline": 0.5}
    losses, _ = model.extra_losses(torch.ones(8, dtype=torch.bool), state, settings, lambda value: value)
    assert torch.equal(losses["policy"], model.reinforce_loss(torch.ones(8), 0.5))
    assert state["reward_baseline"] == pytest.approx(0.99 * 0.5 + 0.01 * 1.0)


def test_checkpoint_round_trip_is_bit_exact(faces, tmp_path):
    torch.manual_seed(0)
    model = zoo.build("arface-mobilefacenet", width=0.25).train()
    model(faces)  # move BatchNorm statistics off their initial values
    model.eval()
    zoo.save(model, tmp_path / "arface")
    assert zoo.read_config(tmp_path / "arface")["architecture"]["options"]["num_layers"] == 3
    loaded = zoo.load(tmp_path / "arface")
    assert loaded.config == model.config
    state, reloaded = model.state_dict(), loaded.state_dict()
    assert state.keys() == reloaded.keys() and all(torch.equal(state[k], reloaded[k]) for k in state)
    assert torch.equal(loaded.embed(faces), model.embed(faces))
    assert torch.equal(loaded.explain(faces).maps["mask"], model.explain(faces).maps["mask"])


def test_pretrained_start_with_every_patch_kept_is_the_plain_model(faces):
    """init_from starts the policy at keep-all for any face (probability 1/2, argmax at
    inference): M = 1 everywhere, no block is masked in eval, and the untrained ARFace model is
    exactly the trained plain model. Training still samples masked modes."""
    plain = pretrained_like("mobilefacenet", faces, embedding_dim=128)
    model = zoo.build("arface-mobilefacenet", width=0.25, embedding_dim=128)
    untrained = model.init_from(plain)
    assert untrained and all(name.startswith("attention.") for name in untrained)
    keep_all = mode_index(set())
    probability = model.attention(faces).softmax(dim=1)
    assert torch.allclose(probability[:, keep_all], torch.full((8,), 0.5))
    embeddings = model.embed(faces)
    assert (model.last_modes == keep_all).all() and model.last_masked_blocks == []
    assert embeddings.shape == (8, 128)
    assert torch.allclose(embeddings, plain.embed(faces), atol=1e-5)
