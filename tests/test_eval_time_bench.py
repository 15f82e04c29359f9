"""bench/eval_time.py, run small on real data into a scratch folder: the lead's one command for
the evaluation's time must keep working. What it measures is not asserted (timings belong to
bench/); what is: the run is the zoo.evaluate command it prints, from an empty crop cache, with
its CPU seconds, the load average during the run and every stage's cost."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_eval_time_bench_small(tmp_path, data_root):
    results = tmp_path / "results"
    env = {**os.environ, "FACESCOPE_BENCH_RESULTS": str(results), "PYTHONPATH": str(ROOT)}  # this checkout's code
    done = subprocess.run([sys.executable, "bench/eval_time.py", "--protocol", "lfw-view1,cfp-fp", "--blur", "0,4",
                           "--max-pairs", "20", "--stage-images", "6", "--workers", "1"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    data = json.loads((results / "eval_time.json").read_text())
    assert data["command"] == ("FACESCOPE_CACHE=$(mktemp -d) python -m zoo.evaluate --model mobilefacenet.fss-ft "
                               "--protocol lfw-view1,cfp-fp --blur 0,4 --workers 1 --max-pairs 20")
    assert data["cache"] == "cold" and data["runtime"] == "onnx" and data["embedded_by"].startswith("onnxruntime")
    assert data["wall_seconds"] > 0 and data["cpu_seconds"] > 0 and data["load_average_mean"] >= 0
    assert data["protocols"]["lfw-view1"]["embedded_images"] == data["protocols"]["lfw-view1"]["images"]
    assert data["distinct_images"] == sum(p["embedded_images"] for p in data["protocols"].values())
    stages = data["stage_cpu_ms_per_image"]
    assert {"decode (PIL)", "detect (YuNet, 5 points)", "degrade blur4", "embed, torch, batch 64",
            "embed, onnx, batch 8"} <= set(stages) and all(v >= 0 for v in stages.values())
    assert (results / "eval_time.md").read_text().startswith("Measured ")
