"""Inference cost of the embedded zoo and the pretrained peers, and the papers' cost claims, on this CPU.

Per model (every local zoo checkpoint, plus the pretrained peers), each in a fresh process so its
memory is its own: ms/image of `embed` at batch 1 and 32 (median of timed runs after
warm-up), the process's resident memory after loading and its peak (ru_maxrss, which sees
torch's and dlib's allocations, unlike tracemalloc).

Cost claims, each measured in one process with the models timed in alternation (A, B, A, B,
...) so a busy machine slows both alike; the ratio is the median of the per-round ratios:
- SCAN (paper: zero extra inference cost once folded): the folded SCAN model against the plain
  backbone of the same width and head, and the unfolded training form for contrast;
- SRANet (paper: 1.38x its backbone with light SSA alone, 1.28x with SCA alone): SRANet
  (both) against its plain backbone; bench/method_cost.py times each alone too.
Both at the zoo's size (MobileFaceNet x1.0, GDC head, 128-d embedding: the zoo's reference
`mobilefacenet.y1` and SCAN checkpoint when there are, untrained builds otherwise) and at the
papers' (IR-50, width 1.0). Writes bench/results/zoo_inference.{json,md}.

    python bench/zoo_inference.py
    python bench/zoo_inference.py --threads 2 --skip-paper-size
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Dict, List, Sequence

import torch

REPO = Path(__file__).resolve().parents[1]
from bench.common import write_results
import zoo
from zoo.peers import peer_names
from zoo.tables import markdown_table

ZOO_BACKBONE = "mobilefacenet"  # the embedded zoo: mobilefacenet.y1 and the models fine-tuned from it
ZOO_SIZE = {"width": 1.0, "embedding_dim": 128}  # MobileFaceNet's own head is GDC
ZOO_REFERENCE = "mobilefacenet.y1"
PAPER_SIZE = {"width": 1.0}


def make_model(spec: Dict) -> torch.nn.Module:
    """{"load": zoo name or peer:NAME} | {"build": architecture, "fold": bool, **build options}
    (a "label" and a "note" only name the row)."""
    if "load" in spec:
        return zoo.load(spec["load"]).eval()
    options = {k: v for k, v in spec.items() if k not in ("build", "fold", "label", "note")}
    torch.manual_seed(0)
    model = zoo.build(spec["build"], **options)
    return (model.fold() if spec.get("fold") else model).eval()


def time_models(models: Sequence[torch.nn.Module], batch: int, repeats: int,
                warmup: int = 3) -> Dict[str, List[List[float]]]:
    """Wall and process-CPU seconds per image of each model's `embed`, `repeats` rounds,
    the models alternating within a round."""
    images = torch.randn(batch, 3, 112, 112).clamp(-1, 1)
    times: Dict[str, List[List[float]]] = {"wall": [[] for _ in models], "cpu": [[] for _ in models]}
    with torch.inference_mode():
        for model in models:
            for _ in range(warmup):  # oneDNN builds its kernels on the first calls
                model.embed(images)
        for _ in range(repeats):
            for k, model in enumerate(models):
                wall, cpu = time.perf_counter(), time.process_time()
                model.embed(images)
                times["wall"][k].append((time.perf_counter() - wall) / batch)
                times["cpu"][k].append((time.process_time() - cpu) / batch)
    return times


def milliseconds(series: List[float]) -> float:
    return round(1000 * statistics.median(series), 3)


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def measure_one(spec: Dict, repeats: int) -> Dict:
    """Timing and memory of one model (run in its own process)."""
    model = make_model(spec)
    loaded = rss_mb()
    timings = {batch: time_models([model], batch, rounds) for batch, rounds in ((1, repeats * 4), (32, repeats))}
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # kilobytes on Linux
    parameters = model.parameter_count()
    record = {"model": spec.get("load"), "architecture": model.name, "spec": spec,
              "parameters": parameters}
    for batch, times in timings.items():
        record[f"cpu_ms_per_image_batch{batch}"] = milliseconds(times["cpu"][0])
        record[f"wall_ms_per_image_batch{batch}"] = milliseconds(times["wall"][0])
    return {**record, "rss_after_load_mb": round(loaded, 1), "peak_rss_mb": round(peak, 1),
            "peak_over_loaded_mb": round(peak - loaded, 1)}


def compare(specs: Sequence[Dict], repeats: int) -> Dict:
    """Alternating timings of several models (the first is the reference) and median ratios."""
    models = [make_model(spec) for spec in specs]
    result = {"models": [{"label": s["label"], "model": m.name, "parameters": m.parameter_count(), "spec": s}
                         for s, m in zip(specs, models)]}
    for batch, rounds in ((1, repeats * 4), (32, repeats)):
        times = time_models(models, batch, rounds)
        for k, entry in enumerate(result["models"]):
            for clock in ("cpu", "wall"):
                series, reference = times[clock][k], times[clock][0]
                entry[f"{clock}_ms_per_image_batch{batch}"] = milliseconds(series)
                entry[f"{clock}_ratio_batch{batch}"] = round(statistics.median(t / r for t, r in zip(series, reference)), 3)
    return result


def in_subprocess(kind: str, payload, threads: int, repeats: int) -> Dict:
    """Run measure_one / compare in a fresh interpreter: clean memory, same thread count."""
    command = [sys.executable, str(Path(__file__).resolve()), f"--{kind}", json.dumps(payload),
               "--threads", str(threads), "--repeats", str(repeats)]
    run = subprocess.run(command, cwd=REPO, capture_output=True, text=True)
    if run.returncode != 0:
        raise RuntimeError(f"{kind} {payload} failed:\n{run.stderr[-3000:]}")
    return json.loads(run.stdout.strip().splitlines()[-1])


# SPEC.md: ResNet-50 on a Titan XP, 14.31 ms plain, 19.71 ms with light SSA, 18.34 ms with light SCA.
SRANET_CLAIM = "SCA + SSA; paper: 1.38x with light SSA alone, 1.28x with light SCA alone (GPU), none for both"


def comparisons(local: List[str], paper_size: bool) -> List[Dict]:
    """The cost-claim groups: (name, size, [reference, others...], claim)."""
    architectures = {n: zoo.read_config(zoo.LOCAL_ZOO / n)["architecture"] for n in local}
    scan = next((n for n, arch in architectures.items()
                 if arch["method"] == "scan-folded" and arch["backbone"] == ZOO_BACKBONE), None)
    folded = {"label": f"SCAN folded ({'zoo checkpoint ' + scan if scan else 'untrained, same architecture'})",
              **({"load": scan} if scan else {"build": f"scan-{ZOO_BACKBONE}", "fold": True, **ZOO_SIZE})}
    plain = ({"label": f"plain {ZOO_BACKBONE} ({ZOO_REFERENCE})", "load": ZOO_REFERENCE} if ZOO_REFERENCE in local
             else {"label": f"plain {ZOO_BACKBONE}", "build": ZOO_BACKBONE, **ZOO_SIZE})
    size = f"{ZOO_BACKBONE} x1.0, GDC, 128-d"
    groups = [
        {"name": "SCAN, folded", "size": size, "claim": "1.00x (paper: zero extra cost once folded)",
         "specs": [plain, folded,
                   {"label": "SCAN unfolded (training form)", "build": f"scan-{ZOO_BACKBONE}", **ZOO_SIZE,
                    "note": "training form: what folding removes"}]},
        {"name": "SRANet light", "size": size, "claim": SRANET_CLAIM,
         "specs": [plain, {"label": "SRANet light", "build": f"sranet-{ZOO_BACKBONE}", **ZOO_SIZE}]},
    ]
    if paper_size:
        groups += [
            {"name": "SCAN, folded", "size": "ir50 x1.0", "paper_size": True,
             "claim": "1.00x (paper: zero extra cost once folded)",
             "specs": [{"label": "plain ir50", "build": "ir50", **PAPER_SIZE},
                       {"label": "SCAN folded (untrained, same architecture)", "build": "scan-ir50", "fold": True,
                        **PAPER_SIZE}]},
            {"name": "SRANet light", "size": "ir50 x1.0", "paper_size": True, "claim": SRANET_CLAIM,
             "specs": [{"label": "plain ir50", "build": "ir50", **PAPER_SIZE},
                       {"label": "SRANet light", "build": "sranet-ir50", **PAPER_SIZE}]},
        ]
    return groups


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python bench/zoo_inference.py", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads per process (default 1)")
    parser.add_argument("--repeats", type=int, default=5,
                        help="timed runs at batch 32 (batch 1: four times as many; default 5)")
    parser.add_argument("--skip-paper-size", action="store_true", help="only the zoo's size (no IR-50 x1.0)")
    parser.add_argument("--measure", help=argparse.SUPPRESS)  # internal: one model, in a child process
    parser.add_argument("--compare", help=argparse.SUPPRESS)  # internal: one cost-claim group
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.measure:
        print(json.dumps(measure_one(json.loads(args.measure), args.repeats)))
        return 0
    if args.compare:
        print(json.dumps(compare(json.loads(args.compare), args.repeats)))
        return 0

    local = zoo.local_models()
    load_before = os.getloadavg()
    models = []
    for spec in [{"load": name} for name in local + peer_names()]:
        models.append(in_subprocess("measure", spec, args.threads, args.repeats))
        print(models[-1], flush=True)
    groups = comparisons(local, not args.skip_paper_size)
    for group in groups:
        # the paper-size models are ~50x the work: fewer rounds keep the run in minutes
        repeats = max(2, args.repeats // 2) if group.pop("paper_size", False) else args.repeats
        group.update(in_subprocess("compare", group.pop("specs"), args.threads, repeats))
        print(group, flush=True)

    rows = [[m["model"] + (" (pretrained peer)" if m["model"].startswith("peer:") else ""), m["architecture"],
             f"{m['parameters']:,}" if m["parameters"] is not None else "n/a (not torch)",
             f"{m['cpu_ms_per_image_batch1']:.2f}", f"{m['cpu_ms_per_image_batch32']:.2f}",
             f"{m['wall_ms_per_image_batch32']:.2f}", f"{m['peak_rss_mb']:.0f}",
             f"{m['peak_over_loaded_mb']:.0f}"] for m in models]
    ratio_rows = [[group["name"], group["size"], entry["label"], f"{entry['cpu_ms_per_image_batch1']:.2f}",
                   f"{entry['cpu_ms_per_image_batch32']:.2f}", f"{entry['cpu_ratio_batch1']:.2f}x",
                   f"{entry['cpu_ratio_batch32']:.2f}x", entry["spec"].get("note", group["claim"]) if k else "reference"]
                  for group in groups for k, entry in enumerate(group["models"])]
    table = (f"`embed` on the CPU, {args.threads} thread(s), median of timed runs after warm-up. CPU ms: process "
             "CPU time per image, what one free core takes (a shared machine stretches wall time, not CPU time); "
             f"wall ms at batch 32 for the record. Load average {load_before[0]:.1f} at the start. Peak memory: the whole "
             "process (Python, torch, model), ru_maxrss.\n\n"
             + markdown_table(["model", "architecture", "parameters", "CPU ms/image (batch 1)", "CPU ms/image (batch 32)",
                               "wall ms/image (batch 32)", "peak RSS (MB)", "peak over loaded model (MB)"], rows)
             + "\nCost claims, models timed in alternation in one process (ratio: median of per-round CPU-time "
               "ratios to the reference):\n\n"
             + markdown_table(["claim", "size", "model", "CPU ms/image (batch 1)", "CPU ms/image (batch 32)",
                               "ratio (batch 1)", "ratio (batch 32)", "paper"], ratio_rows))
    payload = {"threads": args.threads, "repeats": args.repeats, "load_average_before": [round(v, 2) for v in load_before],
               "load_average_after": [round(v, 2) for v in os.getloadavg()], "models": models, "cost_claims": groups}
    print(table)
    print(f"wrote {write_results('zoo_inference', payload, table)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
