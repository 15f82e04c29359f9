"""Choose a schedule on held-out *training* identities, never on test pairs.

    python -m train.validate finetune --data cache/packed/facescope-small-train.npz \
        --out runs/val-lr0.005 --set init.backbone_lr=0.005

Holds out a seeded fraction of the identities of the packed training set, trains the recipe
on the rest, then scores verification on pairs drawn among the held-out faces: every
same-identity pair (up to --pairs/2) and as many different-identity pairs, 10 stratified
folds, clean and blurred (`--conditions`). Writes OUT/validation.json; compare runs side by
side with `python -m train.validate --compare runs/val-*`.

A finished (or killed) run resumes from OUT/state, so rerunning it with `--wise-alpha` scores the
trained weights averaged with the start (train/wise.py) without training again.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Dict, List, Sequence

import numpy as np
import torch

from train import wise
from train.config import ConfigError, load_recipe
from train.data import PackedFaces
from train.engine import Trainer
from zoo import metrics
from zoo.data.degrade import parse_degradation
from zoo.evaluate import embed_images
from zoo.tables import markdown_table

RESULT_FILE = "validation.json"


def split_identities(data: PackedFaces, fraction: float, seed: int):
    """(train, held-out) PackedFaces; held-out identities are a seeded random `fraction`."""
    if not 0 < fraction < 1:
        raise ValueError(f"--holdout must be between 0 and 1, got {fraction}")
    rng = np.random.default_rng(seed)
    identities = rng.permutation(data.num_classes)
    held = np.zeros(data.num_classes, dtype=bool)
    held[identities[:max(2, int(round(fraction * data.num_classes)))]] = True
    mask = torch.from_numpy(held)[data.labels]
    return data.subset(~mask), data.subset(mask)


def validation_pairs(labels: np.ndarray, count: int, seed: int):
    """(first, second, same) index arrays: up to count/2 positives, as many negatives."""
    rng = np.random.default_rng(seed)
    positives = [(i, j) for label in np.unique(labels) for idx in [np.flatnonzero(labels == label)]
                 for a, i in enumerate(idx) for j in idx[a + 1:]]
    positives = [positives[k] for k in rng.permutation(len(positives))[:count // 2]]
    negatives = set()
    while len(negatives) < len(positives):
        i, j = rng.integers(len(labels), size=2)
        if labels[i] != labels[j]:
            negatives.add((min(i, j), max(i, j)))
    pairs = np.array(positives + sorted(negatives))
    same = np.array([True] * len(positives) + [False] * len(negatives))
    return pairs[:, 0], pairs[:, 1], same


def score(model, faces: PackedFaces, conditions: Sequence[str], pairs: int, seed: int) -> Dict[str, Dict]:
    labels = faces.labels.numpy()
    first, second, same = validation_pairs(labels, pairs, seed)
    folds = np.empty(len(same), dtype=int)
    for value in (True, False):  # stratified: each fold gets its share of both kinds
        index = np.flatnonzero(same == value)
        folds[index] = np.arange(len(index)) % 10
    results = {}
    for name in conditions:
        degradation = parse_degradation(name)
        images = degradation.apply_batch(faces.images.numpy())
        embeddings = embed_images(model, images)
        scores = metrics.cosine_scores(embeddings[first], embeddings[second])
        kfold = metrics.kfold_accuracy(scores, same, folds)
        results[degradation.name] = {"accuracy": kfold["accuracy"], "accuracy_std": kfold["accuracy_std"],
                                     "pairs": int(len(same))}
    return results


def compare(folders: List[Path]) -> str:
    """A markdown table of validation.json files: a row per run, and one per other WiSE-FT weight it scored."""
    rows, conditions = [], []
    for folder in folders:
        path = folder / RESULT_FILE
        if not path.is_file():
            raise FileNotFoundError(f"{path}: no validation result (run python -m train.validate first)")
        result = json.loads(path.read_text())
        conditions = conditions or list(result["held_out"])
        rows.append((folder.name, result["overrides"], result["held_out"]))
        rows += [(f"{folder.name}, wise_alpha {value}", result["overrides"], held)
                 for value, held in result.get("wise_alpha", {}).items() if held != result["held_out"]]
    return markdown_table(["run", "overrides"] + conditions, [
        [name, " ".join(overrides) or "-"]
        + [f"{held[c]['accuracy'] * 100:.2f} +- {held[c]['accuracy_std'] * 100:.2f}" for c in conditions]
        for name, overrides, held in rows])


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m train.validate", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("recipe", nargs="?", help="recipe name or .toml path (as for train.run)")
    parser.add_argument("--data", type=Path, help="packed training faces (.npz from train.prepare)")
    parser.add_argument("--out", type=Path, help="run folder for this candidate")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE",
                        help="override a recipe value (repeatable), e.g. --set init.backbone_lr=0.005")
    parser.add_argument("--holdout", type=float, default=0.1, help="fraction of identities held out (default 0.1)")
    parser.add_argument("--pairs", type=int, default=2000, help="validation pairs, half same (default 2000)")
    parser.add_argument("--conditions", default="clean,blur2,blur4",
                        help="comma-separated test conditions (default clean,blur2,blur4)")
    parser.add_argument("--wise-alpha", default="", metavar="A,B,...",
                        help="also score (1 - A) * start + A * trained weights for each A (WiSE-FT), e.g. 0.25,0.5,0.75")
    parser.add_argument("--seed", type=int, default=0, help="seed of the identity split and the pairs")
    parser.add_argument("--threads", type=int, default=0, help="CPU threads for torch (default: torch's choice)")
    parser.add_argument("--compare", nargs="+", type=Path, metavar="RUN",
                        help="print a table of finished validation runs instead of training")
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        if args.compare:
            print(compare(args.compare))
            return 0
        if not (args.recipe and args.data and args.out):
            raise ConfigError("give RECIPE, --data and --out (or --compare RUN ...)")
        config = load_recipe(args.recipe, args.overrides)
        if not args.data.is_file():
            raise FileNotFoundError(f"{args.data}: no such packed training set")
        train, held = split_identities(PackedFaces(args.data), args.holdout, args.seed)
        conditions = [c.strip() for c in args.conditions.split(",") if c.strip()]
        try:
            alphas = [float(a) for a in args.wise_alpha.split(",") if a.strip()]
        except ValueError:
            raise ConfigError(f"--wise-alpha {args.wise_alpha!r}: give weights between 0 and 1, e.g. 0.25,0.5,0.75") from None
        recipe_alpha = wise.alpha(config)
        alphas = [recipe_alpha, *(wise.checked(value, bool(config["init"]["from"])) for value in alphas)]
        trainer = Trainer(config, train, args.out, device="cpu")
        start = {k: v.clone() for k, v in trainer.model.state_dict().items()}
        before = score(trainer.model, held, conditions, args.pairs, args.seed)
        trainer.load_state()
        trainer.fit()
        trained = {k: v.clone() for k, v in trainer.model.state_dict().items()}
        averaged = {}
        for value in dict.fromkeys(alphas):
            trainer.model.load_state_dict(trained)
            wise.average_with_start(trainer.model, start, value)
            averaged[value] = score(trainer.model, held, conditions, args.pairs, args.seed)
    except (ConfigError, FileNotFoundError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    result = {"recipe": config["recipe"], "overrides": args.overrides, "holdout": args.holdout,
              "seed": args.seed, "train_identities": train.num_classes, "held_out_identities": held.num_classes,
              "held_out_images": len(held), "before": before, "held_out": averaged[recipe_alpha],
              "wise_alpha": {f"{value:g}": scores for value, scores in averaged.items()}}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / RESULT_FILE).write_text(json.dumps(result, indent=2) + "\n")
    print(compare([args.out]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
