"""Shared helpers for the benchmark scripts: machine description and result writing."""
from __future__ import annotations

import datetime as _dt
import json
import os
import platform
from pathlib import Path
from typing import Dict

import torch

# $FACESCOPE_BENCH_RESULTS redirects every table (the tests run the scripts small, elsewhere).
RESULTS = Path(os.environ.get("FACESCOPE_BENCH_RESULTS") or Path(__file__).resolve().parent / "results")


def machine() -> Dict[str, str]:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"date": _dt.date.today().isoformat(), "cpu": cpu, "cores": str(os.cpu_count()),
            "torch_threads": str(torch.get_num_threads()), "torch": torch.__version__,
            "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none"}


def write_results(name: str, payload: Dict, table: str) -> Path:
    """bench/results/<name>.json (data) and <name>.md (the table with machine and date)."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    payload = {"machine": machine(), **payload}
    (RESULTS / f"{name}.json").write_text(json.dumps(payload, indent=2) + "\n")
    m = payload["machine"]
    header = f"Measured {m['date']} on {m['cpu']} ({m['cores']} cores, torch {m['torch']}, GPU: {m['gpu']}).\n\n"
    (RESULTS / f"{name}.md").write_text(header + table)
    return RESULTS / f"{name}.md"
