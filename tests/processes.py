"""Run a test function in several CPU processes joined by a gloo process group, the way torchrun
joins GPUs: torch.multiprocessing spawns them, each gets one torch thread (two processes on two
cores), and their return values come back to the test in rank order.

A process that fails fails the test with its traceback; a run that outlives `timeout` is killed
and fails the test, so a collective left waiting cannot hang the suite.
"""
from __future__ import annotations

import os
import socket
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, List

import torch
import torch.distributed as dist
import torch.multiprocessing as mp


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _entry(rank: int, function: Callable, world: int, port: int, folder: str, args: tuple) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    try:
        torch.save(function(rank, world, *args), Path(folder) / f"rank{rank}.pt")
    finally:
        dist.destroy_process_group()
    # The result is saved: leave without interpreter finalisation, during which gloo's worker
    # threads releasing their tensors now and then aborted the process ("terminate called
    # without an active exception", 2 runs in 54 of the PartialFC test).
    os._exit(0)


def run_in_processes(function: Callable, world: int, *args, timeout: float = 300) -> List[Any]:
    """`function(rank, world, *args)` in `world` processes (a module-level function: spawned
    processes import it); returns each rank's return value."""
    with tempfile.TemporaryDirectory(prefix="facescope-gloo-") as folder:
        context = mp.spawn(_entry, args=(function, world, free_port(), folder, args), nprocs=world, join=False)
        deadline = time.monotonic() + timeout
        while not context.join(timeout=1):
            if time.monotonic() > deadline:
                for process in context.processes:
                    process.kill()
                raise TimeoutError(f"{function.__name__} on {world} processes ran past {timeout} s")
        return [torch.load(Path(folder) / f"rank{r}.pt", weights_only=False) for r in range(world)]
