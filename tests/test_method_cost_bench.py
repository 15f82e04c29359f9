"""bench/method_cost.py run small on real faces into a scratch folder: it must keep working.

What it measures is not asserted (timings belong to bench/, never to tests); what is: a row
per input layout and batch for SRANet on the zoo's MobileFaceNet, a row per backbone for SCAN
training through the engine, and FLOP floors that say each method adds arithmetic.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_method_cost_bench_small(tmp_path):
    env = {**os.environ, "FACESCOPE_BENCH_RESULTS": str(tmp_path), "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "bench/method_cost.py", "--rounds", "1", "--training-steps", "1",
                           "--skip-paper-size"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    payload = json.loads((tmp_path / "method_cost.json").read_text())
    inference = payload["sranet_inference"]
    assert {(row["layout"], row["batch"]) for row in inference} == {
        (layout, batch) for layout in ("contiguous", "channels_last") for batch in (1, 32)}
    assert all(row["plain"] == "mobilefacenet" and row["sranet"] == "sranet-mobilefacenet" for row in inference)
    assert all(row["ratio"] > 0 and row["flop_floor"] > 1 for row in inference)
    training = payload["scan_training"]
    assert [(row["plain"], row["scan"]) for row in training] == [("ir18", "scan-ir18"),
                                                                 ("mobilefacenet", "scan-mobilefacenet")] * 2
    assert all(row["scan_images_per_cpu_s"] > 0 for row in training)
    # RMO on k_s alone costs a weight gradient more per layer; on the whole kernel, none
    assert [row["flop_floor"] > 1 for row in training] == [True, True, False, False]
    assert all("rmo_kernels='layer'" in row["pair"] for row in training[2:])
    table = (tmp_path / "method_cost.md").read_text()
    assert table.startswith("Measured ") and "SRANet / plain" in table and "SCAN / plain images/s" in table
