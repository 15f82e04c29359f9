"""Dtype discipline, checked on the CPU: under bf16 autocast and channels_last every recipe
trains a step, every head works in fp32 (cosines, margins, hard masks, logits), SCAN's custom
weight-gradient conv takes the bf16 gradient, and every gradient has its parameter's dtype.
These are the failures a first bf16 GPU run would otherwise meet (cuDNN refuses mixed dtypes)."""
from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

import zoo
from packed import pack_lfw
from train.config import load_recipe
from train.data import PackedFaces
from train.engine import Trainer, TrainObjective
from train.losses import LOSSES, build_loss

RECIPES = {"baseline": "model.name='ir18'", "scan": "model.name='scan-ir18'", "sranet": "model.name='sranet-ir18'",
           "arface": "model.name='arface-ir18'", "hpda": "model.name='hpda-mobilefacenet'",
           "npcface": "model.name='ir18'"}
BF16 = ["model.width=0.25", "optim.batch_size=8", "run.max_steps=1", "run.log_every=1", "run.checkpoint_every=1000",
        "run.amp=true", "run.channels_last=true"]


@pytest.fixture(scope="module")
def packed(tmp_path_factory):
    return pack_lfw(tmp_path_factory.mktemp("data"), people=4, per_person=4)


@pytest.mark.parametrize("name", sorted(RECIPES))
def test_every_recipe_steps_under_bf16_autocast_with_fp32_heads(name, packed, tmp_path):
    torch.manual_seed(0)
    trainer = Trainer(load_recipe(name, [*BF16, RECIPES[name]]), PackedFaces(packed), tmp_path, device="cpu",
                      progress=False)
    assert trainer.amp and trainer.channels_last
    seen = {}

    def record(module, inputs, output):
        seen["embeddings"], seen["logits"] = inputs[0].dtype, output.dtype

    trainer.head.register_forward_hook(record)
    result = trainer.fit()
    assert np.isfinite(result["loss"]), result
    assert seen == {"embeddings": torch.float32, "logits": torch.float32}, seen
    assert all(value.dtype == torch.float32 for value in trainer.head.last.values() if value.is_floating_point())
    for parameter_name, parameter in trainer.objective.named_parameters():
        if parameter.grad is not None:
            assert parameter.grad.dtype == parameter.dtype, parameter_name


@pytest.mark.fast
@pytest.mark.parametrize("name", sorted(LOSSES))
def test_every_head_computes_in_fp32_when_the_network_runs_in_bf16(name):
    """The training objective under autocast: the network's output is bf16, yet the head's
    cosines, margins, masks and logits are fp32 and equal the head run on the same embeddings
    with no autocast at all (an F.linear left to autocast would give bf16 logits)."""
    torch.manual_seed(0)
    model = zoo.build("mobilefacenet", width=0.25, embedding_dim=16).train()
    objective = TrainObjective(model, build_loss(name, num_classes=6, embedding_dim=16))
    images, labels = torch.randn(12, 3, 112, 112), torch.arange(12) % 6
    fresh = copy.deepcopy(objective.head)  # AdaCos, CurricularFace and SphereFace update state per call
    with torch.autocast("cpu", dtype=torch.bfloat16):
        embeddings, logits, terms = objective(images, labels)
    assert embeddings.dtype == torch.bfloat16  # the network did run in bf16
    assert logits.dtype == torch.float32 and all(t.dtype == torch.float32 for t in terms.values())
    assert all(v.dtype == torch.float32 for v in objective.head.last.values() if v.is_floating_point())
    reference, reference_logits = fresh.loss(embeddings.detach().float(), labels)
    assert torch.allclose(logits, reference_logits) and torch.allclose(terms["recognition"], reference)
    terms["recognition"].backward()
    assert all(p.grad is None or p.grad.dtype == p.dtype for p in objective.parameters())
