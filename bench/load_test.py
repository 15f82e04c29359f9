"""Load test: 8 concurrent API clients verifying real face pairs against the running app.

Starts `python app.py` on a free port of 127.0.0.1 (or uses --url), asks it for its models
(/zoo_list), then each client - a thread with its own gradio_client.Client - makes one
warm-up call and, once all are warm, calls /verify with every model back to back for
--seconds, on LFW View 1 test pairs (each client starts at a different pair, so photos
differ across clients and the app's detection cache is exercised as in real use). A call is
an error if it raises or returns no verdict for some model. Reports throughput (completed
calls per second), p50/p95/max latency and the errors with their messages; the errors must
be zero. Writes bench/results/load_test.{json,md}.

    python bench/load_test.py                       # 8 clients, 60 s
    python bench/load_test.py --clients 4 --seconds 30 --url http://127.0.0.1:7860
"""
from __future__ import annotations

import argparse
import os
import sys
import threading
import time
from pathlib import Path
from typing import Dict, List, Tuple

import numpy as np

from bench.app_latency import app_server
from bench.common import write_results
from zoo.data import load_protocol
from zoo.tables import markdown_table

MAX_ERRORS_KEPT = 20


def lfw_pairs(count: int) -> List[Tuple[Path, Path]]:
    """`count` LFW View 1 test pairs spread over the list (same and different people)."""
    pairs = load_protocol("lfw-view1").subset(count)
    return list(zip(pairs.first, pairs.second))


def client_loop(url: str, models: List[str], pairs: List[Tuple[Path, Path]], offset: int,
                ready: threading.Barrier, clock: Dict[str, float], out: Dict) -> None:
    """One client: a warm-up call, wait for the others, then verify pairs until the deadline."""
    from gradio_client import Client, handle_file

    def call(k: int) -> None:
        first, second = pairs[(offset + k) % len(pairs)]
        result = client.predict(handle_file(str(first)), handle_file(str(second)), 1, 1, models,
                                api_name="/verify")
        verdicts = result[0].get("models", []) if isinstance(result[0], dict) else []
        if len(verdicts) != len(models):
            raise RuntimeError(f"{len(verdicts)} verdict(s) for {len(models)} model(s) on {first.name}, {second.name}")

    client = Client(url, verbose=False)
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


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python bench/load_test.py", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", default=None, help="a running app (default: start one on 127.0.0.1)")
    parser.add_argument("--zoo", type=Path, default=None, help="zoo folder for the started app (default: embedded)")
    parser.add_argument("--clients", type=int, default=8, help="concurrent clients (default 8)")
    parser.add_argument("--seconds", type=float, default=60, help="duration after warm-up (default 60)")
    parser.add_argument("--pairs", type=int, default=40, help="distinct LFW View 1 test pairs cycled (default 40)")
    args = parser.parse_args(argv)
    from gradio_client import Client

    pairs = lfw_pairs(args.pairs)
    with app_server(args.url, args.zoo) as url:
        table = Client(url, verbose=False).predict(api_name="/zoo_list")
        models = [row[table["headers"].index("model")] for row in table["data"]]
        if not models:
            raise SystemExit(f"the app at {url} has no models")
        shared = {"latencies": [], "errors": [], "finished": []}
        clock: Dict[str, float] = {}

        def start_clock() -> None:  # runs once, when the last client is warm
            clock["start"] = time.perf_counter()
            clock["deadline"] = clock["start"] + args.seconds

        ready = threading.Barrier(args.clients, action=start_clock)
        threads = [threading.Thread(target=client_loop, args=(url, models, pairs, k * len(pairs) // args.clients,
                                                              ready, clock, shared), daemon=True)
                   for k in range(args.clients)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    latencies = np.array(shared["latencies"])
    elapsed = max(shared["finished"]) - clock["start"] if shared["finished"] else args.seconds
    record = {"url": url if args.url else "started by the benchmark on 127.0.0.1", "clients": args.clients,
              "seconds": args.seconds, "elapsed_s": round(elapsed, 2), "models": models, "distinct_pairs": len(pairs),
              "completed_calls": int(len(latencies)), "errors": len(shared["errors"]),
              "error_messages": shared["errors"][:MAX_ERRORS_KEPT],
              "throughput_calls_per_s": round(len(latencies) / elapsed, 3),
              "p50_s": round(float(np.percentile(latencies, 50)), 3) if len(latencies) else None,
              "p95_s": round(float(np.percentile(latencies, 95)), 3) if len(latencies) else None,
              "max_s": round(float(latencies.max()), 3) if len(latencies) else None,
              "load_average_1min_after": round(os.getloadavg()[0], 2)}
    rows = [[args.clients, f"{args.seconds:g}", len(models), record["completed_calls"],
             record["throughput_calls_per_s"], record["p50_s"], record["p95_s"], record["max_s"], record["errors"],
             record["load_average_1min_after"]]]
    table = (markdown_table(["clients", "seconds", "models per call", "completed calls", "calls/s", "p50 (s)",
                             "p95 (s)", "max (s)", "errors", "load average"], rows)
             + f"\nEach call: /verify of two LFW View 1 test photos with every model ({', '.join(models)}), "
               f"{len(pairs)} distinct pairs cycled.\n")
    print(table)
    print(f"wrote {write_results('load_test', record, table)}")
    if shared["errors"]:
        print("errors:\n  " + "\n  ".join(shared["errors"][:MAX_ERRORS_KEPT]), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
