"""Time of the occlusion lab for one pair: a 16 px grey patch at stride 8 over a 112 px face
(169 occluded copies plus the five landmark patches), per zoo model and peer, torch on 2 threads.

    python bench/occlusion_time.py                # every local zoo model and the peers
Writes bench/results/occlusion_time.{json,md}.
"""
from __future__ import annotations

import argparse
import os
import time

import numpy as np
import torch

import analysis
import zoo
from bench.common import write_results
from zoo.data import load_image, make_aligner
from zoo.peers import peer_names
from zoo.tables import markdown_table

EXAMPLES = zoo.LOCAL_ZOO.parent.parent / "app" / "examples"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python bench/occlusion_time.py", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=2, help="torch threads (default 2)")
    parser.add_argument("--rounds", type=int, default=3, help="timed runs per model (default 3; median)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    align = make_aligner()
    a, b = (align.align(load_image(EXAMPLES / f"leonardo_dicaprio_{k}.jpg")).image for k in (1, 2))
    rows = []
    for name in zoo.local_models() + peer_names():
        model = zoo.load(name)
        analysis.occlusion_sensitivity(model, a, b)  # warm-up
        seconds = []
        for _ in range(args.rounds):
            start = time.perf_counter()
            analysis.occlusion_sensitivity(model, a, b, patch=16, stride=8)
            seconds.append(time.perf_counter() - start)
        rows.append({"model": name, "seconds": float(np.median(seconds))})
        print(rows[-1], flush=True)
    table = (f"A 16 px patch at stride 8 on a 112 px face (174 embeddings), {args.threads} torch threads, median of "
             f"{args.rounds}; load average {os.getloadavg()[0]:.2f}.\n\n"
             + markdown_table(["model", "seconds", "< 2 s"], [[r["model"], f"{r['seconds']:.2f}",
                                                               "yes" if r["seconds"] < 2 else "no"] for r in rows]))
    write_results("occlusion_time", {"threads": args.threads, "rounds": args.rounds, "models": rows}, table)
    print(table)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
