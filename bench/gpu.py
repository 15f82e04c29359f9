"""The GPU check: does every recipe train on a GPU, how far do the class heads scale, and how fast
is IR-50 - from this repository alone (the faces are synthetic, made on the device).

    bash bench/gpu.sh          # one GPU, sized for under 8 minutes; writes bench/results/gpu.{json,md}
    bash bench/gpu.sh --cpu    # the same checks at toy sizes on the CPU (tests/test_gpu_bench.py)

Checks, each recorded as passed or with its error, the next one run either way:
- recipes: every recipe in train/configs, a few steps through the real engine with bf16 autocast
  and again with amp off: final loss, wall time, peak device memory;
- heads: the class head alone (ArcFace, batch 128) at MS1MV2's 85,742 and WebFace42M's 2,059,906
  classes, replicated and as PartialFC at sample rate 0.1: step time and peak memory;
- throughput: IR-50 training images/s through the engine (data loader, uint8 to the device,
  bf16, channels_last) and on one batch kept on the device (the ceiling the data path can reach);
- process group: a world-size-1 NCCL group (gloo on the CPU): the collectives PartialFC uses,
  with their backward, and a PartialFC training run inside the group;
- evaluation: zoo checkpoints embed on the device as on the CPU, and explain there;
- sranet_cost: SRANet light's inference time over IR-50's, fp32 as the paper timed it on a GPU.
"""
from __future__ import annotations

import argparse
import contextlib
import os
import socket
import sys
import tempfile
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, List

import numpy as np
import torch
import torch.distributed as dist

from bench.common import write_results
from train.config import load_recipe, recipe_names
from train import distributed
from train.data import PackedFaces
from train.engine import Trainer
from train.heads import build_head
from train.steps import training_step
import zoo
from zoo.tables import markdown_table

MS1M, WEBFACE42M = 85_742, 2_059_906
EVALUATED = ("mobilefacenet.fss-ft", "scan-mobilefacenet.fss-ft")
# Toy sizes: the IR-50 recipes' methods on IR-18 (HPDA on MobileFaceNet, it has no IR-18) at width 0.25.
TINY_MODELS = {"ir50": "ir18", "scan-ir50": "scan-ir18", "sranet-ir50": "sranet-ir18", "arface-ir50": "arface-ir18",
               "hpda-ir50": "hpda-mobilefacenet"}


@dataclass(frozen=True)
class Sizes:
    device: str
    faces: int              # synthetic training faces
    classes: int            # their identities
    batch: int              # per step, the recipes
    recipe_steps: int
    head_classes: tuple
    head_steps: int
    throughput_model: str
    throughput_batch: int
    compile: str            # torch.compile's backend for the compiled throughput row
    warmup: int
    timed: int

    def shrink(self, config_name: str) -> List[str]:
        """Overrides that make a recipe toy-sized on the CPU (none on the GPU)."""
        name = load_recipe(config_name)["model"]["name"]
        if self.device == "cuda" or name not in TINY_MODELS:
            return []
        return [f"model.name='{TINY_MODELS[name]}'", "model.width=0.25",
                *([] if name.startswith("hpda") else ["model.head='gdc'"])]


GPU = Sizes("cuda", faces=4096, classes=1000, batch=64, recipe_steps=3, head_classes=(MS1M, WEBFACE42M),
            head_steps=20, throughput_model="ir50", throughput_batch=256, compile="inductor",
            warmup=10, timed=30)
CPU = Sizes("cpu", faces=64, classes=16, batch=8, recipe_steps=1, head_classes=(MS1M // 100, WEBFACE42M // 100),
            head_steps=2, throughput_model="ir18", throughput_batch=8, compile="eager",
            warmup=1, timed=2)  # "eager": tracing only, inductor takes minutes on a CPU


def synthetic_faces(sizes: Sizes, folder: Path) -> PackedFaces:
    """Random uint8 faces and labels, drawn on the device, packed as train.prepare packs them."""
    generator = torch.Generator(sizes.device).manual_seed(0)
    images = torch.randint(0, 256, (sizes.faces, 112, 112, 3), dtype=torch.uint8, device=sizes.device,
                           generator=generator)
    labels = torch.arange(sizes.faces, device=sizes.device) % sizes.classes
    path = folder / "synthetic.npz"
    np.savez(path, images=images.cpu().numpy(), labels=labels.cpu().numpy())
    return PackedFaces(path)


def synchronize(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


@contextlib.contextmanager
def measured(device: str, into: Dict):
    """Adds `seconds` (wall, device work included) and `peak_gib` (CUDA's peak allocation) to `into`."""
    if device == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    synchronize(device)
    start = time.perf_counter()
    yield into
    synchronize(device)
    into["seconds"] = round(time.perf_counter() - start, 2)
    into["peak_gib"] = round(torch.cuda.max_memory_allocated() / 2 ** 30, 2) if device == "cuda" else None


def trainer_for(recipe: str, overrides: List[str], sizes: Sizes, data: PackedFaces, folder: Path) -> Trainer:
    """The recipe at `sizes`, on the synthetic faces; `overrides` last."""
    config = load_recipe(recipe, [f"optim.batch_size={sizes.batch}", "run.checkpoint_every=1000000",
                                  *sizes.shrink(recipe), *overrides])
    return Trainer(config, data, folder, device=sizes.device, progress=False)


def check_recipes(sizes: Sizes, data: PackedFaces, folder: Path) -> List[Dict]:
    rows = []
    for recipe in recipe_names():
        for amp in (True, False):
            row = {"recipe": recipe, "amp": "bf16" if amp else "off"}
            try:
                run_recipe(row, sizes, data, folder / f"{recipe}-{row['amp']}")
                row["passed"] = True
            except Exception as error:  # recorded; the other recipes still run
                row.update(passed=False, error=describe(error))
            rows.append(row)
    return rows


def run_recipe(row: Dict, sizes: Sizes, data: PackedFaces, folder: Path) -> None:
    """A few steps of `row`'s recipe with its amp setting; its trainer is gone when this returns,
    so the next recipe's peak memory is its own."""
    with measured(sizes.device, row):
        trainer = trainer_for(row["recipe"], [f"run.max_steps={sizes.recipe_steps}",
                                              f"run.amp={'true' if row['amp'] == 'bf16' else 'false'}"],
                              sizes, data, folder)
        row.update(model=trainer.model.name, loss=round(trainer.fit()["loss"], 4))


def check_heads(sizes: Sizes, data: PackedFaces, folder: Path) -> List[Dict]:
    rows = []
    for classes in sizes.head_classes:
        for sharded in (False, True):
            config = load_recipe("baseline", [f"partial_fc.enabled={str(sharded).lower()}", "partial_fc.sample_rate=0.1"])
            row = {"classes": classes, "head": "PartialFC 0.1" if sharded else "replicated"}
            head = build_head(config, classes, 512, 128, 0, 1).to(sizes.device)
            optimizer = torch.optim.SGD(head.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4)
            embeddings = torch.randn(128, 512, device=sizes.device, requires_grad=True)

            def step():  # fresh labels every step: a head fitting one batch would report a loss of 0
                loss, _ = head.loss(embeddings, torch.randint(classes, (128,), device=sizes.device))
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
                return loss

            step()  # the first step allocates the momentum buffers and picks kernels: not timed
            with measured(sizes.device, row):
                for _ in range(sizes.head_steps):
                    loss = step()
            row.update(ms_per_step=round(1000 * row["seconds"] / sizes.head_steps, 1), loss=round(loss.item(), 3))
            rows.append(row)
            del head, optimizer
    return rows


def check_throughput(sizes: Sizes, data: PackedFaces, folder: Path) -> List[Dict]:
    """IR-50 training images/s through the whole engine, eager and under torch.compile, and the eager
    model on one batch kept on the device (the ceiling the data path can reach); each timed over
    `sizes.timed` steps after `sizes.warmup` (cuDNN's autotuning, compilation)."""
    engine, trainer = engine_throughput(sizes, data, folder, compiled=None)
    images, labels = trainer.on_device(*next(data.in_order(sizes.throughput_batch)))
    for _ in range(sizes.warmup):
        training_step(trainer, images, labels, scored=False)
    ceiling = {"path": "one batch on the device", "compile": "off"}
    with measured(sizes.device, ceiling):
        for _ in range(sizes.timed):
            training_step(trainer, images, labels, scored=False)
    del trainer, images, labels
    try:
        compiled, _ = engine_throughput(sizes, data, folder, compiled=sizes.compile)
    except Exception as error:  # recorded: the eager rows still stand
        compiled = {"path": "engine", "compile": sizes.compile, "passed": False, "error": describe(error)}
    return [engine, with_images_per_s(ceiling, sizes, engine), compiled]


def engine_throughput(sizes: Sizes, data: PackedFaces, folder: Path, compiled):
    """The baseline recipe on the throughput model through the whole engine: its row, and the trainer."""
    trainer = trainer_for("baseline", [f"model.name='{sizes.throughput_model}'", "run.log_every=1000000",
                                       f"optim.batch_size={sizes.throughput_batch}",
                                       f"run.compile={repr(compiled) if compiled else 'false'}"],
                          sizes, data, folder / f"throughput-{compiled or 'eager'}")
    trainer.save_state = lambda: None  # a throughput run keeps no checkpoints
    row = {"path": "engine (data loader + device preprocessing)", "compile": compiled or "off",
           "model": trainer.model.name, "bf16": trainer.amp, "channels_last": trainer.channels_last}
    trainer.total_steps = sizes.warmup
    trainer.fit()
    trainer.total_steps += sizes.timed
    with measured(sizes.device, row):
        trainer.fit()
    return with_images_per_s(row, sizes), trainer


def with_images_per_s(row: Dict, sizes: Sizes, like: Dict = None) -> Dict:
    """`row` with its images/s (and the model columns of `like`, a row of the same trainer)."""
    row.update({key: like[key] for key in ("model", "bf16", "channels_last")} if like else {})
    row.update(batch=sizes.throughput_batch, images_per_s=round(sizes.timed * sizes.throughput_batch / row["seconds"], 1))
    return row


def check_process_group(sizes: Sizes, data: PackedFaces, folder: Path) -> List[Dict]:
    backend = "nccl" if sizes.device == "cuda" else "gloo"
    dist.init_process_group(backend, init_method=f"tcp://127.0.0.1:{free_port()}", rank=0, world_size=1)
    try:
        total = torch.ones(4, device=sizes.device)
        dist.all_reduce(total)
        rows = torch.randn(8, 4, device=sizes.device, requires_grad=True)
        # PartialFC's two collectives themselves (the public helpers skip them at world size 1)
        gathered = distributed._GatherRows.apply(rows)
        exchanged = distributed._Exchange.apply(gathered.flatten(), [32], [32])
        exchanged.sum().backward()
        assert torch.equal(rows.grad, torch.ones_like(rows)), "a collective's backward lost the gradient"
        trainer = trainer_for("baseline", ["partial_fc.enabled=true", "partial_fc.sample_rate=0.1",
                                           f"run.max_steps={sizes.recipe_steps}"], sizes, data, folder / "group")
        row = {"backend": backend, "world_size": dist.get_world_size(), "all_reduce": total.tolist()[0]}
        row["partial_fc_loss"] = round(trainer.fit()["loss"], 4)
        return [row]
    finally:
        dist.destroy_process_group()


def check_evaluation(sizes: Sizes, data: PackedFaces, folder: Path) -> List[Dict]:
    faces = data.images[:64]
    rows = []
    for name in EVALUATED:
        model = zoo.load(name)
        reference = model.embed(model.preprocess(faces))
        model.to(sizes.device)
        row = {"model": name}
        with measured(sizes.device, row):
            embedded = model.embed(model.preprocess(faces.to(sizes.device))).cpu()
        row["min_cosine_to_cpu"] = round(float((reference * embedded).sum(dim=1).min()), 5)
        try:
            model.explain(model.preprocess(faces[:2].to(sizes.device)))
            row.update(explain="works", passed=True)
        except Exception as error:  # recorded: the check fails, the next model still runs
            row.update(explain=describe(error), passed=False)
        rows.append(row)
    return rows


# The paper's costs (ResNet-50, Titan XP, SPEC.md): 14.31 ms plain, 19.71 ms with light SSA (1.38x),
# 18.34 ms with light SCA (1.28x); no figure for both together.
SRANET_VARIANTS = {"SCA + SSA": {}, "SSA only (paper 1.38x)": {"channel_attention": False},
                   "SCA only (paper 1.28x)": {"spatial_attention": False}}


def check_sranet_cost(sizes: Sizes, data: PackedFaces, folder: Path) -> List[Dict]:
    """SRANet light's inference time against its plain backbone on the device, as the paper timed
    it on a GPU: fp32, eval mode, batch 1 and 32, each variant and the plain model taking turns
    (wall time, synchronised), the ratio the median of the per-round ratios."""
    model = sizes.throughput_model
    width = {} if sizes.device == "cuda" else {"width": 0.25}
    torch.manual_seed(0)
    models = {"plain": zoo.build(model, **width)}
    for label, options in SRANET_VARIANTS.items():
        torch.manual_seed(0)
        models[label] = zoo.build(f"sranet-{model}", **width, **options)
    for network in models.values():
        network.eval().to(sizes.device)
    rows = []
    with torch.inference_mode():
        for batch in (1, 32):
            faces = torch.randn(batch, 3, 112, 112, device=sizes.device)
            seconds = {name: [] for name in models}
            for round_ in range(sizes.warmup + sizes.timed):
                for name, network in models.items():
                    synchronize(sizes.device)
                    start = time.perf_counter()
                    network.embed(faces)
                    synchronize(sizes.device)
                    if round_ >= sizes.warmup:
                        seconds[name].append(time.perf_counter() - start)
            plain = seconds.pop("plain")
            for label, times in seconds.items():
                rows.append({"backbone": models["plain"].name, "sranet": label, "batch": batch,
                             "plain_ms": round(1000 * float(np.median(plain)), 2),
                             "sranet_ms": round(1000 * float(np.median(times)), 2),
                             "ratio": round(float(np.median(np.array(times) / np.array(plain))), 3)})
    return rows


CHECKS: Dict[str, Callable] = {"recipes": check_recipes, "heads": check_heads, "throughput": check_throughput,
                               "process_group": check_process_group, "evaluation": check_evaluation,
                               "sranet_cost": check_sranet_cost}


def describe(error: Exception) -> str:
    return f"{type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}"[:300]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def report(results: Dict[str, Dict], sizes: Sizes) -> str:
    """The markdown: one table per check, or its error."""
    total = sum(result["seconds"] for result in results.values())
    parts = [f"Synthetic faces made on the device ({sizes.faces} of {sizes.classes} identities), recipe batch "
             f"{sizes.batch}; all checks {total:.0f} s."]
    for name, result in results.items():
        parts.append(f"#### {name} ({'passed' if result['passed'] else 'FAILED'}, {result['seconds']} s)")
        if not result["passed"]:
            parts.append(f"failed: {result['error']}")
            continue
        columns = list(dict.fromkeys(key for row in result["rows"] for key in row))
        parts.append(markdown_table(columns, [["-" if row.get(c) is None else str(row.get(c)) for c in columns]
                                              for row in result["rows"]]))
    parts.append(f"Reproduce: `bash bench/gpu.sh{' --cpu' if sizes.device == 'cpu' else ''}`")
    return "\n\n".join(parts) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="bash bench/gpu.sh", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cpu", action="store_true", help="toy sizes on the CPU (gloo instead of NCCL)")
    parser.add_argument("--checks", default=",".join(CHECKS), help=f"comma-separated, from {', '.join(CHECKS)}")
    args = parser.parse_args(argv)
    sizes = CPU if args.cpu else GPU
    if sizes.device == "cuda" and not torch.cuda.is_available():
        parser.error("no CUDA device here; --cpu runs the checks at toy sizes on the CPU")
    results: Dict[str, Dict] = {}
    with tempfile.TemporaryDirectory(prefix="facescope-gpu-check-") as scratch:
        folder = Path(scratch)
        os.environ.setdefault("FACESCOPE_CACHE", str(folder / "cache"))  # class centres stay out of cache/
        data = synthetic_faces(sizes, folder)
        for name in args.checks.split(","):
            start = time.perf_counter()
            try:
                rows = CHECKS[name](sizes, data, folder)
                passed = all(row.get("passed", True) for row in rows)
                results[name] = {"passed": passed, "rows": rows}
            except Exception as error:  # recorded; the other checks still run
                traceback.print_exc()
                results[name] = {"passed": False, "error": describe(error)}
            results[name]["seconds"] = round(time.perf_counter() - start, 1)
            print(f"{name}: {'passed' if results[name]['passed'] else 'FAILED'} "
                  f"in {results[name]['seconds']} s", flush=True)
            # written after every check, so a run stopped by its time limit still leaves what it measured
            written = write_results('gpu-cpu' if args.cpu else 'gpu', {'sizes': sizes.__dict__, 'checks': results},
                                    report(results, sizes))
    print(report(results, sizes))
    print(f"wrote {written}")
    return 0 if all(r["passed"] for r in results.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
