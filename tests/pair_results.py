"""Stored per-pair results for the error browser's tests: `python -m zoo.evaluate --pairs` on a
subset of LFW View 1 spread over its folds, the way the embedded zoo's are made, only smaller."""
from __future__ import annotations

import csv
import gzip
from pathlib import Path
from typing import Dict, List, Sequence

from zoo import evaluate

PROTOCOL, CONDITIONS = "lfw-view1", ("blur0", "blur4")


def evaluate_pairs(models: Sequence[str], out_dir: Path, cache_dir: Path, max_pairs: int) -> Dict[str, Path]:
    """Each model (a zoo name or checkpoint folder) -> the pairs.csv.gz zoo.evaluate's own CLI wrote for it."""
    code = evaluate.main(["--model", ",".join(models), "--protocol", PROTOCOL, "--blur", "0,4", "--max-pairs",
                          str(max_pairs), "--pairs", "--out-dir", str(out_dir), "--cache-dir", str(cache_dir),
                          "--workers", "1", "--quiet"])
    assert code == 0, "zoo.evaluate failed"
    return {model: evaluate.result_file(out_dir, model).with_suffix(".pairs.csv.gz") for model in models}


def read_rows(path: Path) -> List[Dict[str, str]]:
    """A results file's rows as the CSV holds them (read without the code under test)."""
    with gzip.open(path, "rt", newline="") as handle:
        return list(csv.DictReader(handle))


def write_rows(path: Path, rows: List[Dict[str, str]]) -> Path:
    """Rows back into a results file, e.g. a real file cut to the pairs its model got right."""
    with gzip.open(path, "wt", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return path
