"""Verification evaluation of a zoo model on named protocols, clean and degraded.

    python -m zoo.evaluate --model ir18 --protocol lfw-view1,cfp-ff,cfp-fp --blur 0,2,4 --out results.json

Pipeline per protocol: read the pair list -> align every image once (`--aligner`, default
YuNet; its name goes into the results and so into model cards; cached on disk; faces
not found fall back to a centre crop and are counted as `fallback_alignments`) -> for each
condition (blur / low-resolution level, applied to the aligned crop, identical for every
model) embed the crops (optionally with flip-test) -> cosine score per pair ->
`zoo.metrics.verification_metrics`. Pairs whose image is missing or unreadable are
skipped and listed with the reason and the protocol line (or, with --strict, stop the run).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
from tqdm import tqdm

from . import metrics, report
from .data import CropCache, DataError, Degradation, PairList, align_files, load_protocol, parse_degradation
from .data.align import DEFAULT_ALIGNER, aligner_names
from .backbones import to_input
from .data.paths import atomic_write, data_root

DEFAULT_BATCH = 64
WARN_FALLBACK = 0.05  # a larger share of faceless images is printed as a warning


class ModelNotFoundError(LookupError):
    """`--model` is neither a trained model zoo.load knows nor a registered architecture."""


def resolve_model(spec: str, build_options: Optional[Dict[str, object]] = None) -> Tuple[torch.nn.Module, str]:
    """(model, how): a trained model or pretrained peer via zoo.load, else an untrained
    registered architecture.

    Only "not found" falls through to zoo.build; a broken checkpoint (zoo.CheckpointError)
    is raised as is, so a corrupted file is never silently replaced by random weights.
    """
    import zoo

    try:
        return zoo.load(spec), "zoo.load"
    except FileNotFoundError as not_found:
        if spec.startswith("peer:"):
            raise ModelNotFoundError(str(not_found)) from None
        try:
            return zoo.build(spec, **(build_options or {})), "zoo.build (untrained)"
        except KeyError as unknown:
            raise ModelNotFoundError(f"{not_found}; {unknown.args[0]}") from None


def embed_images(model, images: np.ndarray, batch_size: int = DEFAULT_BATCH, flip: bool = False,
                 device: str = "cpu", progress: bool = False, desc: str = "embed") -> np.ndarray:
    """(N,D) float32 L2-normalised embeddings of (N,112,112,3) uint8 crops, scaled by the model's
    own `preprocess` (its config's convention); flip-test adds the mirrored crop's embedding
    before normalising (normalise(e(x) + e(flip(x))))."""
    out = []
    preprocess = getattr(model, "preprocess", to_input)
    for start in tqdm(range(0, len(images), batch_size), desc=desc, unit="batch", disable=not progress, leave=False):
        batch = preprocess(images[start:start + batch_size]).to(device)
        embedding = model.embed(batch)
        if flip:
            embedding = embedding + model.embed(torch.flip(batch, dims=[3]))
        out.append(torch.nn.functional.normalize(embedding.float(), dim=1).cpu().numpy())
    return np.concatenate(out) if out else np.zeros((0, 512), np.float32)


def pair_results(pairs: PairList, condition: str, scores: np.ndarray,
                 fold_thresholds: Sequence[float]) -> List[Dict[str, object]]:
    """Every pair's similarity, its fold's threshold (learnt on the other 9 folds) and the
    verdict: what an error browser or a disagreement count needs without recomputing."""
    folds = np.unique(pairs.folds)
    threshold_of = {int(f): float(t) for f, t in zip(folds, fold_thresholds)}
    rows = []
    for k, (a, b, same, fold, score) in enumerate(zip(pairs.first, pairs.second, pairs.issame, pairs.folds, scores)):
        threshold = threshold_of[int(fold)]
        rows.append({"protocol": pairs.name, "condition": condition, "line": pairs.where(k), "first": str(a),
                     "second": str(b), "same": bool(same), "fold": int(fold), "similarity": round(float(score), 6),
                     "threshold": round(threshold, 6), "verdict_same": bool(score >= threshold),
                     "correct": bool((score >= threshold) == same)})
    return rows


def write_pair_results(path: Path, rows: List[Dict[str, object]], root: Optional[Path] = None) -> None:
    """Gzipped CSV (a 7,000-pair protocol at three conditions is about 0.5 MB). Image and pair-list
    paths under `root` (the data root) are written relative to it, so the file works on any machine
    that has the data (an error browser resolves them against its own data root)."""
    import csv
    import gzip
    import io

    def portable(value: str) -> str:
        path = Path(value.rsplit(":", 1)[0]) if root is not None else None
        if path is not None and path.is_absolute() and path.is_relative_to(root):
            return str(Path(value).relative_to(root))
        return value

    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=list(rows[0]) if rows else ["protocol"])
    writer.writeheader()
    writer.writerows({**row, **{key: portable(row[key]) for key in ("first", "second", "line")}} for row in rows)
    atomic_write(path, lambda out: out.write(gzip.compress(text.getvalue().encode(), mtime=0)))


def parse_levels(blur: str, lowres: str) -> List[Degradation]:
    names = [f"blur{b.strip()}" for b in blur.split(",") if b.strip()]
    names += [f"lowres{s.strip()}" for s in lowres.split(",") if s.strip()]
    conditions = []
    for name in names:
        condition = parse_degradation(name)
        if condition not in conditions:
            conditions.append(condition)
    if not conditions:
        raise ValueError("no test condition: give --blur and/or --lowres levels")
    return conditions


def evaluate_protocol(model, pairs: PairList, conditions: Sequence[Degradation], cache: CropCache,
                      flip: bool = False, batch_size: int = DEFAULT_BATCH, device: str = "cpu",
                      strict: bool = False, workers: int = 1, progress: bool = True,
                      memo: Optional[Dict[Tuple[str, Path], np.ndarray]] = None,
                      max_fallback: Optional[float] = None, preview: Optional[Path] = None,
                      pair_rows: Optional[List[Dict[str, object]]] = None) -> Dict[str, object]:
    """Metrics of one protocol under each condition, as JSON-ready data.

    `memo` (condition name, image) -> embedding lets protocols that share images (CFP-FF and
    CFP-FP share the frontal faces) embed them once per run. Alignment comes first and is
    reported before any embedding: above WARN_FALLBACK of images without a detected face a
    warning is printed, above `max_fallback` the run stops (DataError); `preview` (a folder)
    gets `<protocol>-alignment.png`, a grid of sample crops and of the faceless images.
    `pair_rows`, when given, receives one row per pair and condition (`pair_results`).
    """
    memo = {} if memo is None else memo
    aligned = align_files(pairs.images(), cache, workers, progress, desc=f"align {pairs.name}")
    if preview is not None:
        report.alignment_preview(aligned, Path(preview) / f"{pairs.name}-alignment.png")
    fraction = aligned.fallbacks / max(len(aligned.paths), 1)
    if max_fallback is not None and fraction > max_fallback:
        raise DataError(f"{aligned.fallbacks} of {len(aligned.paths)} images ({100 * fraction:.1f}%) have no detected "
                        f"face, above --max-fallback {max_fallback:g}; the centre crops would measure the detector, "
                        "not the model. Look at them with --preview, or try --aligner dlib", pairs.origins[0][0])
    if fraction > WARN_FALLBACK:
        print(f"warning: {pairs.name}: {aligned.fallbacks} of {len(aligned.paths)} images ({100 * fraction:.1f}%) have "
              f"no detected face and are centre-cropped (the JSON lists them all; --preview shows them)",
              file=sys.stderr, flush=True)
    skipped, valid = [], []
    for k, (a, b) in enumerate(zip(pairs.first, pairs.second)):
        bad = [aligned.errors[p] for p in (a, b) if p in aligned.errors]
        if not bad:
            valid.append(k)
            continue
        if strict:
            raise DataError(f"pair needs an unusable image: {bad[0]}", *pairs.origins[k])
        skipped.append({"pair": pairs.where(k), "reason": str(bad[0])})
    result: Dict[str, object] = {
        "name": pairs.name, "source": sorted({f for f, _ in pairs.origins}), "pairs_total": len(pairs),
        "pairs_skipped": len(skipped), "skipped": skipped, "images": len(pairs.images()),
        "fallback_alignments": aligned.fallbacks,
        "fallback_fraction": round(aligned.fallbacks / max(len(aligned.paths), 1), 6),
        "fallback_images": [str(p) for p, m in zip(aligned.paths, aligned.methods) if m == "center-crop"],
        "align_seconds": round(aligned.seconds, 2), "conditions": {},
    }
    if progress:
        rate = f", {aligned.aligned_now / aligned.seconds:.0f} img/s" if aligned.aligned_now and aligned.seconds else ""
        print(f"{pairs.name}: {len(aligned.paths)} images aligned by {cache.aligner.name} ({aligned.aligned_now} new in "
              f"{aligned.seconds:.1f} s{rate}; the rest from the crop cache, shared by every model); "
              f"{aligned.fallbacks} without a detected face ({100 * result['fallback_fraction']:.1f}%)",
              file=sys.stderr, flush=True)
    if not valid:
        raise DataError("every pair of the protocol was skipped (no usable images); "
                        f"first reason: {skipped[0]['reason']}", pairs.origins[0][0])
    used = pairs.select(valid)
    index = aligned.index()
    for condition in conditions:
        start = time.perf_counter()
        todo = [p for p in aligned.paths if (condition.name, p) not in memo]
        if todo:
            rows = [index[p] for p in todo]
            images = condition.apply_batch(aligned.images[rows])
            vectors = embed_images(model, images, batch_size, flip, device, progress,
                                   desc=f"embed {pairs.name} {condition.name}")
            memo.update({(condition.name, p): v for p, v in zip(todo, vectors)})
        first = np.stack([memo[(condition.name, p)] for p in used.first])
        second = np.stack([memo[(condition.name, p)] for p in used.second])
        scores = metrics.cosine_scores(first, second)
        values = metrics.verification_metrics(scores, used.issame, used.folds)
        result["conditions"][condition.name] = {
            "degradation": {"kind": condition.kind, "amount": condition.amount}, **values,
            "embedded_images": len(todo), "embed_and_metrics_seconds": round(time.perf_counter() - start, 2),
        }
        if pair_rows is not None:
            pair_rows += pair_results(used, condition.name, scores, values["fold_thresholds"])
    return result


def _build_options(items: Sequence[str]) -> Dict[str, object]:
    options = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ValueError(f"--build-option expects KEY=VALUE, got {item!r}")
        try:
            options[key] = json.loads(value)
        except json.JSONDecodeError:
            options[key] = value
    return options


def write_json(path: Path, data: object) -> None:
    """Strict JSON (NaN/infinity refused rather than written), atomically."""
    text = json.dumps(data, indent=2, allow_nan=False) + "\n"
    atomic_write(path, lambda out: out.write(text.encode()))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m zoo.evaluate",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Face verification of one or more models on LFW / CFP protocols or your own pair list, on "
                    "clean and degraded (blurred, low-resolution) aligned faces. Prints one table and writes JSON.",
        epilog="""Examples:
  python -m zoo.evaluate --model mobilefacenet.y1 --protocol lfw-view1,cfp-fp --blur 0,2,4 --out results.json
  python -m zoo.make_pairs my_faces/ --out my_faces/pairs.txt        # a folder of people -> a pair list
  python -m zoo.evaluate --model zoo --protocol my_faces/pairs.txt --out-dir results/ --preview results/

Your own pair list (plain text, '#' starts a comment), one pair per line:
  PATH1 PATH2 SAME [FOLD]     SAME: 1/0 (or true/false, same/diff); FOLD: 0-9, optional
Relative paths resolve against the list's own folder (or --images-root). Without a FOLD column
the 10 folds are stratified contiguous blocks in file order (positives and negatives apart), so
a list sorted by person gives folds that share no people only by luck: give FOLD (make_pairs
writes identity-disjoint folds). LFW pairs.txt files are read too. A list is labelled by its
file name without suffix in tables and JSON.

Faces are aligned once per image and aligner and cached (shared by every model). Images
without a detected face are centre-cropped: the run reports how many, lists them all in the
JSON, warns above 5% and stops above --max-fallback; --preview draws sample crops and failures.
TAR@FAR columns are always 0.1, 0.01, 0.001: "n/a" where the list has under 1/FAR negatives.""")
    parser.add_argument("--model", required=True,
                        help="comma-separated: local zoo models, pretrained peers (peer:dlib, peer:sface), checkpoint "
                             "folders, Hub repos (hf-hub:ORG/NAME), or registered architectures (built untrained, e.g. ir18); "
                             "'zoo' = every local zoo model and every peer")
    parser.add_argument("--protocol", default="lfw-view1",
                        help="comma-separated: lfw-view1, cfp-ff, cfp-fp, lfw-view2 (only for models not "
                             "trained on FaceScope-small), or pair list files (see below); default lfw-view1")
    parser.add_argument("--blur", default="0", help="Gaussian blur sigmas in pixels at 112 px, e.g. 0,2,4 (0 = clean)")
    parser.add_argument("--lowres", default="", help="low-resolution sizes, e.g. 56,28,14 (down then up, bilinear)")
    parser.add_argument("--flip", action="store_true", help="flip-test: embedding of image + mirrored image")
    parser.add_argument("--out", type=Path, help="write the results as JSON here (atomically; one model only)")
    parser.add_argument("--out-dir", type=Path, help="write one JSON per model here (MODEL.json, ':' and '/' as '-')")
    parser.add_argument("--csv", type=Path, help="also write one row per model x protocol x condition as CSV")
    parser.add_argument("--figures", type=Path,
                        help="also write roc.html and accuracy_vs_blur.html (plotly, self-contained) to this folder "
                             "(one model only)")
    parser.add_argument("--preview", type=Path, metavar="FOLDER",
                        help="write PROTOCOL-alignment.png here: a grid of sample aligned crops and of the images "
                             "without a detected face")
    parser.add_argument("--pairs", action="store_true",
                        help="also write every pair's similarity, fold threshold and verdict per condition, as a "
                             "gzipped CSV beside each JSON (OUT.pairs.csv.gz, or MODEL.pairs.csv.gz in --out-dir)")
    parser.add_argument("--max-fallback", type=float, metavar="FRACTION",
                        help="stop (exit 2) when more than this fraction of a list's images has no detected face, "
                             "e.g. 0.05; default: only warn above 0.05")
    parser.add_argument("--data-root", help="shared data folder (default: $FACESCOPE_DATA or ../shared/data)")
    parser.add_argument("--images-root", help="folder that relative paths of a pair list resolve against "
                                              "(default: the list's own folder)")
    parser.add_argument("--cache-dir", help="aligned-crop cache (default: $FACESCOPE_CACHE or <repo>/cache)")
    parser.add_argument("--aligner", choices=aligner_names(), default=DEFAULT_ALIGNER,
                        help=f"face detector + landmarks: {', '.join(aligner_names())} (default {DEFAULT_ALIGNER}); "
                             "recorded in the results")
    parser.add_argument("--batch-size", type=int, default=DEFAULT_BATCH, help=f"images per forward pass (default {DEFAULT_BATCH})")
    parser.add_argument("--device", default="cpu", help="torch device, e.g. cpu or cuda")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1,
                        help="processes for first-time alignment (default: the CPU count)")
    parser.add_argument("--max-pairs", type=int,
                        help="evaluate only this many pairs per protocol, spread over folds (smoke tests)")
    parser.add_argument("--build-option", action="append", default=[], metavar="KEY=VALUE",
                        help="passed to zoo.build when --model is an untrained architecture, e.g. width=0.25")
    parser.add_argument("--strict", action="store_true", help="stop at the first missing/unreadable image")
    parser.add_argument("--quiet", action="store_true", help="no progress bars or alignment summaries")
    return parser


def model_specs(text: str) -> List[str]:
    """--model's comma-separated list; 'zoo' expands to every local zoo model and every peer."""
    import zoo
    from .peers import peer_names

    specs = []
    for spec in (s.strip() for s in text.split(",") if s.strip()):
        specs += zoo.local_models() + peer_names() if spec == "zoo" else [spec]
    if not specs:
        raise ValueError("no model given: --model NAME[,NAME...] or --model zoo")
    return list(dict.fromkeys(specs))


def run(args: argparse.Namespace, spec: Optional[str] = None,
        memo: Optional[Dict[Tuple[str, Path], np.ndarray]] = None,
        pair_rows: Optional[List[Dict[str, object]]] = None) -> Dict[str, object]:
    """One model's results (`spec`, default --model) on every --protocol, as JSON-ready data
    (and, with `pair_rows`, its per-pair rows)."""
    start = time.perf_counter()
    spec = args.model if spec is None else spec
    model, how = resolve_model(spec, _build_options(args.build_option))
    model = model.to(args.device).eval()
    conditions = parse_levels(args.blur, args.lowres)
    cache = CropCache(args.cache_dir, getattr(args, "aligner", None))
    memo = {} if memo is None else memo
    results = {
        "model": {"spec": spec, "resolved_by": how, "name": getattr(model, "name", type(model).__name__),
                  "parameters": int(sum(p.numel() for p in model.parameters()))},
        "settings": {"flip_test": args.flip, "batch_size": args.batch_size, "device": args.device,
                     "data_root": str(data_root(args.data_root)), "aligner": cache.aligner.name,
                     "aligner_version": cache.aligner.version,
                     "max_pairs": args.max_pairs, "conditions": [c.name for c in conditions],
                     "score": "cosine similarity; same when score >= threshold",
                     "accuracy": "10-fold: threshold maximising accuracy on 9 folds applied to the 10th; "
                                 "mean and population std over folds",
                     "tar_at_far": "reported only for FAR >= 1/negative pairs; lower levels are listed in "
                                   "far_levels_omitted"},
        "protocols": {},
    }
    for name in [p.strip() for p in args.protocol.split(",") if p.strip()]:
        pairs = load_protocol(name, args.data_root, args.images_root)
        if args.max_pairs:
            pairs = pairs.subset(args.max_pairs)
        if pairs.name in results["protocols"]:
            raise ValueError(f"two protocols are both labelled {pairs.name!r}: rename one of the pair lists")
        results["protocols"][pairs.name] = evaluate_protocol(
            model, pairs, conditions, cache, args.flip, args.batch_size, args.device, args.strict,
            args.workers, not args.quiet, memo, getattr(args, "max_fallback", None), getattr(args, "preview", None),
            pair_rows)
    results["seconds"] = round(time.perf_counter() - start, 2)
    return results


def result_file(folder: Path, spec: str) -> Path:
    return folder / (spec.replace(":", "-").replace("/", "-") + ".json")


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        specs = model_specs(args.model)
        if len(specs) > 1 and (args.out or args.figures):
            parser.error(f"--out and --figures take one model; {len(specs)} given: use --out-dir")
        if args.pairs and not (args.out or args.out_dir):
            parser.error("--pairs writes beside the results: give --out or --out-dir")
        everything = []
        for spec in specs:  # each model embeds anew; alignment is cached and shared
            rows: Optional[List[Dict[str, object]]] = [] if args.pairs else None
            everything.append(run(args, spec, pair_rows=rows))
            if args.out_dir:
                write_json(result_file(args.out_dir, spec), everything[-1])
            if rows is not None:
                beside = result_file(args.out_dir, spec) if args.out_dir else args.out
                write_pair_results(beside.with_suffix(".pairs.csv.gz"), rows, data_root(args.data_root))
    except (DataError, ModelNotFoundError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(report.results_table(everything))
    if args.out:
        write_json(args.out, everything[0])
        print(f"wrote {args.out}")
    if args.out_dir:
        print(f"wrote {len(everything)} result file(s) to {args.out_dir}")
    if args.csv:
        report.write_csv(args.csv, everything)
        print(f"wrote {args.csv}")
    if args.figures:
        results = everything[0]
        for name, figure in (("roc", report.roc_figure(results)), ("accuracy_vs_blur", report.accuracy_vs_blur_figure(results))):
            path = args.figures / f"{name}.html"
            atomic_write(path, lambda out, figure=figure: out.write(figure.to_html(include_plotlyjs=True).encode()))
            print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
