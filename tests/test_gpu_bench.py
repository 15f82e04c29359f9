"""bench/gpu.sh --cpu: the GPU check runs at toy sizes on the CPU, so it cannot rot while no GPU
runs it. Asserted: every check passes, every recipe ran in bf16 and with amp off to a finite loss,
both head sizes ran replicated and sharded, IR-50 trained eager and compiled, the zoo models embed alike on
the check's device, and SRANet was timed in its three variants."""
from __future__ import annotations

import json
import math
import os
import subprocess
from pathlib import Path

from train.config import recipe_names

ROOT = Path(__file__).resolve().parents[1]


def test_the_gpu_check_runs_at_toy_sizes_on_the_cpu(tmp_path):
    env = {**os.environ, "FACESCOPE_BENCH_RESULTS": str(tmp_path), "FACESCOPE_CACHE": str(tmp_path / "cache"),
           "OMP_NUM_THREADS": "1"}
    done = subprocess.run(["bash", "bench/gpu.sh", "--cpu"], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=900)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    checks = json.loads((tmp_path / "gpu-cpu.json").read_text())["checks"]
    assert set(checks) == {"recipes", "heads", "throughput", "process_group", "evaluation", "sranet_cost"}
    assert all(check["passed"] for check in checks.values()), checks
    recipes = checks["recipes"]["rows"]
    assert {(r["recipe"], r["amp"]) for r in recipes} == {(n, amp) for n in recipe_names() for amp in ("bf16", "off")}
    assert all(math.isfinite(r["loss"]) for r in recipes)
    assert [(r["classes"], r["head"]) for r in checks["heads"]["rows"]] == [
        (857, "replicated"), (857, "PartialFC 0.1"), (20599, "replicated"), (20599, "PartialFC 0.1")]
    assert all(r["images_per_s"] > 0 for r in checks["throughput"]["rows"])
    assert checks["process_group"]["rows"][0]["backend"] == "gloo"
    assert all(r["min_cosine_to_cpu"] > 0.9999 and r["explain"] == "works" for r in checks["evaluation"]["rows"])
    assert [r["compile"] for r in checks["throughput"]["rows"]] == ["off", "off", "eager"]
    assert {(r["sranet"], r["batch"]) for r in checks["sranet_cost"]["rows"]} == {
        (variant, batch) for variant in ("SCA + SSA", "SSA only (paper 1.38x)", "SCA only (paper 1.28x)")
        for batch in (1, 32)}
    assert all(r["ratio"] > 0 for r in checks["sranet_cost"]["rows"])
    assert "#### recipes (passed" in (tmp_path / "gpu-cpu.md").read_text()
