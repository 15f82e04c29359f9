"""Time a full FaceScope-small test-protocol evaluation of one model on this machine's CPU.

    python bench/eval_time.py                                # mobilefacenet.y1, warm crop cache: embedding + metrics
    python bench/eval_time.py --model mobilefacenet.y1 --cold  # empty crop cache: detection + alignment too
    python bench/eval_time.py --model ir18                   # an untrained registered architecture

Writes bench/results/eval_time.{json,md}: wall and CPU seconds, split into alignment and
embedding per protocol, plus the load average before and after - on a shared machine wall
time says as much about the neighbours as about the code; CPU seconds much less so.
"""
from __future__ import annotations

import argparse
import os
import resource
import sys
import tempfile
import time

from bench.common import write_results
from zoo import evaluate
from zoo.data import TEST_PROTOCOLS
from zoo.tables import markdown_table


def cpu_seconds() -> float:
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python bench/eval_time.py", description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="mobilefacenet.y1",
                        help="as zoo.evaluate --model (default: mobilefacenet.y1, the embedded zoo's reference)")
    parser.add_argument("--protocol", default=",".join(TEST_PROTOCOLS))
    parser.add_argument("--blur", default="0")
    parser.add_argument("--batch-size", type=int, default=evaluate.DEFAULT_BATCH)
    parser.add_argument("--workers", type=int, default=1, help="alignment processes (matters with --cold)")
    parser.add_argument("--cold", action="store_true", help="start from an empty crop cache")
    args = parser.parse_args(argv)

    eval_argv = ["--model", args.model, "--protocol", args.protocol, "--blur", args.blur,
                 "--batch-size", str(args.batch_size), "--workers", str(args.workers)]
    with tempfile.TemporaryDirectory(prefix="facescope-cold-cache-") as cold_cache:
        if args.cold:
            eval_argv += ["--cache-dir", cold_cache]
        load_before, cpu_before, start = os.getloadavg(), cpu_seconds(), time.perf_counter()
        results = evaluate.run(evaluate.build_parser().parse_args(eval_argv))
        wall, cpu = time.perf_counter() - start, cpu_seconds() - cpu_before

    rows, protocols = [], {}
    for name, entry in results["protocols"].items():
        embed = sum(c["embed_and_metrics_seconds"] for c in entry["conditions"].values())
        protocols[name] = {
            "pairs": entry["pairs_total"], "images": entry["images"],
            "fallback_alignments": entry["fallback_alignments"], "pairs_skipped": entry["pairs_skipped"],
            "align_seconds": entry["align_seconds"], "embed_and_metrics_seconds": round(embed, 1),
            "embedded_images": sum(c["embedded_images"] for c in entry["conditions"].values()),
            "accuracy": {k: round(c["accuracy"], 4) for k, c in entry["conditions"].items()},
        }
        rows.append([name, entry["pairs_total"], entry["images"], entry["fallback_alignments"],
                     entry["align_seconds"], round(embed, 1)])
    cache = "cold" if args.cold else "warm"
    payload = {"model": results["model"], "cache": cache, "conditions": results["settings"]["conditions"],
               "wall_seconds": round(wall, 1), "cpu_seconds": round(cpu, 1),
               "load_average_before": [round(v, 2) for v in load_before],
               "load_average_after": [round(v, 2) for v in os.getloadavg()], "protocols": protocols}
    table = (f"Model `{args.model}` ({results['model']['resolved_by']}), {cache} crop cache, conditions "
             f"{', '.join(payload['conditions'])}: {wall:.0f} s wall, {cpu:.0f} s CPU; load average "
             f"{load_before[0]:.1f} before, {payload['load_average_after'][0]:.1f} after.\n\n"
             + markdown_table(["protocol", "pairs", "images", "fallback alignments", "align s", "embed+metrics s"], rows))
    print(table)
    print(f"wrote {write_results('eval_time', payload, table)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
