"""Time the FaceScope-small test protocols for one model, from a cold crop cache, and where the time goes.

    python bench/eval_time.py                          # mobilefacenet.fss-ft, LFW View 1 + CFP-FF + CFP-FP, blur 0/2/4
    python bench/eval_time.py --runtime torch          # the same, embeddings by torch
    python bench/eval_time.py --warm                   # with the project's crop cache (cache/) instead

The run is exactly `python -m zoo.evaluate --model M --protocol lfw-view1,cfp-ff,cfp-fp --blur 0,2,4`
with FACESCOPE_CACHE on an empty temporary folder, the ONNX export included (the target: <= 180 s
wall on 2 free cores).
On a shared machine wall time says as much about the neighbours as about the code, so the table
also gives the CPU seconds (user + sys of this process and its workers) and the load average
sampled during the run. Before it, the stages of one image are timed in one process, one thread,
on a sample of CFP-FP photos, in alternation (decode, YuNet detection, warp, cache write, each
blur, embedding by torch at the old batch of 64 and at the new default, and by onnxruntime), with
their share of the run's CPU work (cost x how many times the run does it).
Writes bench/results/eval_time.{json,md}.
"""
from __future__ import annotations

import argparse
import os
import resource
import sys
import tempfile
import threading
import time

import numpy as np
import torch

from bench.common import write_results
from zoo import evaluate
from zoo.data import AlignedFace, CropCache, TEST_PROTOCOLS, load_image, load_protocol, make_aligner, parse_degradation
from zoo.data.align import warp_to_template
from zoo.runtime import make_embedder
from zoo.tables import markdown_table

OLD_BATCH = 64  # zoo.evaluate's batch before the parallel pipeline


def cpu_seconds() -> float:
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


class LoadSampler:
    """The 1-minute load average every few seconds while a block runs (its mean and maximum)."""

    def __init__(self, every: float = 5.0):
        self.every, self.samples, self._stop = every, [os.getloadavg()[0]], threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        while not self._stop.wait(self.every):
            self.samples.append(os.getloadavg()[0])

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.samples.append(os.getloadavg()[0])


def stage_costs(model_name: str, conditions, count: int, rounds: int = 3) -> dict:
    """CPU ms per image of each stage, one thread, on `count` CFP-FP photos (median of `rounds`)."""
    torch.set_num_threads(1)
    paths = load_protocol("cfp-fp").images()[::max(1, 5901 // count)][:count]
    aligner = make_aligner()
    photos = [load_image(p) for p in paths]
    found = [(path, photo, d[0]) for path, photo in zip(paths, photos) for d in [aligner.detect(photo)] if d]
    crops = np.stack([warp_to_template(photo, d.landmarks) for _, photo, d in found])
    with tempfile.TemporaryDirectory(prefix="facescope-stages-") as scratch:
        model = evaluate.resolve_model(model_name)[0].eval()
        embedders = {runtime: make_embedder(runtime, model, scratch) for runtime in ("torch", "onnx")}
        cache = CropCache(scratch, aligner)

        def embed(runtime, batch):
            return lambda: [embedders[runtime].embed(crops[i:i + batch]) for i in range(0, len(crops), batch)]

        stages = {
            "decode (PIL)": (lambda: [load_image(p) for p in paths], len(paths)),
            "detect (YuNet, 5 points)": (lambda: [aligner.detect(photo) for photo in photos], len(photos)),
            "warp to the template": (lambda: [warp_to_template(photo, d.landmarks) for _, photo, d in found], len(found)),
            "write the crop cache (PNG)": (lambda: [cache.store(path, AlignedFace(crop, "landmarks"))
                                                    for (path, _, _), crop in zip(found, crops)], len(found))}
        stages.update({f"degrade {c.name}": (lambda c=c: c.apply_batch(crops), len(crops)) for c in conditions})
        stages.update({f"embed, {runtime}, batch {b}": (embed(runtime, b), len(crops)) for runtime, b in (
            ("torch", OLD_BATCH), ("torch", evaluate.DEFAULT_BATCH), ("onnx", evaluate.DEFAULT_BATCH))})
        times = {name: [] for name in stages}
        for _ in range(rounds):  # in alternation: a busy machine slows every stage alike
            for name, (work, n) in stages.items():
                start = time.process_time()
                work()
                times[name].append(1000 * (time.process_time() - start) / n)
    return {name: float(np.median(values)) for name, values in times.items()}


def distinct_images(results: dict) -> int:
    """Images the run aligned and embedded: each once (CFP-FP reuses CFP-FF's frontal faces)."""
    return sum(next(iter(p["conditions"].values()))["embedded_images"] for p in results["protocols"].values())


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python bench/eval_time.py", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="mobilefacenet.fss-ft", help="as zoo.evaluate --model (default: "
                        "mobilefacenet.fss-ft, the embedded zoo's fine-tuned baseline)")
    parser.add_argument("--protocol", default=",".join(TEST_PROTOCOLS))
    parser.add_argument("--blur", default="0,2,4")
    parser.add_argument("--runtime", default="auto", help="as zoo.evaluate --runtime (default auto, its default)")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="as zoo.evaluate --workers")
    parser.add_argument("--max-pairs", type=int, help="per protocol (a quick check; the target is all pairs)")
    parser.add_argument("--warm", action="store_true", help="use the project's crop cache instead of an empty one")
    parser.add_argument("--stage-images", type=int, default=200, help="CFP-FP photos the stage costs are timed on")
    args = parser.parse_args(argv)

    conditions = [parse_degradation(f"blur{b.strip()}") for b in args.blur.split(",") if b.strip()]
    stages = stage_costs(args.model, conditions, args.stage_images)
    eval_argv = (["--model", args.model, "--protocol", args.protocol, "--blur", args.blur]
                 + ([] if args.runtime == "auto" else ["--runtime", args.runtime])
                 + ([] if args.workers == os.cpu_count() else ["--workers", str(args.workers)])
                 + (["--max-pairs", str(args.max_pairs)] if args.max_pairs else []))
    cache = "warm" if args.warm else "cold"
    command = ("" if args.warm else "FACESCOPE_CACHE=$(mktemp -d) ") + "python -m zoo.evaluate " + " ".join(eval_argv)
    with tempfile.TemporaryDirectory(prefix="facescope-cold-cache-") as cold:
        if not args.warm:
            os.environ["FACESCOPE_CACHE"] = cold  # crops and the ONNX export, both made from scratch
        torch.set_num_threads(os.cpu_count() or 1)  # zoo.evaluate's own setting (stage_costs used one)
        cpu_before, start = cpu_seconds(), time.perf_counter()
        with LoadSampler() as load:
            results = evaluate.run(evaluate.build_parser().parse_args(eval_argv + ["--quiet"]))
        wall, cpu = time.perf_counter() - start, cpu_seconds() - cpu_before

    images = distinct_images(results)  # each stage runs once per image, embedding once per image and condition
    per_run = {name: cost * images * (len(conditions) if name.startswith("embed") else 1) / 1000
               for name, cost in stages.items()}
    rows, protocols = [], {}
    for name, entry in results["protocols"].items():
        protocols[name] = {"pairs": entry["pairs_total"], "images": entry["images"],
                           "fallback_alignments": entry["fallback_alignments"], "pairs_skipped": entry["pairs_skipped"],
                           "align_seconds": entry["align_seconds"], "embed_seconds": entry["embed_seconds"],
                           "embedded_images": next(iter(entry["conditions"].values()))["embedded_images"],
                           "accuracy": {k: round(c["accuracy"], 4) for k, c in entry["conditions"].items()}}
        p = protocols[name]
        rows.append([name, p["pairs"], p["images"], p["embedded_images"], p["fallback_alignments"], p["align_seconds"],
                     p["embed_seconds"], ", ".join(f"{k} {100 * v:.2f}" for k, v in p["accuracy"].items())])
    payload = {"command": command, "model": results["model"], "runtime": results["settings"]["runtime"],
               "embedded_by": results["settings"]["embedded_by"], "workers": args.workers,
               "cache": cache, "conditions": results["settings"]["conditions"], "wall_seconds": round(wall, 1),
               "cpu_seconds": round(cpu, 1), "load_average_mean": round(float(np.mean(load.samples)), 2),
               "load_average_max": round(float(np.max(load.samples)), 2), "protocols": protocols,
               "stage_cpu_ms_per_image": {k: round(v, 3) for k, v in stages.items()},
               "stage_cpu_seconds_per_run": {k: round(v, 1) for k, v in per_run.items()}, "distinct_images": images}
    table = (f"`{command}` ({cache} crop cache, {args.workers} workers, embeddings by "
             f"{results['settings']['embedded_by']}): "
             f"**{wall:.0f} s wall, {cpu:.0f} s CPU** (user + sys, workers included); load average "
             f"{payload['load_average_mean']:.1f} on average during the run (max {payload['load_average_max']:.1f}).\n\n"
             + markdown_table(["protocol", "pairs", "images", "embedded (new)", "fallback alignments", "align s",
                               "embed s", "accuracy % per condition"], rows)
             + f"\nWhere the CPU goes: each stage timed in one process, one thread, on {args.stage_images} CFP-FP photos "
               f"(median of 3 rounds in alternation), times how often the run does it ({images} distinct images "
               f"aligned, each embedded under {len(conditions)} conditions).\n\n"
             + markdown_table(["stage", "CPU ms per image", "CPU s per run"],
                              [[k, f"{v:.2f}", f"{per_run[k]:.1f}"] for k, v in stages.items()]))
    print(table)
    print(f"wrote {write_results('eval_time', payload, table)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
