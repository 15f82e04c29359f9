"""DDP done right, on two gloo processes on the CPU: the batch size is per process and the
learning rate scales with the processes (both in the run's saved config), and a NaN on one
process stops both at the same step, none left hanging in a collective."""
from __future__ import annotations

import json

import pytest

from packed import pack_lfw
from processes import run_in_processes
from train.config import for_processes, load_recipe
from train.data import PackedFaces
from train.engine import Trainer
from train.steps import NonFiniteLoss

RUN = ["model.name='ir18'", "model.width=0.25", "model.head='gdc'", "optim.batch_size=8", "optim.lr=0.01",
       "run.log_every=3", "run.checkpoint_every=3", "run.max_steps=9"]
POISONED_STEP = 4


@pytest.fixture(scope="module")
def packed(tmp_path_factory):
    return pack_lfw(tmp_path_factory.mktemp("data"), people=8, per_person=6)


def _poisoned_on_rank_one(rank, world, data, out):
    """Train; rank 1's recognition loss turns NaN at one step. Returns where each rank stopped."""
    trainer = Trainer(load_recipe("baseline", RUN), PackedFaces(data), out, device="cpu", progress=False)
    if rank == 1:
        recognition = trainer.head.loss

        def poisoned(embeddings, labels):
            loss, logits = recognition(embeddings, labels)
            return (loss * float("nan") if trainer.step == POISONED_STEP else loss), logits

        trainer.head.loss = poisoned
    try:
        trainer.fit()
    except NonFiniteLoss as stop:
        return {"message": str(stop), "step": trainer.step}
    return {"message": None, "step": trainer.step}


def test_nan_on_one_process_stops_both_at_the_same_step(packed, tmp_path):
    ranks = run_in_processes(_poisoned_on_rank_one, 2, packed, tmp_path, timeout=600)
    assert ranks[0] == ranks[1], ranks  # the same step, the same message, on both
    assert ranks[0]["step"] == 6  # the end of the log window (steps 4-6) that holds the NaN
    assert f"step {POISONED_STEP}: loss term 'recognition' is nan" in ranks[0]["message"]
    assert [json.loads(line)["step"] for line in (tmp_path / "log.jsonl").read_text().splitlines()] == [3]
    state = json.loads((tmp_path / "state" / "state.json").read_text())
    assert state["step"] == 3 and state["world_size"] == 2  # the checkpoint before the NaN, intact

    config = state["config"]  # the run as it ran: 8 faces per process, the learning rate doubled
    assert config["optim"]["batch_size"] == 8 and config["optim"]["lr"] == pytest.approx(0.02)
    assert config["scaling"] == {"processes": 2, "batch_per_process": 8, "global_batch_size": 16, "lr_factor": 2}


@pytest.mark.fast
def test_learning_rates_scale_with_the_processes():
    recipe = load_recipe("finetune", ["init.new_layers_lr=0.01"])
    scaled = for_processes(recipe, 8)
    assert scaled["optim"]["lr"] == 8 * recipe["optim"]["lr"]
    assert scaled["init"]["backbone_lr"] == 8 * recipe["init"]["backbone_lr"]
    assert scaled["init"]["new_layers_lr"] == 8 * recipe["init"]["new_layers_lr"]
    assert scaled["scaling"]["global_batch_size"] == 8 * recipe["optim"]["batch_size"]
    assert for_processes(recipe, 1)["optim"]["lr"] == recipe["optim"]["lr"]
