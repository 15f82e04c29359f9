"""Model cards: what a published FaceScope checkpoint is, how it was trained and how well it does.

A card is the README.md of a checkpoint folder (and so of its hub repo): Hugging Face YAML
front matter, then the model, its training data and recipe, the measured metrics and the
intended use and limits. The same facts go machine-readable into config.json (see
`extra_config`), so the app reads each model's verification threshold without parsing
markdown, and a card can be regenerated from a checkpoint folder alone.

    metrics = card.summarize(json.load(open("runs/scan/eval.json")))   # from zoo.evaluate
    text = card.render(model, training, metrics, name="facescope/scan-ir18")
    zoo.save(model, folder, card=text, extra_config=card.extra_config(training, metrics))
"""
from __future__ import annotations

from pathlib import Path
from statistics import mean
from typing import Any, Dict, List, Optional

from huggingface_hub import EvalResult, ModelCardData

from .model import FaceModel
from .tables import condition_label, is_clean, markdown_table, protocol_rank

FACESCOPE_SMALL = "facescope-small"

FACESCOPE_SMALL_DATA = (
    "The FaceScope-small training split: the LFW people of `peopleDevTrain.txt` with at least two "
    "images, minus the LFW people who also appear in CFP, plus a CelebA subset of 299 identities; "
    "faces aligned to 112x112 by FaceScope's 5-point alignment (images whose face was not found "
    "were skipped). The FaceScope-small test protocols - LFW View 1 (`pairsDevTest.txt`), CFP-FF "
    "and CFP-FP - share no identity with it. CelebA's authors state no overlap with LFW; overlap "
    "between CelebA and CFP is not checked.")

INTENDED_USE = (
    "Research and visual analysis of face-recognition methods: comparing methods, studying what a "
    "model attends to, and how accuracy degrades with blur or low resolution, in FaceScope's app "
    "and analyses.")

LIMITS = [
    "Trained on a tiny set by face-recognition standards (thousands of images, hundreds of "
    "identities): accuracy is far below production models and says little about other data.",
    "Not for identification or verification decisions about people - access control, "
    "surveillance, law enforcement or anything with consequences for the person pictured.",
    "Demographic bias is untested: the training and test faces are mostly celebrities and public "
    "figures, and accuracy across age, gender and skin tone was not measured.",
    "The source datasets (LFW, CelebA, CFP) are licensed for non-commercial research only, and so "
    "are these weights.",
]


def summarize(evaluation: Dict[str, Any]) -> Dict[str, Any]:
    """The compact metrics of a `zoo.evaluate` results JSON (no ROC curves or per-fold lists)."""
    settings = evaluation.get("settings", {})
    protocols = {}
    for name, entry in evaluation["protocols"].items():
        conditions = {}
        for condition, values in entry["conditions"].items():
            conditions[condition] = {
                "kind": values["degradation"]["kind"], "amount": values["degradation"]["amount"],
                "pairs": values["pairs"], "accuracy": values["accuracy"], "accuracy_std": values["accuracy_std"],
                "auc": values["auc"], "tar_at_far": {far: v["tar"] for far, v in values["tar_at_far"].items()},
                "threshold": mean(values["fold_thresholds"]),
            }
        protocols[name] = {"pairs_total": entry["pairs_total"], "pairs_skipped": entry["pairs_skipped"],
                           "fallback_alignments": entry["fallback_alignments"], "conditions": conditions}
    summary: Dict[str, Any] = {"evaluated_model": evaluation.get("model", {}).get("name"),
                               "flip_test": settings.get("flip_test", False),
                               "max_pairs": settings.get("max_pairs"), "aligner": settings.get("aligner"),
                               "aligner_version": settings.get("aligner_version"),
                               "protocols": protocols}
    threshold = _threshold(protocols)
    if threshold is not None:
        summary["threshold"], summary["threshold_from"] = threshold
    return summary


def _threshold(protocols: Dict[str, Any]):
    """(threshold, where from): the mean of the 10-fold thresholds of the first clean protocol.

    Those are the thresholds that maximise accuracy on clean faces, which is what the app's
    same/different verdict needs; LFW View 1 comes first, then CFP.
    """
    for protocol in sorted(protocols, key=protocol_rank):
        for condition, values in protocols[protocol]["conditions"].items():
            if is_clean(values):
                return values["threshold"], f"{protocol} {condition}: mean of the 10-fold accuracy thresholds"
    return None


def extra_config(training: Optional[Dict[str, Any]] = None,
                 metrics: Optional[Dict[str, Any]] = None) -> Dict[str, Any]:
    """The config.json entries beside the architecture: threshold, metrics, training record."""
    extra: Dict[str, Any] = {}
    if metrics is not None and "threshold" in metrics:
        extra["threshold"] = metrics["threshold"]
    if metrics is not None:
        extra["metrics"] = metrics
    if training is not None:
        extra["training"] = training
    return extra


# Hub dataset ids and readable names of the protocols, for the card's model-index.
HUB_DATASETS = {"lfw-view1": ("lfw", "LFW View 1 (pairsDevTest)"), "lfw-view2": ("lfw", "LFW View 2 (pairs.txt)"),
                "cfp-ff": ("cfp", "CFP frontal-frontal"), "cfp-fp": ("cfp", "CFP frontal-profile")}


def eval_results(metrics: Optional[Dict[str, Any]]) -> List[EvalResult]:
    """The card's `model-index`: 10-fold accuracy per protocol and condition, the form the Hub
    renders on a model page (one result per protocol x condition, the condition in its name)."""
    results = []
    for protocol, entry in sorted((metrics or {}).get("protocols", {}).items(), key=lambda item: protocol_rank(item[0])):
        dataset, title = HUB_DATASETS.get(protocol, (protocol, protocol))
        for condition, values in entry["conditions"].items():
            results.append(EvalResult(
                task_type="face-verification", task_name="Face verification", dataset_type=dataset,
                dataset_name=title, dataset_config=protocol, dataset_split="test", metric_type="accuracy",
                metric_name=f"10-fold accuracy, {condition_label(condition, values)}",
                metric_config=condition, metric_value=round(100 * values["accuracy"], 2)))
    return results


def base_model(training: Optional[Dict[str, Any]], hub_org: str) -> Optional[str]:
    """The Hub id of the checkpoint a fine-tuned model started from, for the card's `base_model`
    (the Hub links a model to its base): `hf-hub:ORG/NAME` or `ORG/NAME` as recorded; a local zoo
    name as published under `hub_org`, where the zoo's models are published together."""
    source = ((training or {}).get("init") or {}).get("from")
    if not source:
        return None
    source = source.removeprefix("hf-hub:")
    return source if "/" in source else f"{hub_org}/{source}"


def render(model: FaceModel, training: Optional[Dict[str, Any]] = None,
           metrics: Optional[Dict[str, Any]] = None, name: Optional[str] = None,
           license_name: str = "research-only", imported: Optional[Dict[str, Any]] = None,
           base_model: Optional[str] = None) -> str:
    """The README.md of a checkpoint: front matter, model, data, recipe, metrics, use and limits.

    `imported`: the provenance `zoo.importers` recorded for weights trained elsewhere; the
    card then says where they come from instead of a FaceScope training record. `base_model`:
    the Hub id of the checkpoint it was fine-tuned from (`base_model()`).
    """
    name = name or model.name
    if imported:
        training = None
    facescope_small = training is not None and _is_facescope_small(training)
    front = ModelCardData(
        library_name="facescope", license="other", license_name=license_name, base_model=base_model,
        tags=["face-recognition", "facescope", model.config.method], pipeline_tag="image-feature-extraction",
        datasets=["lfw", "celeba"] if facescope_small else None,
        metrics=["accuracy", "roc_auc"] if metrics is not None else None,
        model_name=name if metrics else None, eval_results=eval_results(metrics) or None)
    parts = [f"---\n{front.to_yaml()}\n---\n", f"# {name}\n", _model_section(model, name, training)]
    if imported:
        parts.append(_imported_section(imported))
        origin = {"from": imported.get("source"), "trained_on": imported.get("note")}
    else:
        parts.append(_init_section(training))
        parts.append(_data_section(training, facescope_small))
        parts.append(_recipe_section(training))
        origin = (training or {}).get("init")
    parts.append(_metrics_section(metrics, origin))
    parts.append(f"## Intended use\n\n{INTENDED_USE}\n")
    limits = LIMITS[1:] if origin else LIMITS
    parts.append("## Limits\n\n" + "".join(f"- {item}\n" for item in limits))
    return "\n".join(parts)


def _model_section(model: FaceModel, name: str, training: Optional[Dict[str, Any]]) -> str:
    config = model.config
    lines = ["## Model\n",
             f"FaceScope model `{model.name}`: method `{config.method}`, backbone `{config.backbone}`, width "
             f"{config.width}, head `{config.head or 'backbone default'}`, {model.parameter_count():,} parameters. "
             f"Input: aligned 112x112 {config.channel_order} faces scaled by (x - {config.input_mean:g}) / "
             f"{config.input_std:g}, `model.preprocess(crops)`"
             + ("" if tuple(config.input_size) == (112, 112) else
                f" (the network sees their centre {config.input_size[0]}x{config.input_size[1]} crop)")
             + f"; output: a {config.embedding_dim}-d embedding, two faces compared by cosine similarity.\n"]
    if training and training.get("folded_from"):
        lines.append(f"Published folded: the trained `{training['folded_from']}` with each scale attention "
                     "conv merged into one plain conv (identical outputs, plain-network cost); the learnt t "
                     "per filter ride in config.json for the scale maps.\n")
    lines.append(f"```python\nimport zoo\nmodel = zoo.load(\"{name}\")\nembeddings = model.embed(faces)  "
                 f"# (N, 3, 112, 112) in [-1, 1] -> (N, {config.embedding_dim}), L2-normalised\n```\n")
    return "\n".join(lines)


def _init_section(training: Optional[Dict[str, Any]]) -> str:
    """Where the weights started: a from-scratch run, or the checkpoint it fine-tuned and that
    checkpoint's own provenance and licence (a derived model carries its source's terms)."""
    init = (training or {}).get("init")
    if training is None:
        return "## Initialisation\n\nUnknown.\n"
    if not init:
        return "## Initialisation\n\nRandom (seeded), trained from scratch.\n"
    lines = [f"## Initialisation\n\nFine-tuned from `{init['from']}`."]
    for key, label in (("source", "source"), ("trained_on", "its training data"), ("licence", "its licence")):
        if init.get(key):
            lines.append(f"- {label}: {init[key]}")
    return "\n".join(lines) + "\n"


def _imported_section(imported: Dict[str, Any]) -> str:
    """Provenance of imported weights: not trained by FaceScope, so no recipe of its own."""
    files = "".join(f"- `{Path(f['path']).name}`, SHA-256 `{f['sha256']}`\n" for f in imported.get("files", []))
    return (f"## Initialisation and training\n\nImported unchanged (format `{imported.get('format')}`) from "
            f"`{imported.get('source')}`; not trained by FaceScope.\n\n{files}\n"
            f"- trained on: {imported.get('note') or 'not recorded'}\n- licence: {imported.get('licence')}\n")


def _data_section(training: Optional[Dict[str, Any]], facescope_small: bool) -> str:
    if training is None:
        return "## Training data\n\nNo training record was given when this checkpoint was published: unknown.\n"
    data = training["data"]
    text = (f"## Training data\n\n{data['images']:,} aligned faces of {data['identities']:,} identities "
            f"(`{Path(data['path']).name}`).\n\n")
    return text + (FACESCOPE_SMALL_DATA if facescope_small else
                   "Not the FaceScope-small split: the card's author did not describe this set further.") + "\n"


def _recipe_section(training: Optional[Dict[str, Any]]) -> str:
    if training is None:
        return "## Training recipe\n\nUnknown.\n"
    config = training["config"]
    model = ", ".join(f"{k}={v}" for k, v in config["model"].items())
    loss = ", ".join(f"{k}={v}" for k, v in config["loss"].items())
    optim = config["optim"]
    rows = [("recipe", f"`{config.get('recipe', '?')}` (train/configs)"), ("model", model), ("loss", loss),
            ("optimiser", f"SGD, lr {optim['lr']}, momentum {optim['momentum']}, weight decay "
                          f"{optim['weight_decay']}, batch {optim['batch_size']}"),
            ("schedule", (f"{optim['epochs']} epochs, lr x{optim['gamma']} at epochs {optim['milestones']}"
                          if optim["milestones"] else "constant learning rates")
                         + (f", {optim['warmup_steps']} warm-up steps" if optim.get("warmup_steps") else "")
                         + (f", capped at {config['run']['max_steps']} steps (run.max_steps)"
                            if config.get("run", {}).get("max_steps") else "")),
            ("steps", f"{training['steps']:,} of {training['total_steps']:,}"
                      + ("" if training["steps"] >= training["total_steps"] else " (stopped before the schedule's end)")),
            ("train time", f"{training['train_seconds'] / 3600:.2f} h ({training['train_seconds']:.0f} s) on "
                           f"{training['device']} x {training['world_size']}")]
    init, augment = config.get("init") or {}, config.get("augment") or {}
    if init.get("from"):
        rows.insert(1, ("start", f"`{init['from']}`; class matrix `{init.get('head', 'random')}`; pretrained "
                                 f"tensors at lr {init.get('backbone_lr') or optim['lr']}, new ones at "
                                 f"{init.get('new_layers_lr') or optim['lr']}"))
        if init.get("wise_alpha", 1.0) != 1.0:
            rows.insert(2, ("weights", f"{1 - init['wise_alpha']:g} x start + {init['wise_alpha']:g} x trained "
                                       "(WiSE-FT weight averaging, init.wise_alpha)"))
    if augment:
        blur = (f", Gaussian blur on {augment['blur_fraction']:.0%} of each batch (sigma ~ U{tuple(augment['blur_sigma'])} px)"
                if augment.get("blur_fraction") else ", no blur")
        rows.append(("augmentation", ("horizontal flip p=0.5" if augment.get("flip", True) else "no flip") + blur))
    if config.get("aux"):
        rows.insert(3, ("auxiliary losses", ", ".join(f"{k}={v}" for k, v in config["aux"].items())))
    if training.get("images_per_s") is not None:
        rows.append(("throughput", f"{training['images_per_s']:,.1f} images/s (median over logged windows)"))
    return "## Training recipe\n\n| | |\n|---|---|\n" + "".join(f"| {k} | {v} |\n" for k, v in rows)


def _metrics_section(metrics: Optional[Dict[str, Any]], init: Optional[Dict[str, Any]] = None) -> str:
    if metrics is None:
        return "## Evaluation\n\nNot evaluated: treat its accuracy as unknown.\n"
    fars = sorted({far for p in metrics["protocols"].values() for c in p["conditions"].values()
                   for far in c["tar_at_far"]}, key=float, reverse=True)
    header = ["protocol", "condition", "pairs", "accuracy (10-fold, mean ± std)", "AUC"] + [f"TAR@FAR={f}" for f in fars]
    rows: List[List[str]] = []
    for protocol, entry in metrics["protocols"].items():
        for condition, c in entry["conditions"].items():
            rows.append([protocol, condition_label(condition, c), f"{c['pairs']:,}",
                         f"{c['accuracy']:.4f} ± {c['accuracy_std']:.4f}", f"{c['auc']:.4f}"]
                        + [f"{c['tar_at_far'][f]:.4f}" if f in c["tar_at_far"] else "-" for f in fars])
    table = markdown_table(header, rows)
    notes = []
    if init:
        notes.append(f"**Not identity-disjoint:** these weights start from `{Path(str(init['from'])).name}`, "
                     "trained on data that may share identities with these test sets (MS1M holds many LFW "
                     "and CFP celebrities; see the initialisation above).")
    version = f" `{metrics['aligner_version']}`" if metrics.get("aligner_version") else ""
    notes += [f"Measured with `python -m zoo.evaluate` (aligner `{metrics.get('aligner')}`{version}, flip-test "
             f"{'on' if metrics.get('flip_test') else 'off'}); '-' marks a FAR below 1 / negative pairs, which "
             "the protocol cannot measure."]
    if metrics.get("max_pairs"):
        notes.append(f"Only {metrics['max_pairs']} pairs per protocol were evaluated: a smoke test, not a result.")
    skipped = {p: e["pairs_skipped"] for p, e in metrics["protocols"].items() if e["pairs_skipped"]}
    if skipped:
        notes.append("Pairs skipped for unreadable images: " + ", ".join(f"{p} {n}" for p, n in skipped.items()) + ".")
    if "threshold" in metrics:
        notes.append(f"Verification threshold: **{metrics['threshold']:.4f}** (cosine; same person when the "
                     f"score is at or above it), from {metrics['threshold_from']}.")
    return "## Evaluation\n\n" + table + "\n" + "\n\n".join(notes) + "\n"


def _is_facescope_small(training: Dict[str, Any]) -> bool:
    return Path(training["data"]["path"]).name.startswith(FACESCOPE_SMALL)
