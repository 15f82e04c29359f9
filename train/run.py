"""Train a recipe on aligned faces, on the CPU, one GPU, or many through torchrun.

    python -m train.run scan --data cache/packed/facescope-small-train.npz --out runs/scan
    python -m train.run scan --data ... --out runs/scan --set model.width=0.25 --set optim.epochs=8
    torchrun --nproc_per_node 4 -m train.run scan --data ... --out runs/scan
    torchrun --nproc_per_node 8 -m train.run baseline --data ms1m/train.rec --out runs/ms1m --set partial_fc.enabled=true
    python -m train.run scan --data ... --out runs/scan --resume      # after an interruption

Writes to --out: log.jsonl (loss, accuracy, images/s), records.jsonl (per-epoch learnt t and
margin statistics), state/ (resumable checkpoint, safetensors + JSON). `python -m
train.publish` turns a finished run into a zoo checkpoint with its model card.
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import torch
import torch.distributed as dist

from train.config import ConfigError, load_recipe, recipe_names
from train.checkpoint import STATE_DIR
from train.data import open_training_set
from train.engine import Trainer
from train.steps import NonFiniteLoss


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m train.run", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("recipe", help=f"recipe name from train/configs ({', '.join(recipe_names())}) "
                                       "or a path to a .toml file")
    parser.add_argument("--data", required=True, type=Path,
                        help="training faces: a packed .npz (train.prepare), an InsightFace train.rec (beside its "
                             "train.idx), or a folder of aligned 112x112 crops, one sub-folder per identity")
    parser.add_argument("--out", required=True, type=Path, help="run folder (logs, records, resumable state)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE",
                        help="override a recipe value, e.g. --set optim.lr=0.05 (repeatable)")
    parser.add_argument("--resume", action="store_true", help="continue from --out/state")
    parser.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    parser.add_argument("--threads", type=int, default=0, help="CPU threads for torch (default: torch's choice)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar (logs are still written)")
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    distributed = int(os.environ.get("WORLD_SIZE", "1")) > 1
    if distributed:
        backend = "nccl" if torch.cuda.is_available() and args.device != "cpu" else "gloo"
        if backend == "nccl":  # before any CUDA work: else every rank's implicit allocations land on GPU 0
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", 0)))
        dist.init_process_group(backend)
    try:
        config = load_recipe(args.recipe, args.overrides)
        if (args.out / STATE_DIR).exists() and not args.resume:
            raise ConfigError(f"{args.out} already holds a run; pass --resume to continue it or choose another --out")
        trainer = Trainer(config, open_training_set(args.data), args.out, device=args.device,
                          progress=not args.no_progress)
        resumed = args.resume and trainer.load_state()
        if trainer.rank == 0:
            print(f"{trainer.model.name}: {trainer.model.parameter_count():,} parameters, "
                  f"{len(trainer.data)} images of {trainer.data.num_classes} identities, "
                  f"{trainer.total_steps} steps on {trainer.device} x {trainer.world}"
                  + (f", resuming at step {trainer.step}" if resumed else ""), flush=True)
        trainer.fit()
    except (ConfigError, FileNotFoundError, ValueError, NonFiniteLoss) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    finally:
        if distributed:
            dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
