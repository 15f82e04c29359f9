"""Fine-tuning from a zoo checkpoint: recipes with a base, the start, learning-rate groups,
blur augmentation, weight averaging with the start (WiSE-FT) and the held-out validation used to
choose the schedule."""
import json

import numpy as np
import pytest
import torch

import zoo
from faces import lfw_identities
from train import publish, validate, wise
from train.config import ConfigError, load_recipe
from train.data import PackedFaces, blur_some
from train.engine import Trainer, start_model
from zoo.data.degrade import gaussian_blur

REFERENCE = "mobilefacenet.y1"  # the imported InsightFace model: stays in the embedded zoo
SHORT = ["run.max_steps=3", "run.log_every=1", "optim.batch_size=16", "run.checkpoint_every=1000"]


@pytest.fixture(scope="module")
def packed(tmp_path_factory):
    images, labels = lfw_identities(people=8, per_person=6)
    path = tmp_path_factory.mktemp("data") / "faces.npz"
    np.savez(path, images=images, labels=labels)
    return path


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("FACESCOPE_CACHE", str(tmp_path / "cache"))


def test_recipe_base_replaces_whole_sections(tmp_path):
    npc = load_recipe("finetune-npcface")
    assert npc["loss"] == {"name": "npcface", "s": 32.0}  # no ArcFace m inherited
    assert npc["init"] == load_recipe("finetune")["init"] and npc["recipe"] == "finetune-npcface"
    assert load_recipe("finetune-blur")["augment"]["blur_fraction"] == 0.5
    loop = tmp_path / "a.toml"
    loop.write_text(f'base = "{loop}"\n')
    with pytest.raises(ConfigError, match="loop"):
        load_recipe(str(loop))


def test_finetune_starts_at_the_checkpoint(packed, tmp_path):
    """The model inherits the checkpoint's size and BN eps, starts at its weights, the class
    matrix at the identities' mean embeddings, and pretrained tensors train at backbone_lr."""
    reference = zoo.load(REFERENCE)
    config = load_recipe("finetune", SHORT)
    trainer = Trainer(config, PackedFaces(packed), tmp_path, device="cpu", progress=False)
    model = trainer.model
    assert model.config.embedding_dim == 128 and model.config.bn_eps == reference.config.bn_eps
    for key, value in reference.state_dict().items():
        assert torch.equal(model.state_dict()[key], value), key
    faces = model.preprocess(trainer.data.images)
    nearest = trainer.head.cosine(model.embed(faces)).argmax(1)
    assert (nearest == trainer.data.labels).float().mean() > 0.9  # centres of real identities
    scales = {g["lr_scale"] for g in trainer.optimizer.param_groups}
    assert scales == {1.0, config["init"]["backbone_lr"] / config["optim"]["lr"]}
    trainer.fit()
    for group in trainer.optimizer.param_groups:
        assert group["lr"] == pytest.approx(config["optim"]["lr"] * group["lr_scale"])
    log = [json.loads(line) for line in (tmp_path / "log.jsonl").read_text().splitlines()]
    assert len(log) == 3 and all(np.isfinite(r["loss"]) for r in log)
    state = json.loads((tmp_path / "state" / "state.json").read_text())
    assert state["architecture"]["embedding_dim"] == 128  # publish rebuilds from this


def test_new_layers_train_at_their_own_rate(packed, tmp_path):
    """init.new_layers_lr sets the rate of what the method adds (SRANet's attention) apart from
    the pretrained tensors (backbone_lr) and the head (optim.lr)."""
    config = load_recipe("finetune", [*SHORT, "model.name='sranet-mobilefacenet'", "init.new_layers_lr=0.001"])
    trainer = Trainer(config, PackedFaces(packed), tmp_path, device="cpu", progress=False)
    lr, init = config["optim"]["lr"], config["init"]
    rate_of = {id(p): group["lr_scale"] * lr for group in trainer.optimizer.param_groups for p in group["params"]}
    model = dict(trainer.model.named_parameters())
    assert trainer.new_tensors & set(model), "SRANet adds attention layers to the MobileFaceNet"
    for name, p in model.items():
        expected = init["new_layers_lr"] if name in trainer.new_tensors else init["backbone_lr"]
        assert rate_of[id(p)] == pytest.approx(expected), name
    assert all(rate_of[id(p)] == pytest.approx(lr) for p in trainer.head.parameters())


def test_finetune_refuses_a_method_checkpoint(packed, tmp_path):
    method = zoo.build("scan-mobilefacenet", width=0.25)
    zoo.save(method, tmp_path / "scan")
    with pytest.raises(ValueError, match="starts from a plain one"):
        Trainer(load_recipe("finetune", [*SHORT, f"init.from='{tmp_path / 'scan'}'"]), PackedFaces(packed),
                tmp_path / "run", device="cpu", progress=False)


def test_blur_augmentation_blurs_the_chosen_fraction():
    images, _ = lfw_identities(people=4, per_person=4)
    faces = torch.from_numpy(images)
    torch.manual_seed(3)
    out = blur_some(faces, 0.5, [2.0, 2.0])
    changed = [i for i in range(len(faces)) if not torch.equal(out[i], faces[i])]
    assert 3 <= len(changed) <= 13  # about half of 16, seeded
    for i in changed:
        assert np.array_equal(out[i].numpy(), gaussian_blur(images[i], 2.0))
    assert torch.equal(blur_some(faces, 0.0, [0.5, 4.0]), faces)


def test_validation_holds_out_whole_identities(packed, tmp_path):
    data = PackedFaces(packed)
    train, held = validate.split_identities(data, 0.25, seed=0)
    assert len(train) + len(held) == len(data) and held.num_classes == 2 and train.num_classes == 6
    train_faces = {f.numpy().tobytes() for f in train.images}
    assert not any(f.numpy().tobytes() in train_faces for f in held.images)
    first, second, same = validate.validation_pairs(held.labels.numpy(), 40, seed=0)
    labels = held.labels.numpy()
    assert same.sum() == (~same).sum() and np.array_equal(labels[first] == labels[second], same)


def test_validation_cli_end_to_end(packed, tmp_path, capsys):
    out = tmp_path / "val"
    code = validate.main(["finetune", "--data", str(packed), "--out", str(out), "--holdout", "0.25",
                          "--pairs", "60", "--conditions", "clean,blur4", *sum((["--set", s] for s in SHORT), [])])
    assert code == 0
    result = json.loads((out / "validation.json").read_text())
    assert set(result["held_out"]) == {"clean", "blur4"} and result["held_out_identities"] == 2
    assert result["before"]["clean"]["accuracy"] > 0.8  # y1 on unseen LFW people
    assert "| val |" in capsys.readouterr().out
    assert validate.main(["finetune"]) == 2

    # rerun with WiSE-FT weights: it resumes the finished run (no step trained again) and scores
    # alpha 0 as the start itself and 1 as the trained weights, exactly
    log = (out / "log.jsonl").read_text()
    code = validate.main(["finetune", "--data", str(packed), "--out", str(out), "--holdout", "0.25",
                          "--pairs", "60", "--conditions", "clean,blur4", "--wise-alpha", "0,0.5,1",
                          *sum((["--set", s] for s in SHORT), [])])
    assert code == 0 and (out / "log.jsonl").read_text() == log
    again = json.loads((out / "validation.json").read_text())
    assert again["held_out"] == result["held_out"] == again["wise_alpha"]["1"]
    assert again["wise_alpha"]["0"] == result["before"] and set(again["wise_alpha"]) == {"0", "0.5", "1"}
    assert "| val, wise_alpha 0.5 |" in capsys.readouterr().out
    assert validate.main(["finetune", "--data", str(packed), "--out", str(out), "--wise-alpha", "1.5"]) == 2
    assert "init.wise_alpha must be between 0" in capsys.readouterr().err


def test_publish_averages_the_trained_weights_with_the_start(packed, tmp_path, capsys):
    """--wise-alpha (or the recipe's init.wise_alpha) publishes (1 - a) * start + a * trained, and
    the card says so; without it the trained weights go out as they are. --out writes the
    checkpoint outside the zoo."""
    run = tmp_path / "run"
    trainer = Trainer(load_recipe("finetune", SHORT), PackedFaces(packed), run, device="cpu", progress=False)
    start = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    trainer.fit()
    trained = trainer.model.state_dict()
    assert any(not torch.equal(start[k], trained[k]) for k in start if start[k].is_floating_point())

    assert publish.main([str(run), "--out", str(tmp_path / "half"), "--wise-alpha", "0.25"]) == 0
    assert publish.main([str(run), "--out", str(tmp_path / "as-trained")]) == 0
    half = zoo.load_checkpoint(tmp_path / "half").state_dict()
    as_trained = zoo.load_checkpoint(tmp_path / "as-trained").state_dict()
    for key, value in half.items():
        assert torch.equal(as_trained[key], trained[key]), key
        expected = 0.75 * start[key] + 0.25 * trained[key] if value.is_floating_point() else trained[key]
        assert torch.allclose(value, expected, atol=1e-6), key
    assert "0.75 x start + 0.25 x trained" in (tmp_path / "half" / "README.md").read_text()
    assert "WiSE-FT" not in (tmp_path / "as-trained" / "README.md").read_text()

    assert publish.main([str(run), "--out", str(tmp_path / "bad"), "--wise-alpha", "1.5"]) == 2
    assert "init.wise_alpha must be between 0" in capsys.readouterr().err
    assert publish.main([str(tmp_path / "half"), "--out", str(tmp_path / "again"), "--wise-alpha", "0.5"]) == 2
    assert "give a run folder" in capsys.readouterr().err
    assert not (tmp_path / "bad").exists() and not (tmp_path / "again").exists()


def test_a_method_s_start_is_rebuilt_exactly(packed, tmp_path):
    """Publishing rebuilds the start a run trained from, the method's new layers included
    (SRANet's attention), so the weight average is the one validated."""
    config = load_recipe("finetune", [*SHORT, "model.name='sranet-mobilefacenet'"])
    trainer = Trainer(config, PackedFaces(packed), tmp_path, device="cpu", progress=False)
    torch.manual_seed(123)  # whatever ran before
    rebuilt, new = start_model(trainer.config)
    assert new == trainer.new_tensors
    for key, value in trainer.model.state_dict().items():
        assert torch.equal(rebuilt.state_dict()[key], value), key
    with pytest.raises(ConfigError, match="set init.from"):
        wise.alpha(load_recipe("baseline", ["init.wise_alpha=0.5"]))
