"""Load test: 8 concurrent API clients verifying real face pairs against the running app.

Starts `python app.py` on a free port of 127.0.0.1 with its defaults (or uses --url), waits
until its runtime serves every model (the default, auto, moves each model from torch to
onnxruntime as its ONNX export lands), takes the models a visitor gets by default (the zoo's;
--peers adds the pretrained peers), then each client - a thread speaking Gradio's HTTP API
(bench/app_client.py: upload both photos, call /verify, read the result) - makes one warm-up
call and, once all are warm, verifies LFW View 1 test pairs back to back for --seconds. Each
client walks its own part of --pairs pairs (default: all 1,000, which hold 1,549 distinct photos:
a photo that comes again is neither detected nor embedded again by the app, as when a person
verifies one photo against several). A call is an error if it raises or
returns no verdict for some model; the errors must be zero.

Reports throughput (completed calls per second), p50/p95/max latency, and CPU seconds per
call of the app and of the clients: they share this machine's cores, which a deployment's
remote clients would not. Writes bench/results/load_test.{json,md}.

    python bench/load_test.py                       # 8 clients, 60 s, the app's defaults
    python bench/load_test.py --app-args="--runtime torch"
    python bench/load_test.py --clients 4 --seconds 30 --url http://127.0.0.1:7860
"""
from __future__ import annotations

import argparse
import os
import shlex
import sys
import threading
import time
from pathlib import Path
from typing import Dict, List, Tuple

import numpy as np

from bench.app_client import GradioHttp, app_server, wait_for_runtime, zoo_models
from bench.common import write_results
from zoo.data import load_protocol
from zoo.tables import markdown_table

MAX_ERRORS_KEPT = 20
TARGET_CALLS_PER_S, TARGET_P95_S = 10.0, 1.5


def lfw_pairs(count: int) -> List[Tuple[Path, Path]]:
    """`count` LFW View 1 test pairs spread over the list (same and different people)."""
    pairs = load_protocol("lfw-view1").subset(count)
    return list(zip(pairs.first, pairs.second))


def client_loop(url: str, models: List[str], pairs: List[Tuple[Path, Path]], ready: threading.Barrier,
                clock: Dict[str, float], out: Dict) -> None:
    """One client: a warm-up call, wait for the others, then verify its pairs until the deadline."""
    client = GradioHttp(url)

    def call(k: int) -> None:
        first, second = pairs[k % len(pairs)]
        verdicts = client.verify(first, second, models).get("models", [])
        if len(verdicts) != len(models):
            raise RuntimeError(f"{len(verdicts)} verdict(s) for {len(models)} model(s) on {first.name}, {second.name}")

    try:
        call(0)
    except Exception as error:  # a failed warm-up is an error like any other
        out["errors"].append(f"warm-up: {type(error).__name__}: {error}")
    ready.wait()
    k = 1
    while time.perf_counter() < clock["deadline"]:
        start = time.perf_counter()
        try:
            call(k)
            out["latencies"].append(time.perf_counter() - start)
        except Exception as error:  # every failure is counted and reported, none stops the test
            out["errors"].append(f"{type(error).__name__}: {error}")
        out["finished"].append(time.perf_counter())
        k += 1
    client.close()


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python bench/load_test.py", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", default=None, help="a running app (default: start one on 127.0.0.1)")
    parser.add_argument("--zoo", type=Path, default=None, help="zoo folder for the started app (default: embedded)")
    parser.add_argument("--app-args", default="", help="options for the started app.py, e.g. \"--runtime torch\"")
    parser.add_argument("--peers", action="store_true", help="verify with the pretrained peers too")
    parser.add_argument("--clients", type=int, default=8, help="concurrent clients (default 8)")
    parser.add_argument("--seconds", type=float, default=60, help="duration after warm-up (default 60)")
    parser.add_argument("--pairs", type=int, default=1000, help="distinct LFW View 1 test pairs (default all 1000)")
    args = parser.parse_args(argv)
    app_args = shlex.split(args.app_args)
    pairs = lfw_pairs(args.pairs)
    with app_server(args.url, args.zoo, app_args) as app:
        probe = GradioHttp(app.url)
        models = zoo_models(probe, peers=args.peers)
        if not models:
            raise SystemExit(f"the app at {app.url} has no models")
        runtime = app_args[app_args.index("--runtime") + 1] if "--runtime" in app_args[:-1] else "auto"
        runtimes = wait_for_runtime(probe, pairs[0], models) if app.pid is not None and runtime != "torch" else []
        probe.close()
        shared = {"latencies": [], "errors": [], "finished": []}
        clock: Dict[str, float] = {}

        def start_clock() -> None:  # runs once, when the last client is warm
            clock["start"], clock["cpu"], clock["app_cpu"] = time.perf_counter(), time.process_time(), app.cpu_seconds()
            clock["deadline"] = clock["start"] + args.seconds

        ready = threading.Barrier(args.clients, action=start_clock)
        share = len(pairs) // args.clients  # client k walks pairs k*share, k*share+1, ...
        threads = [threading.Thread(target=client_loop, args=(app.url, models, pairs[k * share:] + pairs[:k * share],
                                                              ready, clock, shared), daemon=True)
                   for k in range(args.clients)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        app_cpu = app.cpu_seconds()
    client_cpu = time.process_time() - clock["cpu"]
    latencies = np.array(shared["latencies"])
    elapsed = max(shared["finished"]) - clock["start"] if shared["finished"] else args.seconds
    calls = max(1, len(latencies))
    record = {"url": app.url if args.url else f"started by the benchmark on 127.0.0.1: app.py {args.app_args}".strip(),
              "clients": args.clients, "seconds": args.seconds, "elapsed_s": round(elapsed, 2), "models": models,
              "runtimes": dict(zip(models, runtimes)), "distinct_pairs": len(pairs),
              "distinct_photos": len({photo for pair in pairs for photo in pair}),
              "completed_calls": int(len(latencies)), "errors": len(shared["errors"]),
              "error_messages": shared["errors"][:MAX_ERRORS_KEPT],
              "throughput_calls_per_s": round(len(latencies) / elapsed, 3),
              "p50_s": round(float(np.percentile(latencies, 50)), 3) if len(latencies) else None,
              "p95_s": round(float(np.percentile(latencies, 95)), 3) if len(latencies) else None,
              "max_s": round(float(latencies.max()), 3) if len(latencies) else None,
              "app_cpu_s_per_call": None if app_cpu is None else round((app_cpu - clock["app_cpu"]) / calls, 4),
              "client_cpu_s_per_call": round(client_cpu / calls, 4),
              "load_average_1min_after": round(os.getloadavg()[0], 2)}
    app_cpu_cell = "-" if record["app_cpu_s_per_call"] is None else f"{record['app_cpu_s_per_call']:.3f}"
    rows = [[args.clients, f"{args.seconds:g}", len(models), record["completed_calls"],
             record["throughput_calls_per_s"], record["p50_s"], record["p95_s"], record["max_s"], record["errors"],
             app_cpu_cell, f"{record['client_cpu_s_per_call']:.3f}", record["load_average_1min_after"]]]
    served = sorted({r.split(" (")[0] for r in runtimes})  # "onnxruntime (file.onnx)" -> "onnxruntime"
    table = (markdown_table(["clients", "seconds", "models per call", "completed calls", "calls/s", "p50 (s)",
                             "p95 (s)", "max (s)", "errors", "app CPU s per call", "clients' CPU s per call",
                             "load average"], rows)
             + f"\nEach call: /verify of two LFW View 1 test photos with the app's default models "
               f"({', '.join(models)}){', embeddings by ' + ' and '.join(served) if served else ''}; "
               f"{len(pairs)} distinct pairs holding {record['distinct_photos']} distinct photos (one seen before is "
               "neither detected nor embedded again). The clients run on the same cores as the app. "
               f"Target: >= {TARGET_CALLS_PER_S:g} calls/s at p95 < {TARGET_P95_S:g} s.\n")
    print(table)
    print(f"wrote {write_results('load_test', record, table)}")
    if shared["errors"]:
        print("errors:\n  " + "\n  ".join(shared["errors"][:MAX_ERRORS_KEPT]), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
