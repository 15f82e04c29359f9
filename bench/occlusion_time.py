"""Time of the occlusion lab for one pair: a 16 px grey patch at stride 8 over a 112 px face
(169 occluded copies plus the five landmark patches, and a patch policy's six), per zoo model and
peer, as the app serves it: one worker thread per core, each with one torch thread (`python
app.py --threads 1`, its default), with the embeddings by onnxruntime (the app's default
runtime) and by torch (`--runtime torch`); a peer runs on its own engine.
Wall time is what a user waits; the process's CPU time is the work itself.

Then what makes it fast, on one model: the same 174 copies embedded by the model as loaded, by
its copy with BatchNorms folded into the convolutions (`analysis.occlusion.inference_copy`) and
by onnxruntime, on one worker thread or one per core, the ways timed in alternation so the
machine's other load falls on all alike.

    python bench/occlusion_time.py                # every local zoo model and the peers
Writes bench/results/occlusion_time.{json,md}.
"""
from __future__ import annotations

import argparse
import os
import time
from collections import defaultdict
from typing import Dict, List

import numpy as np
import torch

import analysis
import zoo
from analysis.occlusion import WORKERS, embed_batches, greyed_copies, inference_copy, torch_embed
from bench.common import write_results
from zoo.data import load_image, make_aligner
from zoo.peers import Peer, peer_names
from zoo.runtime import OnnxEmbedder
from zoo.tables import markdown_table

EXAMPLES = zoo.LOCAL_ZOO.parent.parent / "app" / "examples"


def timed(run, rounds: int):
    """Median wall and CPU seconds of `run()` over `rounds`, after one warm-up."""
    run()
    seconds, cpu = [], []
    for _ in range(rounds):
        start, start_cpu = time.perf_counter(), time.process_time()
        run()
        seconds.append(time.perf_counter() - start)
        cpu.append(time.process_time() - start_cpu)
    return float(np.median(seconds)), float(np.median(cpu))


def time_models(a: np.ndarray, b: np.ndarray, rounds: int) -> List[Dict]:
    """Median wall and CPU seconds of the occlusion lab per local zoo model and peer, per runtime."""
    rows = []
    for name in zoo.local_models() + peer_names():
        model = zoo.load(name)
        embeds = {"torch": None} if isinstance(model, Peer) else {"torch": None, "onnx": OnnxEmbedder(model).embed}
        row = {"model": name, "peer": isinstance(model, Peer)}
        for runtime, embed in embeds.items():
            row[runtime] = timed(lambda: analysis.occlusion_sensitivity(model, a, b, 16, 8, embed=embed), rounds)
        rows.append(row)
        print(row, flush=True)
    return rows


def ablation(name: str, a: np.ndarray, rounds: int) -> List[Dict]:
    """Median wall and CPU seconds of embedding the lab's 174 copies of `a` each way, in alternation."""
    model = zoo.load(name).eval()
    corners = range(0, 112 - 16 + 1, 8)
    copies = greyed_copies(a, [[(x, y, x + 16, y + 16)] for y in corners for x in corners]
                           + [[box] for box in analysis.landmark_boxes().values()])
    embeds = {"torch, as loaded": torch_embed(model), "torch, BatchNorm folded": torch_embed(inference_copy(model)),
              "onnxruntime": OnnxEmbedder(model).embed}
    ways = {(label, workers): embed for label, embed in embeds.items() for workers in sorted({1, WORKERS})}
    seconds, cpu = defaultdict(list), defaultdict(list)
    with torch.inference_mode():
        for round_ in range(rounds + 1):  # the first round warms up
            for (label, workers), embed in ways.items():
                start, start_cpu = time.perf_counter(), time.process_time()
                embed_batches(embed, copies, workers=workers)
                if round_:
                    seconds[label, workers].append(time.perf_counter() - start)
                    cpu[label, workers].append(time.process_time() - start_cpu)
    return [{"model": name, "embedding": label, "workers": workers,
             "seconds": float(np.median(seconds[label, workers])),
             "cpu_seconds": float(np.median(cpu[label, workers]))} for label, workers in ways]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python bench/occlusion_time.py", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1, as the app)")
    parser.add_argument("--rounds", type=int, default=3, help="timed runs per model (default 3; median)")
    parser.add_argument("--ablation-model", default="mobilefacenet.y1",
                        help="the model the ways of embedding are timed on (default mobilefacenet.y1)")
    parser.add_argument("--ablation-rounds", type=int, default=5, help="alternating rounds of the ways (default 5)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    align = make_aligner()
    a, b = (align.align(load_image(EXAMPLES / f"leonardo_dicaprio_{k}.jpg")).image for k in (1, 2))
    load = os.getloadavg()[0]
    rows = time_models(a, b, args.rounds)
    ways = ablation(args.ablation_model, a, args.ablation_rounds)
    def cell(row, runtime):
        return f"{row[runtime][0]:.2f} ({row[runtime][1]:.2f})" + (", its own engine" if row["peer"] else "")

    table = (f"A 16 px patch at stride 8 on a 112 px face (174 embeddings; up to 6 more for a patch policy), "
             f"{WORKERS} worker thread{'s' if WORKERS > 1 else ''} of {args.threads} torch thread"
             f"{'s' if args.threads > 1 else ''}, median of {args.rounds}: wall seconds (CPU seconds, all threads); "
             f"load average {load:.2f} at the start, {os.getloadavg()[0]:.2f} at the end.\n\n"
             + markdown_table(["model", "torch (--runtime torch)", "onnxruntime (the app's default)", "< 2 s as served"],
                              [[r["model"], cell(r, "torch"), cell(r, "onnx") if "onnx" in r else "-",
                                "yes" if r.get("onnx", r["torch"])[0] < 2 else "no"]
                               for r in rows])
             + f"\n\nWhat makes it fast: the 174 copies embedded by {args.ablation_model} each way, in batches of 32, "
               f"timed in alternation (median of {args.ablation_rounds}); the lab uses the BatchNorm-folded copy "
               f"(or the app's runtime) on {WORKERS} worker thread{'s' if WORKERS > 1 else ''}.\n\n"
             + markdown_table(["embedding", "worker threads", "seconds", "CPU seconds (all threads)"],
                              [[w["embedding"], w["workers"], f"{w['seconds']:.2f}", f"{w['cpu_seconds']:.2f}"]
                               for w in ways]))
    write_results("occlusion_time", {"threads": args.threads, "workers": WORKERS, "rounds": args.rounds, "models": rows,
                                     "ablation": ways}, table)
    print(table)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
