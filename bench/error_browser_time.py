"""Time to open the error browser on LFW View 1 for the default zoo (every local zoo model and the
peers) from the per-pair results stored beside each model, as the app's Service opens it: the
first listed model's (with stored results) errors on clean pairs, 20 rows with both faces aligned, every model's similarity and
the disagreement matrix. Target: under 3 s.

    python bench/error_browser_time.py                       # each model's stored pairs.csv.gz
    python bench/error_browser_time.py --results-dir DIR     # DIR/NAME.pairs.csv.gz, from zoo.evaluate --out-dir DIR

"First open" parses every results file; "again" finds them parsed, as a visitor of the app does:
the page reads every file once when it starts (to list the protocols) and keeps them until one changes. The two are timed in alternation, so the shared CPU's
load weighs on both alike. Writes bench/results/error_browser_time.{json,md}.
"""
from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np

import zoo
from analysis.error_browser import forget_parsed_files
from app.service import Service
from app.tabs.error_browser import DEFAULT_ROWS, stored_results
from bench.common import write_results
from zoo.checkpoint import PAIR_RESULTS_FILE
from zoo.tables import markdown_table

PROTOCOL, CONDITION, TARGET_SECONDS = "lfw-view1", "blur0", 3.0


def zoo_with_results_from(results_dir: Path, folder: Path) -> Path:
    """`folder` made a copy of the local zoo (by links) whose models' pairs.csv.gz come from `results_dir`."""
    for name in zoo.local_models():
        model = folder / name
        model.mkdir()
        for file in (zoo.LOCAL_ZOO / name).iterdir():
            if file.name != PAIR_RESULTS_FILE:
                (model / file.name).symlink_to(file)
        stored = results_dir / f"{name}.pairs.csv.gz"
        if stored.is_file():
            (model / PAIR_RESULTS_FILE).symlink_to(stored.resolve())
    return folder


def timed(service: Service, model: str, first_open: bool):
    if first_open:
        forget_parsed_files()
    start = time.perf_counter()
    result = service.error_browser(model, PROTOCOL, CONDITION, "errors", DEFAULT_ROWS)
    return time.perf_counter() - start, result


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python bench/error_browser_time.py", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--results-dir", type=Path,
                        help="read each local model's results from DIR/NAME.pairs.csv.gz instead of its checkpoint "
                             "folder (peers: always zoo/peers/results)")
    parser.add_argument("--rounds", type=int, default=5, help="timed opens of each kind (default 5; median)")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as scratch:
        zoo_dir = zoo_with_results_from(args.results_dir, Path(scratch)) if args.results_dir else zoo.LOCAL_ZOO
        service = Service(zoo_dir)
        stored = stored_results([e for e in service.entries() if e.model is not None]).models
        if not stored:
            parser.error(f"no model of {zoo_dir} (nor a peer) has stored per-pair results: make them with "
                         "python -m zoo.evaluate --pairs, or give --results-dir")
        timed(service, stored[0], True)  # warm-up: the face detector and the imports
        seconds = {"first open": [], "again": []}
        for _ in range(args.rounds):
            for kind in seconds:
                elapsed, result = timed(service, stored[0], kind == "first open")
                seconds[kind].append(elapsed)
    ranked = result.ranked
    with_results = result.disagreements.models
    where = f"{args.results_dir}/NAME.pairs.csv.gz" if args.results_dir else "each model's stored pairs.csv.gz"
    rows = [[kind, f"{np.median(values):.2f}", f"{min(values):.2f}", f"{max(values):.2f}",
             "yes" if np.median(values) < TARGET_SECONDS else "no"] for kind, values in seconds.items()]
    table = (f"Opening the error browser on {PROTOCOL} {CONDITION} ({ranked.model}'s errors, {DEFAULT_ROWS} rows with "
             f"faces, every model's similarity, the disagreement matrix) for {len(service.model_names())} models, "
             f"{len(with_results)} with stored results ({where}); median of {args.rounds}, load average "
             f"{os.getloadavg()[0]:.2f}.\n\n"
             + markdown_table(["open", "median s", "min s", "max s", f"< {TARGET_SECONDS:g} s"], rows)
             + "\n\nReproduce: `OMP_NUM_THREADS=1 python bench/error_browser_time.py"
             + (f" --results-dir {args.results_dir}`" if args.results_dir else "`") + "\n")
    payload = {"protocol": PROTOCOL, "condition": CONDITION, "model": ranked.model, "rows": DEFAULT_ROWS,
               "models": service.model_names(), "models_with_results": with_results, "results_from": where,
               "errors_listed": len(ranked.table), "rounds": args.rounds,
               "seconds": {kind: [round(v, 4) for v in values] for kind, values in seconds.items()},
               "median_seconds": {kind: round(float(np.median(values)), 4) for kind, values in seconds.items()}}
    write_results("error_browser_time", payload, table)
    print(table)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
