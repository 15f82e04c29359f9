"""The benchmark scripts, run small on real data into a scratch folder: they must keep working.

What they measure is not asserted here (timings belong to `bench/`, never to tests; the two
pretrained models only have to look like working face recognisers); what is asserted is that
a zoo model (the reference mobilefacenet.y1) and the dlib peer land in one accuracy table
through the evaluation code, that the ROC curves and per-model files are written, and that
the README section is replaced whole.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from bench import readme_tables

ROOT = Path(__file__).resolve().parents[1]
REFERENCE = "mobilefacenet.y1"  # the embedded zoo's imported reference: there for good


def run_bench(script: str, args, results: Path, tmp_path: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "FACESCOPE_BENCH_RESULTS": str(results), "FACESCOPE_CACHE": str(tmp_path / "crops")}
    done = subprocess.run([sys.executable, f"bench/{script}.py", *args], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    return done


@pytest.fixture(scope="module")
def accuracy_run(tmp_path_factory, data_root):
    """mobilefacenet.y1 (the embedded zoo's reference) and the dlib peer on 40 LFW View 1 test pairs,
    clean and at blur 4."""
    tmp = tmp_path_factory.mktemp("bench")
    results = tmp / "results"
    run_bench("accuracy", ["--models", f"{REFERENCE},peer:dlib", "--protocols", "lfw-view1", "--blur", "0,4",
                           "--max-pairs", "40", "--jobs", "2", "--no-png"], results, tmp)
    return results


def test_accuracy_table_holds_zoo_model_and_peer(accuracy_run):
    payload = json.loads((accuracy_run / "accuracy.json").read_text())
    assert list(payload["models"]) == [REFERENCE, "peer:dlib"]
    peer = payload["models"]["peer:dlib"]
    assert peer["model"]["resolved_by"] == "zoo.peers" and "million" in peer["model"]["trained_on"]
    for name, entry in payload["models"].items():
        conditions = entry["protocols"]["lfw-view1"]["conditions"]
        assert set(conditions) == {"blur0", "blur4"}
        assert all(c["pairs"] == 40 for c in conditions.values())
    peer_clean = peer["protocols"]["lfw-view1"]["conditions"]["blur0"]["accuracy"]
    assert peer_clean >= 0.9  # a mature model: dlib scores 98.6% on all 1,000 pairs
    table = (accuracy_run / "accuracy.md").read_text()
    assert table.startswith("Measured ") and "peer:dlib (pretrained peer) | ~3M faces (dlib)" in table
    assert f"| {REFERENCE} | MS1M (imported as is) |" in table  # what its card says it was trained on
    assert payload["models"][REFERENCE]["protocols"]["lfw-view1"]["conditions"]["blur0"]["accuracy"] >= 0.9


def test_accuracy_writes_roc_and_evaluate_files(accuracy_run):
    roc = json.loads((accuracy_run / "roc" / "roc_lfw-view1.json").read_text())
    assert set(roc) == {f"{m} blur{b}" for m in (REFERENCE, "peer:dlib") for b in (0, 4)}
    for curve in roc.values():
        assert curve["far"][0] <= curve["far"][-1] and len(curve["far"]) == len(curve["tar"])
    assert (accuracy_run / "roc" / "roc_lfw-view1.html").stat().st_size > 1000
    evaluated = json.loads((accuracy_run / "accuracy" / f"{REFERENCE}.json").read_text())
    assert set(evaluated) == {"model", "settings", "protocols"}  # the schema of zoo.evaluate --out


def test_readme_tables_replace_the_section_whole(accuracy_run, tmp_path, monkeypatch):
    monkeypatch.setattr(readme_tables, "RESULTS", accuracy_run)
    readme = tmp_path / "README.md"
    readme.write_text(f"# Title\n\n{readme_tables.BEGIN}\nan old table\n{readme_tables.END}\n\n## After\n")
    assert readme_tables.main(["--readme", str(readme)]) == 0
    text = readme.read_text()
    assert "an old table" not in text and text.startswith("# Title") and text.endswith("## After\n")
    assert "### Accuracy on LFW View 1" in text and "Reproduce: `python bench/accuracy.py`" in text
    assert readme_tables.main(["--readme", str(readme)]) == 0
    assert readme.read_text() == text  # idempotent: the block is replaced, never appended


def test_readme_tables_refuse_a_readme_without_markers(accuracy_run, tmp_path, monkeypatch):
    monkeypatch.setattr(readme_tables, "RESULTS", accuracy_run)
    readme = tmp_path / "README.md"
    readme.write_text("# no markers here\n")
    with pytest.raises(SystemExit, match="no .* section to fill in"):
        readme_tables.main(["--readme", str(readme)])
    assert readme.read_text() == "# no markers here\n"


def test_inference_bench_small(tmp_path):
    results = tmp_path / "results"
    run_bench("inference", ["--models", "ir18,scan-folded-ir18", "--repeats", "1", "--name", "small"], results,
              tmp_path)
    rows = {row["model"]: row for row in json.loads((results / "small.json").read_text())["models"]}
    assert set(rows) == {"ir18", "scan-folded-ir18"}
    assert rows["scan-folded-ir18"]["parameters"] == rows["ir18"]["parameters"]  # folding leaves no extra weight
    assert all(row["ms_per_image_batch1"] > 0 and row["ms_per_image_batch32"] > 0 for row in rows.values())
    assert (results / "small.md").read_text().startswith("Measured ")


def test_claim_verdicts_tell_mixed_evidence_from_a_loss():
    """A claim's cells with a significant gain and a significant loss read 'mixed', not 'contradicted'."""
    from bench.method_vs_baseline import verdict
    gain, loss = {"delta": 0.4, "t": 2.4}, {"delta": -0.8, "t": -2.8}
    small_gain, small_loss = {"delta": 0.1, "t": 0.5}, {"delta": -0.1, "t": -0.5}
    assert verdict([gain, small_gain]) == "shown"
    assert verdict([gain, small_loss]).startswith("not shown")
    assert verdict([gain, loss]).startswith("mixed")
    assert verdict([loss, small_gain]).startswith("contradicted")
    assert verdict([small_gain, small_loss]).startswith("not shown")


def test_a_gain_within_the_seed_spread_is_not_significant():
    """A cell the folds call significant still does not count when retraining the baseline with
    another seed alone moved it as far."""
    from bench.method_vs_baseline import verdict
    gain = {"delta": 0.4, "t": 3.0}
    assert verdict([gain]) == "shown"
    assert verdict([{**gain, "seed": 0.3}]) == "shown"
    assert verdict([{**gain, "seed": 0.5}]).startswith("not shown")
    assert verdict([{"delta": -0.4, "t": -3.0, "seed": 0.5}]).startswith("not shown")


def test_models_over_seeds_read_each_replicate_and_the_zoo_run_as_seed_0():
    """A model's seed replicates (NAME-seedN) line up with the zoo's own run as seed 0; another
    model whose name extends it (the blur baseline) is not taken for a replicate."""
    from bench.method_vs_baseline import over_seeds

    def evaluation(lfw, cfp_fp):
        return {"protocols": {p: {"conditions": {"blur0": {"accuracy": a / 100}}}
                              for p, a in (("lfw-view1", lfw), ("cfp-fp", cfp_fp))}}
    evaluations = {"base": evaluation(99.3, 86.7), "base-seed2": evaluation(98.9, 87.2),
                   "base-seed1": evaluation(99.1, 86.6), "base-blur": evaluation(98.8, 86.0),
                   "other": evaluation(99.0, 85.0)}
    rows = over_seeds(evaluations, ["base", "base-blur", "other"])
    assert rows == [["`base`", "0, 1, 2", "99.30 / 99.10 / 98.90", "99.10", "86.70 / 86.60 / 87.20", "86.83"]]
