"""Turn a training run (or a checkpoint folder) into a published FaceScope checkpoint.

    python -m train.publish runs/scan --local scan-ir18                  # into the local zoo
    python -m train.publish runs/scan --repo-id me/scan-ir18             # to a Hugging Face Hub repo
    python -m train.publish runs/scan --local scan-ir18 --eval results.json
    python -m train.publish runs/scan --out runs/scan/checkpoint          # a folder outside the zoo
    python -m train.publish zoo/checkpoints/scan-ir18 --repo-id me/scan-ir18 --revision v2

From a run folder (what train.run writes): the model is rebuilt from the recipe in
state/state.json, its weights loaded from state/model.safetensors and turned into its
method's inference form (`FaceModel.inference_form`: SCAN folds into a plain network; the
card records what it was folded from), after averaging the trained weights with the start when
the recipe's init.wise_alpha (or --wise-alpha) is below 1 (train/wise.py). The checkpoint gets a model card with the
training data, recipe, train time and throughput, the metrics of --eval (default RUN/eval.json
when present, written by `python -m zoo.evaluate --out RUN/eval.json`), intended use and
limits; config.json carries the same record and the verification threshold. A fine-tuned
model's card names its start as the Hub's `base_model` (--base-model overrides the default), and
the per-pair rows `zoo.evaluate --pairs` wrote beside an --eval JSON travel as pairs.csv.gz.
From a checkpoint folder: published as is, or with a regenerated card when --eval is given.

An existing checkpoint of another architecture (model name, width, head) - in the local zoo or
on the hub repo's branch - is replaced only with --force. The hub endpoint is HF_ENDPOINT
(default https://huggingface.co) and the token HF_TOKEN or `hf auth login`.
"""
from __future__ import annotations

import argparse
import csv
import gzip
import io
import json
import shutil
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

from train import wise
from train.checkpoint import STATE_DIR
from train.engine import start_model
import zoo
from zoo import card, hub
from zoo.checkpoint import CONFIG_FILE, PAIR_RESULTS_FILE, CheckpointError, load_weights
from zoo.data.paths import atomic_folder, atomic_write



def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m train.publish", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("source", type=Path, metavar="RUN_OR_FOLDER",
                        help="a run folder from train.run (has state/state.json) or a checkpoint folder "
                             "(model.safetensors + config.json + README.md)")
    target = parser.add_mutually_exclusive_group(required=True)
    target.add_argument("--repo-id", metavar="ORG/NAME", help="upload to this Hugging Face Hub model repo")
    target.add_argument("--local", metavar="NAME", help=f"write into the local zoo ({zoo.LOCAL_ZOO}/NAME)")
    target.add_argument("--out", type=Path, metavar="FOLDER",
                        help="write the checkpoint folder here, outside the zoo (e.g. a seed replicate)")
    parser.add_argument("--revision", metavar="BRANCH", help="hub branch to commit to (created if needed; default main)")
    parser.add_argument("--eval", type=Path, metavar="RESULTS.json", action="append",
                        help="metrics from `python -m zoo.evaluate --out` for the card (default RUN/eval.json); "
                             "repeat to merge runs that measured other conditions of the same model")
    parser.add_argument("--base-model", metavar="ORG/NAME",
                        help="the card's base_model: the Hub repo of the checkpoint a fine-tuned model started "
                             f"from (default: the recorded init if it is a repo id, else a zoo name under the "
                             f"--repo-id's organisation, or {hub.ZOO_ORG} with --local)")
    parser.add_argument("--wise-alpha", type=float, metavar="ALPHA",
                        help="publish (1 - ALPHA) * start + ALPHA * trained weights of a fine-tuning run "
                             "(WiSE-FT; default: the recipe's init.wise_alpha, 1 = as trained)")
    parser.add_argument("--force", action="store_true", help="replace a checkpoint of another architecture")
    parser.add_argument("--private", action="store_true", help="create the hub repo private")
    parser.add_argument("--message", help="hub commit message")
    return parser.parse_args(argv)


def read_run(run_dir: Path, wise_alpha: Optional[float] = None) -> Tuple[zoo.FaceModel, Dict[str, Any]]:
    """The trained model of a run folder, in its inference form, and its training record;
    `wise_alpha` overrides the recipe's init.wise_alpha (the record keeps the value used)."""
    path = run_dir / STATE_DIR / "state.json"
    state = json.loads(path.read_text())
    if wise_alpha is not None:
        state["config"].setdefault("init", {})["wise_alpha"] = wise_alpha
    try:
        record = {"config": state["config"], "data": state["data"], "steps": state["step"],
                  "total_steps": state["total_steps"], "train_seconds": state["train_seconds"],
                  "device": state["device"], "world_size": state["world_size"],
                  "images_per_s": _images_per_second(run_dir / "log.jsonl"), "folded_from": None,
                  "init": initialisation(state["config"].get("init", {}).get("from"))}
        model_config = dict(state["config"]["model"])
    except KeyError as err:
        raise ValueError(f"{path}: no {err.args[0]!r} entry; not a state.json written by train.run") from None
    # runs that started from a checkpoint record the architecture they resolved (embedding
    # size, input crop, BN epsilons inherited from it); older runs only have the recipe
    model = (zoo.build(state["architecture"]) if "architecture" in state
             else zoo.build(model_config.pop("name"), **model_config))
    load_weights(model, run_dir / STATE_DIR / "model.safetensors")
    weight = wise.alpha(state["config"])
    if weight != 1.0:
        start, _ = start_model(state["config"])
        wise.average_with_start(model, start.state_dict(), weight)
    inference = model.inference_form()
    if inference is not model:
        record["folded_from"] = model.name
    return inference.eval(), record


def initialisation(source: Optional[str]) -> Optional[Dict[str, Any]]:
    """What a fine-tuned run started from: the checkpoint and the provenance its config records."""
    if not source:
        return None
    folder = Path(zoo.LOCAL_ZOO) / source if (Path(zoo.LOCAL_ZOO) / source).is_dir() else Path(source)
    imported = zoo.read_config(folder).get("imported_from", {}) if folder.is_dir() else {}
    return {"from": source, "source": imported.get("source"), "trained_on": imported.get("note"),
            "licence": imported.get("licence")}


def _images_per_second(log: Path) -> Optional[float]:
    """Median throughput over the logged windows: robust to the slow first (warm-up) window."""
    if not log.is_file():
        return None
    rates = [json.loads(line)["images_per_s"] for line in log.read_text().splitlines()
             if line.strip() and "images_per_s" in line]
    return statistics.median(rates) if rates else None


def merged_evaluation(paths: List[Path]) -> Dict[str, Any]:
    """zoo.evaluate JSONs of one model as one: each protocol's conditions side by side."""
    merged: Dict[str, Any] = {}
    for path in paths:
        evaluation = json.loads(path.read_text())
        if not merged:
            merged = evaluation
            continue
        if evaluation.get("model", {}).get("name") != merged.get("model", {}).get("name"):
            raise ValueError(f"{path} measured {evaluation.get('model', {}).get('name')!r}, "
                             f"{paths[0]} measured {merged.get('model', {}).get('name')!r}: not one model")
        for protocol, entry in evaluation["protocols"].items():
            target = merged["protocols"].setdefault(protocol, entry)
            if target is not entry:
                target["conditions"].update(entry["conditions"])
    return merged


def read_metrics(paths: List[Path], model: zoo.FaceModel, training: Optional[Dict[str, Any]]) -> Dict[str, Any]:
    """Compact metrics of zoo.evaluate JSON(s), refused when they measured another model."""
    path = paths[0]
    try:
        metrics = card.summarize(merged_evaluation(paths))
    except KeyError as err:
        raise ValueError(f"{path}: not a zoo.evaluate results JSON (no {err.args[0]!r} entry)") from None
    measured = metrics["evaluated_model"]
    allowed = {model.name, (training or {}).get("folded_from")}
    if measured is not None and measured not in allowed:
        raise ValueError(f"{path} measured {measured!r}, not this model ({model.name!r}): "
                         "evaluate this checkpoint, or give the right --eval")
    return metrics


def copy_pair_results(eval_paths: Optional[List[Path]], folder: Path) -> None:
    """The per-pair rows `zoo.evaluate --pairs` wrote beside each --eval JSON (NAME.pairs.csv.gz),
    as the checkpoint's pairs.csv.gz (several evaluations: their rows together), so the app's error
    browser can show the card's evaluation pair by pair."""
    sources = [p.with_suffix(".pairs.csv.gz") for p in eval_paths or []]
    sources = [p for p in sources if p.is_file()]
    if not sources:
        return
    header, rows = None, []
    for source in sources:
        with gzip.open(source, "rt", newline="") as text:
            reader = csv.reader(text)
            header = next(reader)
            rows += list(reader)
    out = io.StringIO()
    csv.writer(out).writerows([header, *rows])
    atomic_write(folder / PAIR_RESULTS_FILE, lambda f: f.write(gzip.compress(out.getvalue().encode(), mtime=0)))


def existing_architecture(folder: Path) -> Optional[Dict[str, Any]]:
    """The architecture a local checkpoint folder holds; None when it holds no FaceScope config."""
    try:
        return hub.architecture(json.loads((folder / CONFIG_FILE).read_text()))
    except (OSError, ValueError):
        return None


def local_folder(name: str) -> Path:
    """The local zoo's folder for --local NAME."""
    if Path(name).name != name or name.startswith("."):
        raise ValueError(f"--local {name!r}: give a plain folder name, e.g. ir18-arcface")
    return Path(zoo.LOCAL_ZOO) / name


def write_folder(model: zoo.FaceModel, source: Optional[Path], target: Path, force: bool,
                 text: Optional[str], extra: Optional[Dict[str, Any]]) -> Path:
    """Write a checkpoint folder atomically: the regenerated checkpoint, or `source`'s files as is."""
    local = hub.architecture({"architecture": model.config.to_dict()})
    existing = existing_architecture(target) if target.exists() else local
    if existing != local and not force:
        raise CheckpointError(f"{target} holds {hub.describe(existing)}, this checkpoint is "
                              f"{hub.describe(local)}: refusing to overwrite a different architecture; choose "
                              "another name or pass --force")
    if source is None:
        return zoo.save(model, target, card=text, extra_config=extra)
    with atomic_folder(target) as staging:
        for file in hub.HUB_FILES:
            if (source / file).is_file():
                shutil.copy2(source / file, staging / file)
    return target


def publish(args: argparse.Namespace) -> str:
    """Do what the command line asks; returns the line to print."""
    source: Path = args.source
    if args.revision and not args.repo_id:
        raise ValueError("--revision names a hub branch: use it with --repo-id")
    for path in args.eval or []:
        if not path.is_file():
            raise FileNotFoundError(f"--eval {path}: no such file")
    as_is = imported = None
    if (source / STATE_DIR / "state.json").is_file():
        model, training = read_run(source, args.wise_alpha)
        eval_path = args.eval or ([source / "eval.json"] if (source / "eval.json").is_file() else None)
    elif (source / CONFIG_FILE).is_file():
        if args.wise_alpha is not None:
            raise ValueError("--wise-alpha averages a training run's weights with its start: give a run folder")
        model = zoo.load_checkpoint(source)
        stored = zoo.read_config(source)
        training, imported = stored.get("training"), stored.get("imported_from")
        eval_path = args.eval
        as_is = source if eval_path is None else None
    else:
        raise FileNotFoundError(f"{source}: neither a run folder (no {STATE_DIR}/state.json) nor a checkpoint "
                                f"folder (no {CONFIG_FILE})")
    metrics = read_metrics(eval_path, model, training) if eval_path is not None else None
    target = local_folder(args.local) if args.local else args.out
    name = args.repo_id or args.local or target.name
    text = extra = None
    if as_is is None:
        org = args.repo_id.split("/")[0] if args.repo_id else hub.ZOO_ORG
        text = card.render(model, training, metrics, name=name, imported=imported,
                           base_model=args.base_model or card.base_model(training, org))
        extra = {**card.extra_config(training, metrics), **({"imported_from": imported} if imported else {})}
    if target is not None:
        folder = write_folder(model, as_is, target, args.force, text, extra)
        copy_pair_results(eval_path, folder)
        return f"wrote {model.name} to {folder}"
    with tempfile.TemporaryDirectory(prefix="facescope-publish-") as scratch:
        folder = as_is or zoo.save(model, Path(scratch) / "checkpoint", card=text, extra_config=extra)
        copy_pair_results(None if as_is else eval_path, folder)
        info = hub.publish(folder, args.repo_id, revision=args.revision, force=args.force, private=args.private,
                           commit_message=args.message)
    return f"published {model.name} to {args.repo_id}: commit {info.oid} ({info.commit_url})"


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        print(publish(args))
    except (CheckpointError, FileNotFoundError, ValueError, KeyError) as err:
        print(f"error: {err.args[0] if isinstance(err, KeyError) else err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
