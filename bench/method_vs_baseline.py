"""Each method minus the baseline fine-tuned exactly alike, per protocol and condition.

    python bench/method_vs_baseline.py                 # reads runs/NAME/eval.json (train/zoo_finetune.sh)
    python bench/method_vs_baseline.py --evals DIR     # eval JSONs elsewhere: DIR/NAME/eval.json

Every model of the fine-tuned zoo shares data, steps, seed, schedule and loss with its
baseline (train/configs/finetune*.toml), so a difference is the method's. The protocols'
folds are the same pairs for every model, so each cell is the mean of the 10 per-fold
accuracy differences (percentage points) +- their std, and t = mean / (std / sqrt(10)):
|t| >= 2.26 is a difference the folds support at 95% (two-sided, 9 degrees of freedom).
Then one line per claim of the papers, saying whether this data shows it.
Writes bench/results/method_vs_baseline.{md,json}.
"""
from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path
from typing import Dict, List, Tuple

import numpy as np

REPO = Path(__file__).resolve().parents[1]
from bench.common import write_results
from train.publish import merged_evaluation
from zoo.tables import markdown_table

BASELINE = "mobilefacenet.fss-ft"
BLUR_BASELINE = "mobilefacenet.fss-ft-blur"
# (model, its baseline, what it is)
COMPARISONS = [
    ("scan-mobilefacenet.fss-ft", BASELINE, "SCAN"),
    ("sranet-mobilefacenet.fss-ft", BASELINE, "SRANet"),
    ("arface-mobilefacenet.fss-ft", BASELINE, "ARFace"),
    ("hpda-mobilefacenet.fss-ft", BASELINE, "HPDA"),
    ("mobilefacenet.fss-ft-npcface", BASELINE, "NPCFace"),
    ("scan-mobilefacenet.fss-ft-blur", BLUR_BASELINE, "SCAN, both blur-augmented"),
    ("mobilefacenet.y1", BASELINE, "y1 untouched (what fine-tuning changed, negated)"),
]
T_95 = 2.26  # two-sided 95% critical t for 9 degrees of freedom (10 folds)
CLEAN = "blur0"  # zoo.evaluate names the clean condition of a blur sweep blur0


def fold_accuracies(evaluation: Dict) -> Dict[Tuple[str, str], np.ndarray]:
    return {(protocol, condition): np.array(values["fold_accuracies"]) * 100
            for protocol, entry in evaluation["protocols"].items()
            for condition, values in entry["conditions"].items()}


def paired(model: Dict, baseline: Dict) -> Dict[Tuple[str, str], Dict[str, float]]:
    """(protocol, condition) -> mean, std and t of the per-fold accuracy differences (pp)."""
    out = {}
    base = fold_accuracies(baseline)
    for key, folds in fold_accuracies(model).items():
        if key not in base or len(base[key]) != len(folds):
            continue
        diff = folds - base[key]
        std = float(diff.std(ddof=1)) if len(diff) > 1 else 0.0
        t = float(diff.mean() / (std / math.sqrt(len(diff)))) if std > 0 else (0.0 if diff.mean() == 0 else math.inf)
        out[key] = {"delta": float(diff.mean()), "std": std, "t": t}
    return out


def verdict(cells: List[Dict[str, float]]) -> str:
    """'shown' if every cell gains and one significantly; 'contradicted' if one loses significantly
    and none gains significantly; 'mixed' if both happen (with several cells at 95%, one
    significant cell either way is what chance alone gives now and then)."""
    gains, losses = any(c["t"] >= T_95 for c in cells), any(c["t"] <= -T_95 for c in cells)
    if gains and losses:
        return "mixed (a significant gain and a significant loss)"
    if losses:
        return "contradicted (a significant loss)"
    if cells and all(c["delta"] > 0 for c in cells) and gains:
        return "shown"
    return "not shown (no consistent, significant gain)"


def claims(deltas: Dict[str, Dict[Tuple[str, str], Dict[str, float]]]) -> List[List[str]]:
    rows = []

    def cells(name, keys):
        table = deltas.get(name, {})
        return [table[k] for k in keys if k in table]

    def describe(name, keys):
        return "; ".join(f"{p} {c}: {deltas[name][(p, c)]['delta']:+.2f} (t {deltas[name][(p, c)]['t']:+.1f})"
                         for p, c in keys if (p, c) in deltas.get(name, {}))

    protocols = ("lfw-view1", "cfp-ff", "cfp-fp")
    scan = "scan-mobilefacenet.fss-ft"
    if scan in deltas:
        by_blur = {c: np.mean([deltas[scan][(p, c)]["delta"] for p in protocols if (p, c) in deltas[scan]])
                   for c in (CLEAN, "blur2", "blur4")}
        grows = by_blur[CLEAN] < by_blur["blur2"] < by_blur["blur4"]
        significant = any(deltas[scan][(p, "blur4")]["t"] >= T_95 for p in protocols if (p, "blur4") in deltas[scan])
        rows.append(["SCAN's gain grows with blur (Figs. 9-10)",
                     "shown" if grows and significant and by_blur["blur4"] > 0 else "not shown",
                     "mean gain over protocols: " + ", ".join(f"{c} {v:+.2f}" for c, v in by_blur.items())])
    for name, claim in (("hpda-mobilefacenet.fss-ft", "HPDA helps on profiles (CFP-FP)"),
                        ("arface-mobilefacenet.fss-ft", "ARFace helps on profiles (CFP-FP)")):
        if name in deltas:
            keys = [("cfp-fp", CLEAN)]
            rows.append([claim, verdict(cells(name, keys)), describe(name, keys)])
    for name, claim in (("sranet-mobilefacenet.fss-ft", "SRANet helps overall"),
                        ("mobilefacenet.fss-ft-npcface", "NPCFace helps overall")):
        if name in deltas:
            keys = [(p, CLEAN) for p in protocols]
            rows.append([claim, verdict(cells(name, keys)), describe(name, keys)])
    blur_scan = "scan-mobilefacenet.fss-ft-blur"
    if blur_scan in deltas:
        keys = [(p, c) for p in protocols for c in ("blur2", "blur4")]
        rows.append(["SCAN still helps under blur once training is blur-augmented", verdict(cells(blur_scan, keys)),
                     describe(blur_scan, keys)])
    return rows


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python bench/method_vs_baseline.py", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--evals", type=Path, default=REPO / "runs",
                        help="folder holding NAME/eval.json per zoo model (default: runs/)")
    args = parser.parse_args(argv)
    evaluations = {}
    for name in {n for pair in COMPARISONS for n in pair[:2]}:
        paths = [p for p in (args.evals / name / "eval.json", args.evals / name / "eval-lowres.json") if p.is_file()]
        if paths and paths[0].name == "eval.json":
            evaluations[name] = merged_evaluation(paths)
    if BASELINE not in evaluations:
        print(f"error: {args.evals / BASELINE / 'eval.json'} is missing: run bash train/zoo_finetune.sh first",
              file=sys.stderr)
        return 2
    deltas, rows = {}, []
    for name, baseline, what in COMPARISONS:
        if name not in evaluations or baseline not in evaluations:
            print(f"skipping {name}: no eval.json for it or for {baseline}", file=sys.stderr)
            continue
        deltas[name] = paired(evaluations[name], evaluations[baseline])
        for (protocol, condition), cell in deltas[name].items():
            mark = " *" if abs(cell["t"]) >= T_95 else ""
            rows.append([what, f"`{baseline}`", protocol, condition,
                         f"{cell['delta']:+.2f} ± {cell['std']:.2f}{mark}", f"{cell['t']:+.1f}"])
    table = markdown_table(["method", "minus", "protocol", "condition", "Δ accuracy, pp (fold std)", "t"], rows)
    table += ("\n`*`: |t| >= 2.26, a difference the 10 paired folds support at 95%. LFW/CFP numbers are not "
              "identity-disjoint: every model starts from y1, trained on MS1M.\n\n")
    claim_rows = claims(deltas)
    table += markdown_table(["paper claim", "this data", "evidence (pp, t)"], claim_rows)
    payload = {"deltas": {name: {f"{p}/{c}": v for (p, c), v in cells.items()} for name, cells in deltas.items()},
               "claims": [{"claim": c, "verdict": v, "evidence": e} for c, v, e in claim_rows]}
    print(table)
    print(f"wrote {write_results('method_vs_baseline', payload, table)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
