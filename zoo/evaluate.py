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
from .data.paths import atomic_write, data_root

DEFAULT_BATCH = 64


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


def to_tensor(images: np.ndarray) -> torch.Tensor:
    """(N,112,112,3) uint8 RGB -> (N,3,112,112) float32 in [-1,1], the zoo's input convention."""
    tensor = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float()
    return (tensor - 127.5) / 128.0


def embed_images(model, images: np.ndarray, batch_size: int = DEFAULT_BATCH, flip: bool = False,
                 device: str = "cpu", progress: bool = False, desc: str = "embed") -> np.ndarray:
    """(N,512) float32 L2-normalised embeddings; flip-test adds the mirrored crop's embedding
    before normalising (normalise(e(x) + e(flip(x))))."""
    out = []
    for start in tqdm(range(0, len(images), batch_size), desc=desc, unit="batch", disable=not progress, leave=False):
        batch = to_tensor(images[start:start + batch_size]).to(device)
        embedding = model.embed(batch)
        if flip:
            embedding = embedding + model.embed(torch.flip(batch, dims=[3]))
        out.append(torch.nn.functional.normalize(embedding.float(), dim=1).cpu().numpy())
    return np.concatenate(out) if out else np.zeros((0, 512), np.float32)


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
                      memo: Optional[Dict[Tuple[str, Path], np.ndarray]] = None) -> Dict[str, object]:
    """Metrics of one protocol under each condition, as JSON-ready data.

    `memo` (condition name, image) -> embedding lets protocols that share images (CFP-FF and
    CFP-FP share the frontal faces) embed them once per run.
    """
    memo = {} if memo is None else memo
    aligned = align_files(pairs.images(), cache, workers, progress, desc=f"align {pairs.name}")
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
        "fallback_examples": [str(p) for p, m in zip(aligned.paths, aligned.methods) if m == "center-crop"][:10],
        "align_seconds": round(aligned.seconds, 2), "conditions": {},
    }
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
        result["conditions"][condition.name] = {
            "degradation": {"kind": condition.kind, "amount": condition.amount},
            **metrics.verification_metrics(scores, used.issame, used.folds),
            "embedded_images": len(todo), "embed_and_metrics_seconds": round(time.perf_counter() - start, 2),
        }
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
        description="Face verification of a model on LFW / CFP protocols or a pairs file, on clean and "
                    "degraded (blurred, low-resolution) aligned faces. Prints a table and writes JSON.",
        epilog="Example: python -m zoo.evaluate --model ir18 --protocol lfw-view1,cfp-fp --blur 0,2,4 --out results.json")
    parser.add_argument("--model", required=True,
                        help="a local zoo model, a pretrained peer (peer:dlib, peer:sface), a checkpoint "
                             "folder, a Hub repo id, or a registered architecture (built untrained, e.g. ir18; "
                             "see `python -m zoo`)")
    parser.add_argument("--protocol", default="lfw-view1",
                        help="comma-separated: lfw-view1, cfp-ff, cfp-fp, lfw-view2 (only for models not "
                             "trained on FaceScope-small), or a pairs file (LFW pairs.txt format or "
                             "'PATH1 PATH2 SAME' lines); default lfw-view1")
    parser.add_argument("--blur", default="0", help="Gaussian blur sigmas in pixels at 112 px, e.g. 0,2,4 (0 = clean)")
    parser.add_argument("--lowres", default="", help="low-resolution sizes, e.g. 56,28,14 (down then up, bilinear)")
    parser.add_argument("--flip", action="store_true", help="flip-test: embedding of image + mirrored image")
    parser.add_argument("--out", type=Path, help="write the results as JSON here (atomically)")
    parser.add_argument("--csv", type=Path, help="also write one row per protocol x condition as CSV")
    parser.add_argument("--figures", type=Path,
                        help="also write roc.html and accuracy_vs_blur.html (plotly, self-contained) to this folder")
    parser.add_argument("--data-root", help="shared data folder (default: $FACESCOPE_DATA or ../shared/data)")
    parser.add_argument("--images-root", help="image folder for a pairs-file protocol (default: beside the file)")
    parser.add_argument("--cache-dir", help="aligned-crop cache (default: $FACESCOPE_CACHE or <repo>/cache)")
    parser.add_argument("--aligner", choices=aligner_names(), default=DEFAULT_ALIGNER,
                        help=f"face detector + landmarks: {', '.join(aligner_names())} (default {DEFAULT_ALIGNER}); "
                             "recorded in the results")
    parser.add_argument("--batch-size", type=int, default=DEFAULT_BATCH, help=f"images per forward pass (default {DEFAULT_BATCH})")
    parser.add_argument("--device", default="cpu", help="torch device, e.g. cpu or cuda")
    parser.add_argument("--workers", type=int, default=1, help="processes for first-time alignment")
    parser.add_argument("--max-pairs", type=int,
                        help="evaluate only this many pairs per protocol, spread over folds (smoke tests)")
    parser.add_argument("--build-option", action="append", default=[], metavar="KEY=VALUE",
                        help="passed to zoo.build when --model is an untrained architecture, e.g. width=0.25")
    parser.add_argument("--strict", action="store_true", help="stop at the first missing/unreadable image")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    return parser


def run(args: argparse.Namespace) -> Dict[str, object]:
    start = time.perf_counter()
    model, how = resolve_model(args.model, _build_options(args.build_option))
    model = model.to(args.device).eval()
    conditions = parse_levels(args.blur, args.lowres)
    cache = CropCache(args.cache_dir, getattr(args, "aligner", None))
    memo: Dict[Tuple[str, Path], np.ndarray] = {}
    results = {
        "model": {"spec": args.model, "resolved_by": how, "name": getattr(model, "name", type(model).__name__),
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
        results["protocols"][name] = evaluate_protocol(
            model, pairs, conditions, cache, args.flip, args.batch_size, args.device, args.strict,
            args.workers, not args.quiet, memo)
    results["seconds"] = round(time.perf_counter() - start, 2)
    return results


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        results = run(args)
    except (DataError, ModelNotFoundError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(report.results_table(results))
    if args.out:
        write_json(args.out, results)
        print(f"wrote {args.out}")
    if args.csv:
        report.write_csv(args.csv, results)
        print(f"wrote {args.csv}")
    if args.figures:
        for name, figure in (("roc", report.roc_figure(results)), ("accuracy_vs_blur", report.accuracy_vs_blur_figure(results))):
            path = args.figures / f"{name}.html"
            atomic_write(path, lambda out, figure=figure: out.write(figure.to_html(include_plotlyjs=True).encode()))
            print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
