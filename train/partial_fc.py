"""PartialFC: the class centres sharded across the training processes, and a sampled part of them
in each step (An et al., "Partial FC: Training 10 Million Identities on a Single Machine",
ICCV-W 2021; the layout of insightface's arcface_torch). WebFace42M's 2M x 512 class matrix is
4 GB: replicated, every process would hold it, its gradient and its momentum, and all-reduce it
every step; sharded, each holds 1/world of it and nothing of it crosses the network.

Rank r holds the classes [start_r, start_r + count_r). In each step:
1. every rank gathers the embeddings and labels of all ranks (N_total rows);
2. it samples `sample_rate` of its centres, always including every class of the global batch
   that it holds (1.0: all of them, the exact softmax);
3. it computes the cosines of all N_total embeddings to its sampled centres (N_total x S_r);
4. one all-to-all hands each rank its own rows of every rank's block: N_local x S, S = sum S_r;
5. the loss's own margin maths (`CosineHead.logits`) and cross-entropy run on those rows.

Why whole rows, where arcface_torch keeps column blocks and all-reduces per-row sums: that only
serves margins on the positive logit; the heads here also read whole rows (hard-negative masks
against the margined positive, NPCFace's mean hard cosine, AdaCos's batch sums), and with whole
rows their maths stays the loss's own, for the same memory (N_local x S = N_total x S_r).

Gradients: the all-gather's backward sums each embedding's gradient from every shard; a shard's
own gradient sums every rank's rows, so it is divided by the world size, as DDP averages the
replicated parameters. At sample_rate 1.0 a sharded run computes what the replicated head
computes, to float rounding (tests/test_partial_fc.py).
"""
from __future__ import annotations

import math
from typing import List, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from train.distributed import exchange, gather_rows, max_over_processes, sum_over_processes
from train.losses import CosineHead
from train.losses.base import cosine


def shard_sizes(num_classes: int, world: int) -> List[int]:
    """Classes per rank: contiguous ranges in rank order, the first num_classes % world one larger."""
    return [num_classes // world + (r < num_classes % world) for r in range(world)]


def sampled_count(classes: int, sample_rate: float, global_batch: int) -> int:
    """Centres a shard uses per step: `sample_rate` of its classes, never fewer than the global
    batch (room for every positive it may hold) nor more than it has."""
    if sample_rate >= 1.0:
        return classes
    return min(classes, max(math.ceil(sample_rate * classes), global_batch))


class PartialFC(nn.Module):
    """The class matrix of `margin` (a margin head) sharded across `world` processes.

    `margin` keeps its margin maths and buffers; its `weight` becomes this rank's shard (the rows
    of the replicated start, so a run starts alike for any world size). Every rank must call
    `loss` and `own_and_nearest` at the same steps with `batch_per_rank` rows: both are
    collectives."""

    def __init__(self, margin: CosineHead, sample_rate: float, batch_per_rank: int, rank: int = 0, world: int = 1):
        super().__init__()
        if not isinstance(margin, CosineHead):
            raise ValueError(f"PartialFC needs a margin head (logits from cosines); {type(margin).__name__} "
                             "is not one")
        if not 0.0 < sample_rate <= 1.0:
            raise ValueError(f"partial_fc.sample_rate must be in (0, 1], got {sample_rate}")
        sizes = shard_sizes(margin.num_classes, world)
        if min(sizes) == 0:
            raise ValueError(f"{margin.num_classes} classes cannot be sharded over {world} processes")
        self.rank, self.world, self.sample_rate = rank, world, sample_rate
        self.start, self.count = sum(sizes[:rank]), sizes[rank]
        self.samples = [sampled_count(size, sample_rate, batch_per_rank * world) for size in sizes]
        self.margin = margin
        margin.weight = nn.Parameter(margin.weight.detach()[self.start:self.start + self.count].clone())
        if world > 1:
            margin.weight.register_hook(lambda grad: grad / world)

    @property
    def weight(self) -> nn.Parameter:
        """This rank's shard of the class matrix."""
        return self.margin.weight

    def loss(self, embeddings: Tensor, labels: Tensor) -> Tuple[Tensor, Tensor]:
        """(mean cross-entropy of this rank's rows, their logits over the sampled centres)."""
        everyone, slot = self._gather(embeddings, labels)
        centres, column = self._sample(slot)
        blocks = cosine(everyone, centres)
        cos = self._own_rows(blocks, len(embeddings))
        targets = self._own_columns(column, slot, len(embeddings))
        logits = self.margin.logits(cos, targets, embeddings)
        return F.cross_entropy(logits, targets), logits

    @torch.no_grad()
    def own_and_nearest(self, embeddings: Tensor, labels: Tensor) -> Tuple[Tensor, Tensor]:
        """Per sample, the cosine to its own centre and to the nearest other one, over every class."""
        everyone, slot = self._gather(embeddings, labels)
        cos = cosine(everyone, self.weight)
        cos = torch.cat([cos, cos.new_full((len(cos), 1), float("-inf"))], dim=1)  # the slot of rows held elsewhere
        own = cos.gather(1, slot[:, None]).squeeze(1)
        nearest = cos.scatter(1, slot[:, None], float("-inf")).max(dim=1).values
        both = max_over_processes(torch.stack([own, nearest]))
        rows = slice(self.rank * len(embeddings), (self.rank + 1) * len(embeddings))
        return both[0, rows], both[1, rows]

    @torch.no_grad()
    def start_at(self, centres: Tensor) -> None:
        """Class matrix := `centres` (all C rows; this rank keeps its own)."""
        self.weight.copy_(centres[self.start:self.start + self.count].to(self.weight.device))

    def _gather(self, embeddings: Tensor, labels: Tensor) -> Tuple[Tensor, Tensor]:
        """Every rank's embeddings, and each row's class as an index into this shard, `count`
        (a spare slot) where another rank holds it."""
        everyone, every_label = gather_rows(embeddings), gather_rows(labels)
        local = every_label - self.start
        held = (local >= 0) & (local < self.count)
        return everyone, torch.where(held, local, self.count)

    def _sample(self, slot: Tensor) -> Tuple[Tensor, Tensor]:
        """This step's centres of the shard, and each row's column among them (0 for the spare slot)."""
        wanted = self.samples[self.rank]
        if wanted == self.count:
            return self.weight, slot
        positive = torch.zeros(self.count + 1, dtype=torch.bool, device=slot.device).index_fill_(0, slot, True)
        score = torch.rand(self.count, device=slot.device).masked_fill_(positive[:-1], 2.0)
        index = score.topk(wanted).indices.sort().values
        column_of = torch.zeros(self.count + 1, dtype=torch.long, device=slot.device)
        column_of[index] = torch.arange(wanted, device=slot.device)
        return self.weight[index], column_of[slot]

    def _own_rows(self, blocks: Tensor, rows: int) -> Tensor:
        """(N_total, S_r) cosine blocks of every rank -> this rank's rows over all sampled centres."""
        received = exchange(blocks.flatten(), [rows * self.samples[self.rank]] * self.world,
                            [rows * s for s in self.samples])
        parts = received.split([rows * s for s in self.samples])
        return torch.cat([part.view(rows, s) for part, s in zip(parts, self.samples)], dim=1)

    def _own_columns(self, column: Tensor, slot: Tensor, rows: int) -> Tensor:
        """Each of this rank's rows' positive column in the concatenated sampled centres."""
        offset = sum(self.samples[:self.rank])
        everyone = sum_over_processes(torch.where(slot < self.count, column + offset, 0))
        return everyone[self.rank * rows:(self.rank + 1) * rows]
