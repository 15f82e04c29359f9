"""Training throughput (images/s) of every method through the real engine (train.engine.Trainer).

CPU (always): the from-scratch recipe at width 0.25, GDC head (HPDA: its own heads), batch 32,
one torch thread, on a small packed subset of FaceScope-small - the configuration
`train/zoo_small.sh` trains its small zoo with (runs/zoo-small; the embedded zoo is fine-tuned
from mobilefacenet.y1 at width 1.0 by `train/zoo_finetune.sh`, not measured here). GPU (when
CUDA exists): every method on IR-50 at full width, 112 px, the recipes' own heads and losses,
bf16 autocast, channels_last, batch 128, cudnn autotuning.

Each method: a few warm-up steps (kernel selection, allocator, oneDNN/cuDNN plans), then
timed steps; wall time is bracketed by device synchronisation. On the CPU the process CPU
time of the timed steps is recorded too: on a shared machine wall time measures the
neighbours as much as the code, CPU time of a one-thread run much less so. The benchmark
writes no checkpoints (state saving is switched off), only a throw-away log.
Writes bench/results/training.{json,md}.

    python bench/training.py                       # CPU, and the GPU when there is one
    python bench/training.py --steps 20 --methods scan-ir18,ir18
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Dict, List

import numpy as np
import torch

from bench.common import write_results
from train.config import load_recipe
from train.data import PackedFaces
from train.engine import Trainer
from zoo.tables import markdown_table

TRAIN_SET = Path(__file__).resolve().parents[1] / "cache" / "packed" / "facescope-small-train.npz"
GDC = "model.head='gdc'"
# label -> (recipe, model on the CPU, model on the GPU, overrides of train/zoo_small.sh for the CPU run)
METHODS: Dict[str, tuple] = {
    "ir18": ("baseline", "ir18", "ir50", [GDC]),
    "scan-ir18": ("scan", "scan-ir18", "scan-ir50", [GDC]),
    "sranet-ir18": ("sranet", "sranet-ir18", "sranet-ir50", [GDC]),
    "arface-ir18": ("arface", "arface-ir18", "arface-ir50", [GDC, "loss.name='arcface'", "loss.m=0.5"]),
    "hpda-mobilefacenet": ("hpda", "hpda-mobilefacenet", "hpda-ir50", ["model.hbp_dim=128"]),
    "ir18+npcface": ("npcface", "ir18", "ir50", [GDC]),
}


def small_train_set(source: Path, images: int, folder: Path) -> Path:
    """A packed subset (seeded random `images` faces, labels renumbered) the engine can load."""
    with np.load(source) as data:
        pick = np.sort(np.random.default_rng(0).choice(len(data["labels"]), size=images, replace=False))
        faces, labels = data["images"][pick], data["labels"][pick]
    _, labels = np.unique(labels, return_inverse=True)
    path = folder / "train-subset.npz"
    np.savez(path, images=faces, labels=labels.astype(np.int64))
    return path


def overrides(method: str, device: str, batch: int, steps: int) -> List[str]:
    _, cpu_model, gpu_model, extra = METHODS[method]
    gpu = device == "cuda"
    return [f"model.name='{gpu_model if gpu else cpu_model}'", f"model.width={1.0 if gpu else 0.25}",
            f"optim.batch_size={batch}", "optim.warmup_steps=0", f"run.log_every={steps}",
            f"run.amp={'true' if gpu else 'false'}", f"run.channels_last={'true' if gpu else 'false'}",
            "run.record_every_epoch=false", *([] if gpu else ["loss.s=32.0", *extra])]


def synchronize(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def throughput(method: str, data: PackedFaces, device: str, batch: int, warmup: int, steps: int) -> Dict:
    recipe = METHODS[method][0]
    config = load_recipe(recipe, overrides(method, device, batch, steps))
    with tempfile.TemporaryDirectory(prefix="facescope-bench-train-") as run_dir:
        trainer = Trainer(config, data, Path(run_dir), device=device, progress=False)
        trainer.save_state = lambda: None  # a throughput benchmark keeps no checkpoints
        trainer.total_steps = warmup
        trainer.fit()
        trainer.total_steps = warmup + steps
        synchronize(device)
        wall, cpu = time.perf_counter(), time.process_time()
        trainer.fit()
        synchronize(device)
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    images = steps * batch
    record = {"method": method, "recipe": recipe, "model": trainer.model.name, "device": device,
              "width": trainer.model.config.width, "batch": batch, "timed_steps": steps, "warmup_steps": warmup,
              "amp_bf16": trainer.amp, "channels_last": trainer.channels_last,
              "parameters": trainer.model.parameter_count(), "images_per_s": round(images / wall, 2),
              "wall_seconds": round(wall, 2)}
    if device == "cpu":
        record.update({"cpu_seconds": round(cpu, 2), "images_per_cpu_s": round(images / cpu, 2)})
    return record


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python bench/training.py", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--methods", default=",".join(METHODS), help=f"comma-separated, from {', '.join(METHODS)}")
    parser.add_argument("--data", type=Path, default=TRAIN_SET, help=f"packed training set (default {TRAIN_SET})")
    parser.add_argument("--images", type=int, default=1024, help="size of the subset trained on (default 1024)")
    parser.add_argument("--steps", type=int, default=10, help="timed steps per method (default 10)")
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps first (default 3)")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1)")
    parser.add_argument("--gpu-batch", type=int, default=128, help="batch size on the GPU (default 128)")
    parser.add_argument("--no-gpu", action="store_true", help="skip the GPU run even when CUDA exists")
    args = parser.parse_args(argv)
    methods = [m for m in args.methods.split(",") if m]
    unknown = sorted(set(methods) - set(METHODS))
    if unknown:
        parser.error(f"unknown method(s) {unknown}; known: {', '.join(METHODS)}")
    if not args.data.is_file():
        parser.error(f"{args.data}: no packed training set (python -m train.prepare --dataset "
                     "facescope-small-train --out cache/packed/facescope-small-train.npz)")
    torch.set_num_threads(args.threads)
    gpu = torch.cuda.is_available() and not args.no_gpu
    if gpu:
        torch.backends.cudnn.benchmark = True
    load_before = os.getloadavg()
    records = []
    with tempfile.TemporaryDirectory(prefix="facescope-bench-data-") as folder:
        data = PackedFaces(small_train_set(args.data, args.images, Path(folder)))
        runs = [("cpu", 32)] + ([("cuda", args.gpu_batch)] if gpu else [])
        for device, batch in runs:
            for method in methods:
                records.append(throughput(method, data, device, batch, args.warmup, args.steps))
                print(records[-1], flush=True)
    gpu_name = torch.cuda.get_device_name(0) if gpu else "no GPU in this session"
    rows = []
    for method in methods:
        cpu = next(r for r in records if r["method"] == method and r["device"] == "cpu")
        cuda = next((r for r in records if r["method"] == method and r["device"] == "cuda"), None)
        rows.append([method, cpu["model"], f"{cpu['images_per_s']:.1f}", f"{cpu['images_per_cpu_s']:.1f}",
                     f"{cuda['images_per_s']:.0f} ({cuda['model']})" if cuda else "-"])
    table = (f"CPU: width 0.25, GDC head, batch 32, {args.threads} thread(s), {args.steps} timed steps after "
             f"{args.warmup} warm-up, {data.num_classes} classes; load average {load_before[0]:.1f} at the start. "
             f"GPU: {gpu_name}" + (f", IR-50 x1.0 at 112 px, bf16 autocast, channels_last, "
                                   f"batch {args.gpu_batch}" if gpu else "") + ".\n\n"
             + markdown_table(["method", "CPU model", "CPU images/s (wall)", "CPU images/s (per CPU second)",
                               "GPU images/s"], rows))
    payload = {"gpu": gpu_name, "threads": args.threads, "train_subset_images": args.images,
               "classes": data.num_classes, "load_average_before": [round(v, 2) for v in load_before],
               "load_average_after": [round(v, 2) for v in os.getloadavg()], "runs": records}
    print(table)
    print(f"wrote {write_results('training', payload, table)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
