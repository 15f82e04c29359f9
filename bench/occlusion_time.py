"""Time of the occlusion lab for one pair: a 16 px grey patch at stride 8 over a 112 px face
(169 occluded copies plus the five landmark patches, and a patch policy's six), per zoo model and
peer, torch on one thread as the app serves it (`python app.py --threads 1`, its default). Wall time
is what a user waits; the process's CPU time is the work itself, which other jobs on a shared
machine inflate far less (with one thread nothing spins waiting for a descheduled sibling).

Then what makes it fast, on one model: the same 174 copies embedded with the model as loaded or
with its BatchNorms folded into the convolutions (`analysis.occlusion.inference_copy`), in batches
of 64 or 32, the four ways timed in alternation so the machine's other load falls on all alike.

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
from analysis.occlusion import embed_batches, greyed_copies, inference_copy
from bench.common import write_results
from zoo.data import load_image, make_aligner
from zoo.peers import peer_names
from zoo.tables import markdown_table

EXAMPLES = zoo.LOCAL_ZOO.parent.parent / "app" / "examples"
ABLATION_BATCHES = (64, 32)


def time_models(a: np.ndarray, b: np.ndarray, rounds: int) -> List[Dict]:
    """Median wall and CPU seconds of the occlusion lab per local zoo model and peer."""
    rows = []
    for name in zoo.local_models() + peer_names():
        model = zoo.load(name)
        analysis.occlusion_sensitivity(model, a, b)  # warm-up
        seconds, cpu = [], []
        for _ in range(rounds):
            start, start_cpu = time.perf_counter(), time.process_time()
            analysis.occlusion_sensitivity(model, a, b, patch=16, stride=8)
            seconds.append(time.perf_counter() - start)
            cpu.append(time.process_time() - start_cpu)
        rows.append({"model": name, "seconds": float(np.median(seconds)), "cpu_seconds": float(np.median(cpu))})
        print(rows[-1], flush=True)
    return rows


def ablation(name: str, a: np.ndarray, rounds: int) -> List[Dict]:
    """Median wall and CPU seconds of embedding the lab's 174 copies of `a` each way, in alternation."""
    model = zoo.load(name).eval()
    corners = range(0, 112 - 16 + 1, 8)
    copies = greyed_copies(a, [[(x, y, x + 16, y + 16)] for y in corners for x in corners]
                           + [[box] for box in analysis.landmark_boxes().values()])
    ways = {(label, batch): net for label, net in (("as loaded", model), ("BatchNorm folded", inference_copy(model)))
            for batch in ABLATION_BATCHES}
    seconds, cpu = defaultdict(list), defaultdict(list)
    with torch.inference_mode():
        for round_ in range(rounds + 1):  # the first round warms up
            for (label, batch), net in ways.items():
                start, start_cpu = time.perf_counter(), time.process_time()
                embed_batches(net, copies, batch)
                if round_:
                    seconds[label, batch].append(time.perf_counter() - start)
                    cpu[label, batch].append(time.process_time() - start_cpu)
    return [{"model": name, "weights": label, "batch": batch, "seconds": float(np.median(seconds[label, batch])),
             "cpu_seconds": float(np.median(cpu[label, batch]))} for label, batch in ways]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python bench/occlusion_time.py", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1, as the app)")
    parser.add_argument("--rounds", type=int, default=3, help="timed runs per model (default 3; median)")
    parser.add_argument("--ablation-model", default="mobilefacenet.y1",
                        help="the model the four ways of embedding are timed on (default mobilefacenet.y1)")
    parser.add_argument("--ablation-rounds", type=int, default=5, help="alternating rounds of the four ways (default 5)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    align = make_aligner()
    a, b = (align.align(load_image(EXAMPLES / f"leonardo_dicaprio_{k}.jpg")).image for k in (1, 2))
    load = os.getloadavg()[0]
    rows = time_models(a, b, args.rounds)
    ways = ablation(args.ablation_model, a, args.ablation_rounds)
    table = (f"A 16 px patch at stride 8 on a 112 px face (174 embeddings; up to 6 more for a patch policy), "
             f"{args.threads} torch thread{'s' if args.threads > 1 else ''}, median of {args.rounds}; load average {load:.2f} at the start, "
             f"{os.getloadavg()[0]:.2f} at the end (other jobs on the machine).\n\n"
             + markdown_table(["model", "seconds", "< 2 s", "CPU seconds (all threads)"],
                              [[r["model"], f"{r['seconds']:.2f}", "yes" if r["seconds"] < 2 else "no",
                                f"{r['cpu_seconds']:.2f}"] for r in rows])
             + f"\n\nWhat makes it fast: the 174 copies embedded by {args.ablation_model} four ways, timed in "
               f"alternation (median of {args.ablation_rounds}); the lab uses BatchNorm folded, batches of 32.\n\n"
             + markdown_table(["weights", "batch", "seconds", "CPU seconds (all threads)"],
                              [[w["weights"], w["batch"], f"{w['seconds']:.2f}", f"{w['cpu_seconds']:.2f}"]
                               for w in ways]))
    write_results("occlusion_time", {"threads": args.threads, "rounds": args.rounds, "models": rows,
                                     "ablation": ways}, table)
    print(table)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
