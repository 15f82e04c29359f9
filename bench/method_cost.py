"""What two methods cost against their own backbone, each pair timed in alternation in one process.

- SRANet inference (issue 15: <= 1.38x, the paper's light-SSA cost): `embed` of SRANet light
  against the plain backbone, at the paper's IR-50 x1.0 (untrained builds; SCA + SSA, and each
  alone as the paper timed them: 1.38x SSA, 1.28x SCA on a Titan XP) and at the zoo's
  MobileFaceNet x1.0, 128-d (the embedded sranet-mobilefacenet.fss-ft against
  mobilefacenet.fss-ft), batch 1 and 32, with faces and weights in contiguous (NCHW) and in
  channels_last memory: the plain networks' speed depends on the layout, so each ratio compares
  one layout (faces in channels_last before weights in NCHW would make every conv convert its
  kernel on every call: 30% of IR-50's time at batch 1).
- SCAN training (issue 15: >= 0.87x the plain model's images/s): training steps through the
  real engine (train.engine.Trainer, no checkpoints written), SCAN against the plain model on the
  same recipe: ir18 x0.25 with a GDC head on the scan and baseline recipes (what issue 15
  measured with bench/training.py), and MobileFaceNet x1.0 on the zoo's fine-tuning recipe
  (from mobilefacenet.y1, as train/zoo_finetune.sh trains the embedded zoo); batch 32, fp32,
  trained on 256 real LFW faces (resized crops: throughput does not depend on alignment).

Each round runs every model of a pair once, in turn, so a busy machine slows both alike; times
are process CPU time (one thread), ratios the median of the per-round ratios. The FLOP floor is
the arithmetic each method adds, the floor of its ratio unless its kernels run faster than the
backbone's: SRANet's forward FLOPs over the backbone's (torch.utils.flop_counter: convolutions
and matrix products); for SCAN 1 + F_sac / 3F, F the forward FLOPs, F_sac those of the scale
attention convs: a plain step does about three forwards' arithmetic (forward, input and weight
gradients) and SCAN one weight gradient more per scale attention conv (the flop counter itself
miscounts the backward of depthwise convs); with the option rmo_kernels='layer' (RMO trains k_s
and k_i alike) SCAN's backward is a plain conv's, floor 1. Writes bench/results/method_cost.{json,md}.

    python bench/method_cost.py
    python bench/method_cost.py --rounds 2 --skip-paper-size --training-steps 1    # a quick look
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable, Dict, List

import numpy as np
import torch
from PIL import Image
from torch.utils.flop_counter import FlopCounterMode

REPO = Path(__file__).resolve().parents[1]
from bench.common import write_results
import zoo
from train.config import load_recipe
from train.data import PackedFaces
from train.engine import Trainer
from zoo.data import read_image_folder
from zoo.data.paths import data_root
from zoo.methods.scan import ScaleAttentionConv2d
from zoo.tables import markdown_table

SRANET_TARGET, SCAN_TARGET = 1.38, 0.87
# label -> (plain model, SRANet model): {"load": zoo name} or {"build": architecture, **options}
# The paper timed ResNet-50 on a Titan XP (SPEC.md): light SSA 1.38x, light SCA 1.28x, no figure for both.
SRANET_PAIRS = {
    "ir50 x1.0 (paper)": ({"build": "ir50", "width": 1.0}, {"build": "sranet-ir50", "width": 1.0}),
    "ir50 x1.0, SSA only (paper: 1.38x)": ({"build": "ir50", "width": 1.0},
                                           {"build": "sranet-ir50", "width": 1.0, "channel_attention": False}),
    "ir50 x1.0, SCA only (paper: 1.28x)": ({"build": "ir50", "width": 1.0},
                                           {"build": "sranet-ir50", "width": 1.0, "spatial_attention": False}),
    "mobilefacenet x1.0, 128-d (zoo)": ({"load": "mobilefacenet.fss-ft"}, {"load": "sranet-mobilefacenet.fss-ft"}),
}
PAPER_SIZE = "ir50 x1.0"  # the pairs at the paper's size (slow: fewer rounds, --skip-paper-size)
LAYOUTS = {"contiguous": torch.contiguous_format, "channels_last": torch.channels_last}
CPU_RUN = ["optim.batch_size=32", "optim.warmup_steps=0", "run.log_every=1000000", "run.checkpoint_every=1000000",
           "run.amp=false", "run.channels_last=false", "run.record_every_epoch=false"]
SMALL_IR18 = ["model.width=0.25", "model.head='gdc'", "loss.s=32.0"]  # bench/training.py's CPU configuration
# label -> (plain (recipe, overrides), SCAN (recipe, overrides))
SCAN_PAIRS = {
    "ir18 x0.25, GDC (as issue 15 measured)": (("baseline", ["model.name='ir18'", *SMALL_IR18]),
                                               ("scan", ["model.name='scan-ir18'", *SMALL_IR18])),
    "mobilefacenet x1.0 (the zoo's fine-tuning)": (("finetune", ["model.name='mobilefacenet'"]),
                                                   ("finetune", ["model.name='scan-mobilefacenet'"])),
    "ir18 x0.25, GDC, RMO training k_s and k_i (rmo_kernels='layer')": (
        ("baseline", ["model.name='ir18'", *SMALL_IR18]),
        ("scan", ["model.name='scan-ir18'", *SMALL_IR18, "model.rmo_kernels='layer'"])),
    "mobilefacenet x1.0, RMO training k_s and k_i (rmo_kernels='layer')": (
        ("finetune", ["model.name='mobilefacenet'"]),
        ("finetune", ["model.name='scan-mobilefacenet'", "model.rmo_kernels='layer'"])),
}


def alternate(calls: Dict[str, Callable[[], object]], rounds: int, warmup: int = 1) -> Dict[str, List[float]]:
    """Process CPU seconds of each call, `rounds` rounds, the calls taking turns within a round."""
    for call in calls.values():
        for _ in range(warmup):  # oneDNN builds its kernels on the first calls
            call()
    seconds: Dict[str, List[float]] = {name: [] for name in calls}
    for _ in range(rounds):
        for name, call in calls.items():
            start = time.process_time()
            call()
            seconds[name].append(time.process_time() - start)
    return seconds


def median_ratio(numerator: List[float], denominator: List[float]) -> float:
    return round(statistics.median(a / b for a, b in zip(numerator, denominator)), 3)


def flops(run: Callable[[], object]) -> int:
    with FlopCounterMode(display=False) as counter:
        run()
    return counter.get_total_flops()


def scan_floor(model: zoo.FaceModel) -> float:
    """1 + F_sac / 3F for a SCAN model (see the module docstring); 1 when RMO trains the whole
    kernel (rmo_kernels='layer': no extra weight gradient)."""
    if model.options.get("rmo_kernels") == "layer":
        return 1.0
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model.eval()(torch.zeros(1, 3, 112, 112))
    counts, prefix = counter.get_flop_counts(), type(model).__name__
    scale_convs = sum(sum(counts[f"{prefix}.{name}"].values()) for name, module in model.named_modules()
                      if isinstance(module, ScaleAttentionConv2d))
    return round(1 + scale_convs / (3 * counter.get_total_flops()), 3)


def make_model(spec: Dict) -> zoo.FaceModel:
    if "load" in spec:
        return zoo.load(spec["load"]).eval()
    torch.manual_seed(0)
    return zoo.build(spec["build"], **{k: v for k, v in spec.items() if k != "build"}).eval()


def sranet_inference(label: str, rounds: int) -> List[Dict]:
    """One row per layout and batch: CPU ms/image of each model's `embed` and SRANet's ratio."""
    plain, sranet = (make_model(spec) for spec in SRANET_PAIRS[label])
    rows = []
    with torch.inference_mode():
        flop_floor = round(flops(lambda: sranet(torch.zeros(1, 3, 112, 112)))
                           / flops(lambda: plain(torch.zeros(1, 3, 112, 112))), 3)
        for layout, memory_format in LAYOUTS.items():
            for model in (plain, sranet):  # weights in the faces' layout, or every conv converts its kernel each call
                model.to(memory_format=memory_format)
            for batch, batch_rounds in ((1, rounds * 4), (32, rounds)):
                images = torch.randn(batch, 3, 112, 112).clamp(-1, 1).contiguous(memory_format=memory_format)
                seconds = alternate({"plain": lambda: plain.embed(images), "sranet": lambda: sranet.embed(images)},
                                    batch_rounds)
                rows.append({"pair": label, "plain": plain.name, "sranet": sranet.name, "layout": layout, "batch": batch,
                             "rounds": batch_rounds, "flop_floor": flop_floor,
                             **{f"{name}_cpu_ms_per_image": round(1000 * statistics.median(s) / batch, 3)
                                for name, s in seconds.items()},
                             "ratio": median_ratio(seconds["sranet"], seconds["plain"])})
                print(rows[-1], flush=True)
    return rows


def lfw_training_faces(folder: Path, images: int) -> Path:
    """A packed training set (train.prepare's .npz layout) of `images` real LFW faces, four per
    person, resized to 112x112."""
    faces = read_image_folder(data_root() / "lfw" / "images", min_images=4)
    first = {}
    for index, label in enumerate(faces.labels):
        first.setdefault(int(label), []).append(index)
    picked = [i for indices in first.values() for i in indices[:4]][:images]
    arrays = [np.asarray(Image.fromarray(faces[i][0]).resize((112, 112), Image.BILINEAR)) for i in picked]
    _, labels = np.unique([int(faces.labels[i]) for i in picked], return_inverse=True)
    path = folder / "lfw-faces.npz"
    np.savez(path, images=np.stack(arrays), labels=labels.astype(np.int64))
    return path


def trainer(recipe: str, overrides: List[str], data: PackedFaces, run_dir: Path) -> Trainer:
    trainer = Trainer(load_recipe(recipe, [*overrides, *CPU_RUN]), data, run_dir, device="cpu", progress=False)
    trainer.save_state = lambda: None  # a throughput benchmark keeps no checkpoints
    return trainer


def train_steps(trainer: Trainer, steps: int) -> None:
    trainer.total_steps = trainer.step + steps
    trainer.fit()


def scan_training(label: str, data: PackedFaces, rounds: int, steps: int, run_dir: Path) -> Dict:
    (plain_recipe, plain_overrides), (scan_recipe, scan_overrides) = SCAN_PAIRS[label]
    plain = trainer(plain_recipe, plain_overrides, data, run_dir / "plain")
    scan = trainer(scan_recipe, scan_overrides, data, run_dir / "scan")
    flop_floor = scan_floor(scan.model)
    seconds = alternate({"plain": lambda: train_steps(plain, steps), "scan": lambda: train_steps(scan, steps)}, rounds)
    images = steps * plain.per_rank_batch
    row = {"pair": label, "plain": plain.model.name, "scan": scan.model.name, "width": plain.model.config.width,
           "batch": plain.per_rank_batch, "steps_per_round": steps, "rounds": rounds, "flop_floor": flop_floor,
           **{f"{name}_images_per_cpu_s": round(images / statistics.median(s), 2) for name, s in seconds.items()},
           "images_per_s_ratio": median_ratio(seconds["plain"], seconds["scan"])}
    print(row, flush=True)
    return row


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python bench/method_cost.py", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=5,
                        help="alternation rounds: inference at batch 32 and training (batch 1: 4x; default 5)")
    parser.add_argument("--training-steps", type=int, default=2, help="training steps per model per round (default 2)")
    parser.add_argument("--skip-paper-size", action="store_true", help="leave out the SRANet pairs on IR-50 x1.0")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    load_before = os.getloadavg()
    inference = [row for label in SRANET_PAIRS if not (args.skip_paper_size and label.startswith(PAPER_SIZE))
                 for row in sranet_inference(label, max(3, args.rounds // 2) if label.startswith(PAPER_SIZE)
                                             else args.rounds)]
    with tempfile.TemporaryDirectory(prefix="facescope-method-cost-") as folder:
        data = PackedFaces(lfw_training_faces(Path(folder), 256))
        training = [scan_training(label, data, args.rounds, args.training_steps, Path(folder)) for label in SCAN_PAIRS]
    inference_rows = [[r["pair"], r["layout"], r["batch"], f"{r['plain_cpu_ms_per_image']:.2f}",
                       f"{r['sranet_cpu_ms_per_image']:.2f}", f"{r['ratio']:.2f}x", f"{r['flop_floor']:.2f}x"]
                      for r in inference]
    training_rows = [[r["pair"], f"{r['plain_images_per_cpu_s']:.1f}", f"{r['scan_images_per_cpu_s']:.1f}",
                      f"{r['images_per_s_ratio']:.2f}x", f"{1 / r['images_per_s_ratio']:.2f}x",
                      f"{r['flop_floor']:.2f}x"] for r in training]
    table = (f"One thread; each pair timed in alternation in one process (ratio: median of the per-round CPU-time "
             f"ratios); load average {load_before[0]:.1f} at the start. FLOP floor: the ratio of the arithmetic alone "
             "(convolutions and matrix products; see bench/method_cost.py).\n\n"
             f"SRANet light `embed` against its backbone (issue 15's target for SCA + SSA: <= {SRANET_TARGET:.2f}x; "
             "the paper timed each alone on a Titan XP: 1.38x light SSA, 1.28x light SCA):\n\n"
             + markdown_table(["backbone", "input layout", "batch", "plain CPU ms/image", "SRANet CPU ms/image",
                               "SRANet / plain", "FLOP floor"], inference_rows)
             + f"\nSCAN training steps through the engine against the plain model (batch 32, fp32; issue 15's target: "
               f">= {SCAN_TARGET:.2f}x the images/s):\n\n"
             + markdown_table(["backbone", "plain images/CPU-s", "SCAN images/CPU-s", "SCAN / plain images/s",
                               "SCAN / plain time", "FLOP floor"], training_rows))
    payload = {"threads": 1, "rounds": args.rounds, "training_steps_per_round": args.training_steps,
               "load_average_before": [round(v, 2) for v in load_before],
               "load_average_after": [round(v, 2) for v in os.getloadavg()],
               "sranet_inference": inference, "scan_training": training}
    print(table)
    print(f"wrote {write_results('method_cost', payload, table)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
