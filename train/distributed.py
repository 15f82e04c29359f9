"""The training processes under torchrun: who this process is, and the collectives the engine and
PartialFC use. Each helper is the identity (or a no-op) in a single process, so one code path
serves one CPU, one GPU and many.

The two differentiable collectives are small autograd functions over blocking c10d calls: the
all-gather's backward sums every process's gradient for this process's rows (an all-reduce,
then this process's slice: the rows are one batch of embeddings, small beside the class
matrix), the all-to-all's backward sends each block's gradient back where the block came from.
(torch's functional collectives do the same asynchronously; on gloo they corrupted the heap in
about one run in eight, `malloc(): unaligned tcache chunk detected`.)
"""
from __future__ import annotations

from typing import Any, List

import torch
import torch.distributed as dist


def rank() -> int:
    return dist.get_rank() if dist.is_initialized() else 0


def world_size() -> int:
    return dist.get_world_size() if dist.is_initialized() else 1


class _GatherRows(torch.autograd.Function):
    @staticmethod
    def forward(ctx, tensor: torch.Tensor) -> torch.Tensor:
        parts = [torch.empty_like(tensor) for _ in range(world_size())]
        dist.all_gather(parts, tensor.contiguous())
        ctx.rows = slice(rank() * len(tensor), (rank() + 1) * len(tensor))
        return torch.cat(parts)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        grad = grad.contiguous().clone()
        dist.all_reduce(grad)
        return grad[ctx.rows]


class _Exchange(torch.autograd.Function):
    @staticmethod
    def forward(ctx, flat: torch.Tensor, send_sizes: List[int], receive_sizes: List[int]) -> torch.Tensor:
        received = flat.new_empty(sum(receive_sizes))
        dist.all_to_all_single(received, flat.contiguous(), receive_sizes, send_sizes)
        ctx.sizes = send_sizes, receive_sizes
        return received

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        send_sizes, receive_sizes = ctx.sizes
        returned = grad.new_empty(sum(send_sizes))
        dist.all_to_all_single(returned, grad.contiguous(), send_sizes, receive_sizes)
        return returned, None, None


def gather_rows(tensor: torch.Tensor) -> torch.Tensor:
    """Every process's `tensor` stacked along dim 0 in rank order (equal sizes); differentiable."""
    if world_size() == 1:
        return tensor
    return _GatherRows.apply(tensor)


def exchange(flat: torch.Tensor, send_sizes: List[int], receive_sizes: List[int]) -> torch.Tensor:
    """All-to-all of a 1-d tensor: part j of `flat` (sizes `send_sizes`) goes to rank j, and the
    parts received from every rank come back concatenated in rank order; differentiable."""
    if world_size() == 1:
        return flat
    return _Exchange.apply(flat, list(send_sizes), list(receive_sizes))


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
