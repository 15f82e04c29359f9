"""PartialFC: at sample rate 1.0 two sharded processes compute what the replicated head computes
under DDP (loss, embedding and class-matrix gradients, every margin head); sampling keeps every
positive; at rate 0.1 a sharded pair of processes learns a 2,000-class task; through the engine,
each process checkpoints its shard and a resumed run ends where an uninterrupted one does."""
from __future__ import annotations

import copy

import pytest
import torch

from packed import pack_lfw
from processes import run_in_processes
from train.config import load_recipe
from train.data import PackedFaces
from train.engine import Trainer
from train.distributed import mean_over_processes
from train.losses import LOSSES, CosineHead, build_loss
from train.losses.base import cosine
from train.partial_fc import PartialFC, shard_sizes

MARGIN_HEADS = [name for name in LOSSES if issubclass(LOSSES.get(name), CosineHead)]
CLASSES, ROWS, DIM = 11, 6, 16  # 11 classes over 2 processes: shards of 6 and 5


def _sharded_and_replicated(rank, world):
    """Per margin head: (sharded, replicated) loss, this rank's embedding gradient, its shard's
    gradient and the head's buffers. The replicated side is computed here as DDP would: each rank's
    loss on its own rows, the class matrix's gradient averaged over the ranks."""
    results = {}
    for name in MARGIN_HEADS:
        torch.manual_seed(0)
        head = build_loss(name, CLASSES, embedding_dim=DIM)
        everyone = torch.randn(world * ROWS, DIM, generator=torch.Generator().manual_seed(1))
        labels = torch.arange(world * ROWS) % CLASSES
        rows = slice(rank * ROWS, (rank + 1) * ROWS)

        replicas = [copy.deepcopy(head) for _ in range(world)]
        inputs = everyone.clone().requires_grad_()
        losses = [replica.loss(inputs[r * ROWS:(r + 1) * ROWS], labels[r * ROWS:(r + 1) * ROWS])[0]
                  for r, replica in enumerate(replicas)]
        sum(losses).backward()
        weight_grad = sum(replica.weight.grad for replica in replicas) / world

        sharded = PartialFC(copy.deepcopy(head), 1.0, ROWS, rank, world)
        mine = everyone[rows].clone().requires_grad_()
        loss, _ = sharded.loss(mine, labels[rows])
        loss.backward()
        shard = slice(sharded.start, sharded.start + sharded.count)
        results[name] = {"loss": (loss.detach(), losses[rank].detach()),
                         "embedding_grad": (mine.grad, inputs.grad[rows]),
                         "weight_grad": (sharded.weight.grad, weight_grad[shard]),
                         "buffers": (dict(sharded.margin.named_buffers()), dict(replicas[rank].named_buffers())),
                         "shard": (sharded.start, sharded.count)}
    return results


def test_rate_one_on_two_processes_matches_the_replicated_head():
    ranks = run_in_processes(_sharded_and_replicated, 2)
    assert [r[MARGIN_HEADS[0]]["shard"] for r in ranks] == [(0, 6), (6, 5)]
    for name in MARGIN_HEADS:
        for results in ranks:
            for key in ("loss", "embedding_grad", "weight_grad"):
                sharded, replicated = results[name][key]
                torch.testing.assert_close(sharded, replicated, rtol=1e-5, atol=1e-6, msg=f"{name} {key}")
            sharded, replicated = results[name]["buffers"]
            assert sharded.keys() == replicated.keys()
            for key in sharded:
                torch.testing.assert_close(sharded[key], replicated[key], msg=f"{name} buffer {key}")


def head_and_shard(name, classes, rate):
    """A seeded head, PartialFC over a copy of it in one process, and a batch of embeddings."""
    torch.manual_seed(0)
    head = build_loss(name, classes, embedding_dim=DIM)
    return head, PartialFC(copy.deepcopy(head), rate, ROWS), torch.randn(ROWS, DIM)


@pytest.mark.fast
def test_one_process_at_rate_one_is_the_head_itself():
    head, sharded, embeddings = head_and_shard("npcface", 40, 1.0)
    labels = torch.tensor([0, 5, 5, 17, 39, 2])
    assert torch.equal(sharded.loss(embeddings, labels)[1], head.loss(embeddings, labels)[1])
    assert all(torch.equal(a, b) for a, b in zip(sharded.own_and_nearest(embeddings, labels),
                                                  head.own_and_nearest(embeddings, labels)))


@pytest.mark.fast
def test_sampling_keeps_every_positive_and_its_cosine():
    head, sharded, embeddings = head_and_shard("arcface", 200, 0.1)
    labels = torch.tensor([3, 3, 50, 120, 199, 7])
    loss, logits = sharded.loss(embeddings, labels)
    assert logits.shape == (ROWS, 20)  # 10% of 200 centres
    expected = cosine(embeddings, head.weight).gather(1, labels[:, None]).squeeze(1)
    torch.testing.assert_close(sharded.margin.last["cos_pos"], expected)  # each row's own centre, found
    loss.backward()
    touched = sharded.weight.grad.abs().sum(dim=1) > 0
    assert touched.sum() == 20 and touched[labels].all()
    another = sharded.loss(embeddings, labels)[1]
    assert not torch.equal(another, logits)  # a fresh sample of negatives each step


@pytest.mark.fast
def test_partial_fc_needs_a_margin_head_and_a_rate():
    with pytest.raises(ValueError, match="Softmax is not one"):
        PartialFC(build_loss("softmax", 10, embedding_dim=DIM), 1.0, ROWS)
    with pytest.raises(ValueError, match="sample_rate"):
        PartialFC(build_loss("arcface", 10, embedding_dim=DIM), 0.0, ROWS)
    assert shard_sizes(11, 4) == [3, 3, 3, 2]


TASK_CLASSES, TASK_INPUT, TASK_BATCH = 2000, 64, 32


def _learn_at_one_tenth(rank, world, steps):
    """A linear network (replicated, gradients averaged as DDP does) and a sharded ArcFace head at
    sample rate 0.1 learn to tell 2,000 noisy class prototypes apart. Returns the sampled loss per
    step and the accuracy over all 2,000 classes on held-out samples before and after."""
    prototypes = torch.randn(TASK_CLASSES, TASK_INPUT, generator=torch.Generator().manual_seed(0))

    def draw(count, generator):
        labels = torch.randint(TASK_CLASSES, (count,), generator=generator)
        return prototypes[labels] + 0.3 * torch.randn(count, TASK_INPUT, generator=generator), labels

    torch.manual_seed(0)
    network = torch.nn.Linear(TASK_INPUT, DIM)
    sharded = PartialFC(build_loss("arcface", TASK_CLASSES, embedding_dim=DIM, s=16.0, m=0.2), 0.1, TASK_BATCH,
                        rank, world)
    assert sharded.samples == [100, 100]
    optimizer = torch.optim.SGD([*network.parameters(), sharded.weight], lr=0.5, momentum=0.9)
    held_out = draw(256, torch.Generator().manual_seed(100 + rank))

    def accuracy():
        own, nearest = sharded.own_and_nearest(network(held_out[0]), held_out[1])
        return (own >= nearest).float().mean().item()

    before, losses = accuracy(), []
    data = torch.Generator().manual_seed(1 + rank)
    for _ in range(steps):
        inputs, labels = draw(TASK_BATCH, data)
        loss, _ = sharded.loss(network(inputs), labels)
        optimizer.zero_grad()
        loss.backward()
        for p in network.parameters():
            mean_over_processes(p.grad)
        optimizer.step()
        losses.append(loss.item())
    return {"losses": losses, "before": before, "after": accuracy()}


def test_rate_one_tenth_learns_a_two_thousand_class_task_on_two_processes():
    for result in run_in_processes(_learn_at_one_tenth, 2, 200):
        losses = result["losses"]
        assert sum(losses[-10:]) < 0.5 * sum(losses[:10]), losses
        assert result["before"] < 0.01 and result["after"] > 0.6, result  # measured: 0 -> 0.78 and 0.75


SHARDED_RUN = ["model.name='ir18'", "model.width=0.25", "model.head='gdc'", "optim.batch_size=8", "optim.lr=0.01",
               "partial_fc.enabled=true", "partial_fc.sample_rate=0.5", "run.checkpoint_every=1", "run.log_every=1"]


def _train_sharded(rank, world, data, out, steps, resume):
    trainer = Trainer(load_recipe("baseline", [*SHARDED_RUN, f"run.max_steps={steps}"]), PackedFaces(data), out,
                      device="cpu", progress=False)
    assert trainer.head.samples == [16, 16]  # half of each 20-class shard, less than every class: sampled
    if resume:
        assert trainer.load_state() and trainer.step == steps // 2
    trainer.fit()
    return {"shard": trainer.head.weight.detach().clone(), "model": trainer.model.state_dict()}


@pytest.fixture(scope="module")
def forty_people(tmp_path_factory):
    return pack_lfw(tmp_path_factory.mktemp("data"), people=40, per_person=2)


def test_sharded_checkpoints_resume_each_rank_exactly(forty_people, tmp_path):
    """Two processes train a sharded head through the engine; each saves its own shard, and a run
    stopped after 2 steps and resumed ends where the uninterrupted 4-step run does."""
    straight = run_in_processes(_train_sharded, 2, forty_people, tmp_path / "straight", 4, False)
    run_in_processes(_train_sharded, 2, forty_people, tmp_path / "resumed", 2, False)
    assert {p.name for p in (tmp_path / "resumed" / "state").glob("head*")} == {
        "head.rank0-of-2.safetensors", "head.rank1-of-2.safetensors"}
    resumed = run_in_processes(_train_sharded, 2, forty_people, tmp_path / "resumed", 4, True)
    for a, b in zip(straight, resumed):
        assert torch.equal(a["shard"], b["shard"])
        assert all(torch.equal(a["model"][key], b["model"][key]) for key in a["model"])
    assert not torch.equal(straight[0]["shard"][:16], straight[1]["shard"][:16])  # two different shards
