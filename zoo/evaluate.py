"""Verification evaluation of a zoo model on named protocols, clean and degraded.

    python -m zoo.evaluate --model ir18 --protocol lfw-view1,cfp-ff,cfp-fp --blur 0,2,4 --out results.json

Pipeline per protocol: read the pair list -> align every image once (`--aligner`, default
YuNet; its name goes into the results and so into model cards; cached on disk; faces
not found fall back to a centre crop and are counted as `fallback_alignments`) -> embed each
image once per condition (blur / low-resolution level, applied to the aligned crop, identical
for every model; optionally with flip-test; images an earlier protocol of the run embedded,
CFP-FF's frontal faces in CFP-FP, are not embedded again) -> cosine score per pair ->
`zoo.metrics.verification_metrics`. Pairs whose image is missing or unreadable are
skipped and listed with the reason and the protocol line (or, with --strict, stop the run).

Alignment and embedding run in `--workers` processes (`zoo.pipeline`). On the CPU the embeddings
come from onnxruntime on the model's ONNX export (`--runtime auto`, the default; `zoo.runtime`),
a quarter less CPU than torch for the same accuracies; `--runtime torch` runs the model itself.
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

from . import report
from .data import CropCache, DataError, Degradation, load_protocol, parse_degradation
from .data.align import DEFAULT_ALIGNER, aligner_names
from .data.paths import atomic_write, data_root
from .pipeline import DEFAULT_BATCH, Pipeline, embed_images
from .runtime import AUTO, make_embedder, runtime_names
from .verification import evaluate_protocol, pair_results, protocol_results, write_pair_results

# Also what the trainer's validation, the analyses, the benches and the tests import from here.
__all__ = ["DEFAULT_BATCH", "ModelNotFoundError", "build_parser", "embed_images", "evaluate_protocol", "main",
           "pair_results", "protocol_results", "resolve_model", "result_file", "run", "write_pair_results"]


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
    parser.add_argument("--batch-size", type=int, default=DEFAULT_BATCH,
                        help=f"images per forward pass (default {DEFAULT_BATCH}: on a CPU small batches run fastest)")
    parser.add_argument("--device", default="cpu", help="torch device, e.g. cpu or cuda")
    parser.add_argument("--runtime", choices=runtime_names(auto=True), default=AUTO,
                        help="what computes the embeddings: onnx (onnxruntime on the model's ONNX export, made once "
                             "and kept in the cache folder; CPU only), torch, or auto (default: onnx for a trained "
                             "model on the CPU; torch on a GPU, for an untrained architecture, or if the export "
                             "fails); peers run on their own engine. The results "
                             "JSON records which ran (settings.runtime, settings.embedded_by)")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1,
                        help="processes (one thread each) that align and embed (default: the CPU count; 1 = all in "
                             "this process, with torch's own threads)")
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
    runtime = getattr(args, "runtime", None)
    if runtime == AUTO and how != "zoo.load":  # new random weights each run: an export would never be reused
        runtime = "torch"
    embedder = make_embedder(runtime, model, cache.root, args.device)
    memo = {} if memo is None else memo
    results = {
        "model": {"spec": spec, "resolved_by": how, "name": getattr(model, "name", type(model).__name__),
                  "parameters": int(sum(p.numel() for p in model.parameters()))},
        "settings": {"flip_test": args.flip, "batch_size": args.batch_size, "device": args.device,
                     "runtime": embedder.runtime, "embedded_by": embedder.served_by,
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
    with Pipeline(embedder, cache, args.workers, args.batch_size, args.flip, args.device) as pipeline:
        for name in [p.strip() for p in args.protocol.split(",") if p.strip()]:
            pairs = load_protocol(name, args.data_root, args.images_root)
            if args.max_pairs:
                pairs = pairs.subset(args.max_pairs)
            if pairs.name in results["protocols"]:
                raise ValueError(f"two protocols are both labelled {pairs.name!r}: rename one of the pair lists")
            results["protocols"][pairs.name] = protocol_results(
                pipeline, pairs, conditions, args.strict, not args.quiet, memo, getattr(args, "max_fallback", None),
                getattr(args, "preview", None), pair_rows)
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
