"""Inference cost of every registered architecture on this machine's CPU.

Parameters, and milliseconds per image at batch 1 and 32 (median of timed runs after
warm-up, torch.inference_mode, eval mode). Writes bench/results/inference.{json,md}.

    python bench/inference.py                 # all registered models at width 0.25
    python bench/inference.py --width 1.0 --models mobilefacenet,scan-folded-mobilefacenet,sranet-mobilefacenet
    python bench/inference.py --width 1.0 --models ir50,scan-folded-ir50,sranet-ir50
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch

from bench.common import write_results
import zoo
from zoo.tables import markdown_table


def ms_per_image(model: torch.nn.Module, batch: int, repeats: int) -> float:
    images = torch.randn(batch, 3, 112, 112)
    with torch.inference_mode():
        for _ in range(3):  # warm-up: oneDNN builds its kernels on the first calls
            model(images)
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            model(images)
            times.append(time.perf_counter() - start)
    return 1000 * statistics.median(times) / batch


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--width", type=float, default=0.25,
                        help="width multiplier (default 0.25: the small from-scratch zoo's; the embedded "
                             "MobileFaceNet zoo is 1.0)")
    parser.add_argument("--models", default="", help="comma-separated names (default: every registered model)")
    parser.add_argument("--repeats", type=int, default=5, help="timed runs per batch size (default 5)")
    parser.add_argument("--name", default="inference", help="results file stem (default inference)")
    args = parser.parse_args(argv)
    names = [n for n in args.models.split(",") if n] or zoo.model_names()
    rows, records = [], []
    for name in names:
        model = zoo.build(name, width=args.width).eval()
        record = {"model": name, "width": args.width, "parameters": model.parameter_count(),
                  "ms_per_image_batch1": ms_per_image(model, 1, args.repeats * 4),
                  "ms_per_image_batch32": ms_per_image(model, 32, args.repeats)}
        records.append(record)
        rows.append([name, f"{record['parameters']:,}", f"{record['ms_per_image_batch1']:.2f}",
                     f"{record['ms_per_image_batch32']:.2f}"])
        print("\t".join(str(c) for c in rows[-1]), flush=True)
    table = markdown_table(["model", "parameters", "ms/image (batch 1)", "ms/image (batch 32)"], rows)
    path = write_results(args.name, {"width": args.width, "models": records}, table)
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
