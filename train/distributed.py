"""The training processes under torchrun: who this process is, and the collectives the engine and
PartialFC use. Each helper is the identity (or a no-op) in a single process, so one code path
serves one CPU, one GPU and many.

The differentiable collectives come from torch's functional collectives: the all-gather's
backward sums each rank's gradient from every process (a reduce-scatter), the all-to-all's
backward sends each block's gradient back where the block came from.
"""
from __future__ import annotations

from typing import Any, List

import torch
import torch.distributed as dist
import torch.distributed._functional_collectives as collectives


def rank() -> int:
    return dist.get_rank() if dist.is_initialized() else 0


def world_size() -> int:
    return dist.get_world_size() if dist.is_initialized() else 1


def gather_rows(tensor: torch.Tensor) -> torch.Tensor:
    """Every process's `tensor` stacked along dim 0 in rank order (equal sizes); differentiable."""
    if world_size() == 1:
        return tensor
    return collectives.all_gather_single_autograd(tensor.contiguous(), 0, dist.group.WORLD)


def exchange(flat: torch.Tensor, send_sizes: List[int], receive_sizes: List[int]) -> torch.Tensor:
    """All-to-all of a 1-d tensor: part j of `flat` (sizes `send_sizes`) goes to rank j, and the
    parts received from every rank come back concatenated in rank order; differentiable."""
    if world_size() == 1:
        return flat
    return collectives.all_to_all_single_autograd(flat.contiguous(), receive_sizes, send_sizes, dist.group.WORLD)


def sum_over_processes(value: torch.Tensor) -> torch.Tensor:
    """`value` summed over the processes, in place (no gradient)."""
    if world_size() > 1:
        dist.all_reduce(value)
    return value


def max_over_processes(value: torch.Tensor) -> torch.Tensor:
    """`value`'s elementwise maximum over the processes, in place (no gradient)."""
    if world_size() > 1:
        dist.all_reduce(value, op=dist.ReduceOp.MAX)
    return value


def mean_over_processes(value: torch.Tensor) -> torch.Tensor:
    """`value` averaged over the processes, in place; itself in a single process."""
    if world_size() > 1:
        dist.all_reduce(value)
        value /= world_size()
    return value


def barrier() -> None:
    """Wait until every process gets here."""
    if world_size() > 1:
        dist.barrier()


def from_rank_zero(value: Any) -> Any:
    """Rank 0's `value` (any picklable object), in every process."""
    if world_size() == 1:
        return value
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]
