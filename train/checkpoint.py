"""A run's resumable state: safetensors + JSON in `RUN/state/`, written atomically, no pickles.

- `model.safetensors`; the head: `head.safetensors` when every process holds all of it, or one
  `head.rank{R}-of-{W}.safetensors` per process for a sharded (PartialFC) head, its shard's
  momentum inside, so a resume needs the same number of processes;
- `optimizer.safetensors`: momentum buffers keyed by (group, position), stable for one config;
  `<name>_optimizer.safetensors` for each of the method's own optimisers;
- `state.json`: step, method state, wall time, the run's config (as it ran: per-process batch,
  scaled learning rate), the architecture and the data.

Every process writes into rank 0's staging folder; rank 0 swaps it in (`atomic_folder`) once all
have written, so a kill at any moment leaves the previous state whole.
"""
from __future__ import annotations

import json
from contextlib import contextmanager
from pathlib import Path
from typing import Dict, Iterator, Optional, Set

import torch
from safetensors.torch import load_file, save_file

from train.config import DEFAULTS
from train.distributed import barrier, from_rank_zero
from train.heads import is_sharded
from zoo.data.paths import atomic_folder

STATE_DIR = "state"
MOMENTUM = "momentum."  # prefix of a shard's momentum buffers in its file
RESUME_SECTIONS = ("model", "loss", "partial_fc")  # what a resumed run must share with its checkpoint


def shard_file(rank: int, world: int) -> str:
    return f"head.rank{rank}-of-{world}.safetensors"


def save_state(trainer) -> None:
    """Write `trainer`'s state; every process calls it at the same step."""
    sharded = is_sharded(trainer.head)
    with _staging_for_every_rank(trainer.run_dir / STATE_DIR, trainer.rank) as staging:
        if sharded:
            momentum = {MOMENTUM + name: buffer for name, buffer in _named_momentum(trainer.head, trainer.optimizer)}
            save_file({**_cpu(trainer.head.state_dict()), **_cpu(momentum)},
                      str(staging / shard_file(trainer.rank, trainer.world)))
        if trainer.rank != 0:
            return
        save_file(_cpu(trainer.model.state_dict()), str(staging / "model.safetensors"))
        if not sharded:
            save_file(_cpu(trainer.head.state_dict()), str(staging / "head.safetensors"))
        shard_parameters = set(trainer.head.parameters()) if sharded else set()
        save_file(_momentum(trainer.optimizer, shard_parameters), str(staging / "optimizer.safetensors"))
        for name, optimizer in trainer.extra_optimizers.items():
            save_file(_momentum(optimizer), str(staging / f"{name}_optimizer.safetensors"))
        (staging / "state.json").write_text(json.dumps(
            {"step": trainer.step, "total_steps": trainer.total_steps, "method_state": trainer.method_state,
             "architecture": trainer.model.config.to_dict(),
             "train_seconds": trainer.train_seconds, "world_size": trainer.world, "device": str(trainer.device),
             "data": {"path": str(trainer.data.path), "images": len(trainer.data),
                      "identities": trainer.data.num_classes},
             "config": trainer.config}, indent=2))


def load_state(trainer) -> bool:
    """Resume `trainer` from its run folder's state, if there is one; returns whether it did."""
    folder = _saved_state(trainer.run_dir)
    if folder is None:
        return False
    state = json.loads((folder / "state.json").read_text())
    for section in RESUME_SECTIONS:
        if state["config"].get(section, DEFAULTS.get(section)) != trainer.config[section]:
            raise ValueError(f"{folder}: the checkpoint was trained with another {section} "
                             f"({state['config'].get(section)}); use a new --out folder")
    device = str(trainer.device)
    trainer.model.load_state_dict(load_file(str(folder / "model.safetensors"), device=device))
    if is_sharded(trainer.head):
        if state["world_size"] != trainer.world:
            raise ValueError(f"{folder}: its class matrix is sharded over {state['world_size']} processes; "
                             f"resume it with as many (not {trainer.world})")
        saved = load_file(str(folder / shard_file(trainer.rank, trainer.world)), device=device)
        trainer.head.load_state_dict({k: v for k, v in saved.items() if not k.startswith(MOMENTUM)})
        for name, parameter in trainer.head.named_parameters():
            if MOMENTUM + name in saved:
                trainer.optimizer.state[parameter]["momentum_buffer"] = saved[MOMENTUM + name]
    else:
        trainer.head.load_state_dict(load_file(str(folder / "head.safetensors"), device=device))
    _restore_momentum(trainer.optimizer, load_file(str(folder / "optimizer.safetensors"), device=device))
    for name, optimizer in trainer.extra_optimizers.items():
        _restore_momentum(optimizer, load_file(str(folder / f"{name}_optimizer.safetensors"), device=device))
    trainer.step, trainer.method_state = int(state["step"]), state["method_state"]
    trainer.train_seconds = float(state.get("train_seconds", 0.0))
    return True


def _saved_state(run_dir: Path) -> Optional[Path]:
    """RUN/state, or the retired copy a kill between atomic_folder's two renames leaves alone."""
    for folder in (run_dir / STATE_DIR, run_dir / f".{STATE_DIR}.old"):
        if (folder / "state.json").is_file():
            return folder
    return None


@contextmanager
def _staging_for_every_rank(folder: Path, rank: int) -> Iterator[Path]:
    """Rank 0's staging folder for `folder`, in every process; swapped in once all have written."""
    if rank == 0:
        with atomic_folder(folder) as staging:
            from_rank_zero(str(staging))
            yield staging
            barrier()
    else:
        yield Path(from_rank_zero(None))
        barrier()


def _cpu(state: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    return {k: v.detach().contiguous().cpu() for k, v in state.items()}


def _named_momentum(module: torch.nn.Module, optimizer: torch.optim.Optimizer):
    for name, parameter in module.named_parameters():
        buffer = optimizer.state.get(parameter, {}).get("momentum_buffer")
        if buffer is not None:
            yield name, buffer


def _momentum(optimizer: torch.optim.Optimizer, leave_out: Set[torch.nn.Parameter] = frozenset()
              ) -> Dict[str, torch.Tensor]:
    """Momentum buffers keyed by (group, position): stable across runs of the same config."""
    out = {}
    for g, group in enumerate(optimizer.param_groups):
        for i, p in enumerate(group["params"]):
            buf = optimizer.state.get(p, {}).get("momentum_buffer")
            if buf is not None and p not in leave_out:
                out[f"{g}.{i}"] = buf.detach().contiguous().cpu()
    return out


def _restore_momentum(optimizer: torch.optim.Optimizer, buffers: Dict[str, torch.Tensor]) -> None:
    for g, group in enumerate(optimizer.param_groups):
        for i, p in enumerate(group["params"]):
            if f"{g}.{i}" in buffers:
                optimizer.state[p]["momentum_buffer"] = buffers[f"{g}.{i}"].to(p.device)
