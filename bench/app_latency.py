"""End-to-end latency of pair verification through the running app, with every zoo model.

Starts `python app.py` on the zoo (default: the embedded zoo) unless --url names a running
app, then through gradio_client: warm-up calls, then --calls timed /verify calls on two
bundled photos with the app's default models (the zoo's; its peers are left out), once its
default runtime serves them all (onnxruntime, attached in the background at start). The
client-side time is what a user of the API waits: uploading both photos, the queue, detection (cached by photo content after the
first call), every model, and the results. The app's own time for detection and models is
reported beside it. Then one call per other bundled photo, never seen before, so its
detection is paid (the CFP profile needs the slower CNN detector). The CPU may be shared:
the load average is recorded. Writes bench/results/app_latency.{json,md}.

    python bench/app_latency.py                           # embedded zoo, 20 calls
    python bench/app_latency.py --zoo my-zoo --calls 50
    python bench/app_latency.py --url http://127.0.0.1:7860
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
from bench.app_client import GradioHttp, app_server, wait_for_runtime, zoo_models
from bench.common import write_results
from zoo.tables import markdown_table

EXAMPLES = ROOT / "app" / "examples"
PHOTOS = (EXAMPLES / "leonardo_dicaprio_1.jpg", EXAMPLES / "leonardo_dicaprio_2.jpg")
NEW_PHOTOS = tuple(sorted(set(EXAMPLES.glob("*.jpg")) - set(PHOTOS)))
TARGET_SECONDS = 1.0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", default=None, help="a running app (default: start one)")
    parser.add_argument("--zoo", type=Path, default=None, help="zoo folder for the started app (default: embedded)")
    parser.add_argument("--calls", type=int, default=20, help="timed calls (default 20)")
    parser.add_argument("--warmup", type=int, default=3, help="untimed calls first (default 3)")
    args = parser.parse_args(argv)
    from gradio_client import Client, handle_file

    with app_server(args.url, args.zoo) as app:
        probe = GradioHttp(app.url)
        models = zoo_models(probe)  # the app's default selection: the zoo, without the peers
        if not models:
            raise SystemExit(f"the app at {app.url} has no models")
        if app.pid is not None:  # its default runtime attaches onnxruntime in the background
            wait_for_runtime(probe, PHOTOS, models)
        client = Client(app.url, verbose=False)

        def call(second: Path = PHOTOS[1]) -> float:
            result = client.predict(handle_file(PHOTOS[0]), handle_file(second), 1, 1, models, api_name="/verify")
            return result[0]["seconds"]

        for _ in range(args.warmup):
            call()
        wall, server = [], []
        for _ in range(args.calls):
            start = time.perf_counter()
            server.append(call())
            wall.append(time.perf_counter() - start)
        first_calls = {}
        for photo in NEW_PHOTOS:
            start = time.perf_counter()
            call(photo)
            first_calls[photo.name] = round(time.perf_counter() - start, 4)
    wall_s, server_s = np.array(wall), np.array(server)
    record = {"url": app.url if args.url else "started by the benchmark",
              "app_torch_threads": "as started" if args.url else "1 (app.py's default)",
              "models": models, "calls": args.calls,
              "warmup_calls": args.warmup, "photos": [p.name for p in PHOTOS],
              "median_s": round(float(np.median(wall_s)), 4), "p95_s": round(float(np.percentile(wall_s, 95)), 4),
              "max_s": round(float(wall_s.max()), 4),
              "server_median_s": round(float(np.median(server_s)), 4),
              "server_p95_s": round(float(np.percentile(server_s, 95)), 4),
              "target_s": TARGET_SECONDS, "meets_target": bool(np.percentile(wall_s, 95) < TARGET_SECONDS),
              "first_call_with_a_new_photo_s": first_calls,
              "load_average_1min_after": round(os.getloadavg()[0], 2)}
    rows = [[len(models), args.calls, record["median_s"], record["p95_s"], record["server_median_s"],
             record["load_average_1min_after"], "yes" if record["meets_target"] else "NO"]]
    table_md = markdown_table(["models", "calls", "median (s)", "p95 (s)", "in the app: median (s)",
                               "load average", f"p95 < {TARGET_SECONDS:g} s"], rows)
    table_md += f"\nModels: {', '.join(models)}. Photos: {', '.join(record['photos'])}.\n"
    table_md += "\nFirst call with a photo never seen before (its detection included): " + \
        ", ".join(f"{name} {seconds:.2f} s" for name, seconds in first_calls.items()) + ".\n"
    path = write_results("app_latency", record, table_md)
    print(table_md + f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
