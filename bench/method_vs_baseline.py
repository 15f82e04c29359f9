"""Each method minus the baseline fine-tuned exactly alike, per protocol and condition.

    python bench/method_vs_baseline.py                 # reads runs/NAME/eval.json (train/zoo_finetune.sh)
    python bench/method_vs_baseline.py --evals DIR     # eval JSONs elsewhere: DIR/NAME/eval.json

Every model of the fine-tuned zoo shares data, steps, seed, schedule and loss with its
baseline (train/configs/finetune*.toml), so a difference is the method's. The protocols'
folds are the same pairs for every model, so each cell is the mean of the 10 per-fold
accuracy differences (percentage points) +- their std, and t = mean / (std / sqrt(10)):
|t| >= 2.26 is a difference the folds support at 95% (two-sided, 9 degrees of freedom).
The folds see the test pairs' sampling, not training's: where the baseline was also retrained
with other seeds (`bash train/zoo_finetune.sh --seeds 1 2`: runs/mobilefacenet.fss-ft-seedN/),
their rows show how far the seed alone moves it, and a claim's cell counts as a significant
difference only when it also exceeds the largest seed-only difference in that cell.
Then one line per claim of the papers, saying whether this data shows it, and each model retrained
with other seeds (`--seeds 1 2 --models NAME...`) with its clean LFW View 1 and CFP-FP accuracy
per seed and their mean.
Writes bench/results/method_vs_baseline.{md,json}.
"""
from __future__ import annotations

import argparse
import math
import re
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
REPLICATE = re.compile(r"(?P<model>.+)-seed(?P<seed>\d+)")  # runs/NAME-seedN: NAME retrained with run.seed N
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


def load_evaluation(folder: Path) -> Dict:
    """A model's eval.json, merged with its eval-lowres.json when there is one."""
    paths = [folder / "eval.json", folder / "eval-lowres.json"]
    return merged_evaluation([p for p in paths if p.is_file()])


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


def significant(cell: Dict[str, float]) -> int:
    """+1 / -1 for a gain / loss the folds support at 95% and larger than the seed alone moves the
    baseline in that cell (`seed`, 0 when unknown); 0 otherwise."""
    if abs(cell["delta"]) <= cell.get("seed", 0.0) or abs(cell["t"]) < T_95:
        return 0
    return 1 if cell["t"] > 0 else -1


def verdict(cells: List[Dict[str, float]]) -> str:
    """'shown' if every cell gains and one significantly; 'contradicted' if one loses significantly
    and none gains significantly; 'mixed' if both happen (with several cells at 95%, one
    significant cell either way is what chance alone gives now and then)."""
    gains, losses = any(significant(c) > 0 for c in cells), any(significant(c) < 0 for c in cells)
    if gains and losses:
        return "mixed (a significant gain and a significant loss)"
    if losses:
        return "contradicted (a significant loss)"
    if cells and all(c["delta"] > 0 for c in cells) and gains:
        return "shown"
    return "not shown (no consistent, significant gain)"


def claims(deltas: Dict[str, Dict[Tuple[str, str], Dict[str, float]]],
           seed_spread: Dict[Tuple[str, str], float]) -> List[List[str]]:
    """One row per paper claim; `seed_spread` is the largest |difference| the seed alone made per cell
    (measured on the clean-recipe baseline, the proxy for every comparison)."""
    rows = []

    def cells(name, keys):
        table = deltas.get(name, {})
        return [{**table[k], "seed": seed_spread.get(k, 0.0)} for k in keys if k in table]

    def describe(name, keys):
        def cell(key):
            seed = f", seed alone {seed_spread[key]:.2f}" if key in seed_spread else ""
            return f"{key[0]} {key[1]}: {deltas[name][key]['delta']:+.2f} (t {deltas[name][key]['t']:+.1f}{seed})"
        return "; ".join(cell(key) for key in keys if key in deltas.get(name, {}))

    protocols = ("lfw-view1", "cfp-ff", "cfp-fp")
    scan = "scan-mobilefacenet.fss-ft"
    if scan in deltas:
        by_blur = {c: np.mean([deltas[scan][(p, c)]["delta"] for p in protocols if (p, c) in deltas[scan]])
                   for c in (CLEAN, "blur2", "blur4")}
        grows = by_blur[CLEAN] < by_blur["blur2"] < by_blur["blur4"]
        gains = any(significant(c) > 0 for c in cells(scan, [(p, "blur4") for p in protocols]))
        rows.append(["SCAN's gain grows with blur (Figs. 9-10)",
                     "shown" if grows and gains and by_blur["blur4"] > 0 else "not shown",
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


def over_seeds(evaluations: Dict[str, Dict], models: List[str]) -> List[List[str]]:
    """A row per model with seed replicates (runs/NAME-seedN; the zoo's own run is seed 0): its
    clean accuracy on LFW View 1 and CFP-FP per seed, and their mean."""
    rows = []
    for model in models:
        runs = {0: model, **{int(match["seed"]): name for name in evaluations
                             for match in [REPLICATE.fullmatch(name)] if match and match["model"] == model}}
        if len(runs) < 2 or model not in evaluations:
            continue
        row = [f"`{model}`", ", ".join(map(str, sorted(runs)))]
        for protocol in ("lfw-view1", "cfp-fp"):
            values = [evaluations[runs[s]]["protocols"][protocol]["conditions"][CLEAN]["accuracy"] * 100
                      for s in sorted(runs)]
            row += [" / ".join(f"{v:.2f}" for v in values), f"{np.mean(values):.2f}"]
        rows.append(row)
    return rows


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python bench/method_vs_baseline.py", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--evals", type=Path, default=REPO / "runs",
                        help="folder holding NAME/eval.json per zoo model (default: runs/)")
    args = parser.parse_args(argv)
    models = sorted({n for pair in COMPARISONS for n in pair[:2]})
    replicates = {folder.name: match["model"] for folder in args.evals.glob("*-seed*")
                  for match in [REPLICATE.fullmatch(folder.name)] if match and match["model"] in models}
    evaluations = {name: load_evaluation(args.evals / name) for name in [*models, *replicates]
                   if (args.evals / name / "eval.json").is_file()}
    seeds = sorted(name for name, model in replicates.items() if model == BASELINE and name in evaluations)
    if BASELINE not in evaluations:
        print(f"error: {args.evals / BASELINE / 'eval.json'} is missing: run bash train/zoo_finetune.sh first",
              file=sys.stderr)
        return 2
    comparisons = COMPARISONS + [(name, BASELINE, f"baseline, run.seed {REPLICATE.fullmatch(name)['seed']}") for name in seeds]
    deltas, rows = {}, []
    for name, baseline, what in comparisons:
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
    seed_spread = {key: max(abs(deltas[name][key]["delta"]) for name in seeds if key in deltas[name])
                   for name in seeds for key in deltas[name]}
    if seeds:
        seed_cells = [cell for name in seeds for cell in deltas[name].values()]
        table += (f"Seed spread: the baseline retrained with {len(seeds)} other seed(s) moves by up to "
                  f"{max(seed_spread.values()):.2f} pp in a cell, and {sum(abs(c['t']) >= T_95 for c in seed_cells)} "
                  f"of its {len(seed_cells)} seed-only differences pass the folds' |t| >= 2.26: the folds see "
                  "the pairs' noise, not training's. A claim's cell below counts as significant only when it "
                  "also exceeds the seed's own difference there.\n\n")
    claim_rows = claims(deltas, seed_spread)
    table += markdown_table(["paper claim", "this data", "evidence (pp, t)"], claim_rows)
    seed_rows = over_seeds(evaluations, models)
    if seed_rows:
        table += ("\nEach model retrained with other seeds (`bash train/zoo_finetune.sh --seeds 1 2 --models NAME`; "
                  "seed 0 is the zoo's), accuracy % on clean pairs:\n\n")
        table += markdown_table(["model", "seeds", "LFW View 1 per seed", "LFW View 1 mean",
                                 "CFP-FP per seed", "CFP-FP mean"], seed_rows)
    payload = {"deltas": {name: {f"{p}/{c}": v for (p, c), v in cells.items()} for name, cells in deltas.items()},
               "seed_spread": {f"{p}/{c}": v for (p, c), v in seed_spread.items()},
               "claims": [{"claim": c, "verdict": v, "evidence": e} for c, v, e in claim_rows],
               "over_seeds": [dict(zip(["model", "seeds", "lfw_view1", "lfw_view1_mean", "cfp_fp", "cfp_fp_mean"], row))
                              for row in seed_rows]}
    print(table)
    print(f"wrote {write_results('method_vs_baseline', payload, table)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
