"""Align a whole dataset once and pack it for training or evaluation.

    python -m train.prepare --dataset facescope-small-train --out cache/packed/train.npz

The .npz (uncompressed, no pickles: load with `np.load(path)`) holds
- `images` (N,112,112,3) uint8 RGB aligned crops, `paths` (N,) source files,
  `methods` (N,) how each crop was made (landmarks / pre-aligned / center-crop),
  `aligner` and `aligner_version` (0-d string arrays: `str(packed["aligner"])`) the aligner
  that made them (`--aligner`, default yunet);
- training sets (`facescope-small-train`, or an image folder given as a path): `labels` (N,)
  int64 and `classes` (C,) identity names. Images whose face is not found are skipped
  (a centre crop is not a face to learn from) and counted, as are unreadable files;
- test protocols (`lfw-view1`, `cfp-ff`, `cfp-fp`, `lfw-view2`, or a pairs file): every image, fallbacks
  included, plus `pair_first`/`pair_second` (indices into `images`, -1 where the image
  could not be read), `issame` and `folds`.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import List, Optional

import numpy as np

from zoo.data.align import DEFAULT_ALIGNER, YUNET_BORDER, YUNET_BORDERS, aligner_names, make_aligner
from zoo.data.cache import AlignedImages, CropCache, align_files
from zoo.data.errors import DataError
from zoo.data.folder import ImageList, read_image_folder
from zoo.data.paths import atomic_write, data_root
from zoo.data.protocols import PROTOCOLS, facescope_small_train, load_protocol

TRAIN_SETS = ("facescope-small-train",)


def save_npz(path: Path, **arrays) -> None:
    """Uncompressed .npz written atomically (see `atomic_write`)."""
    atomic_write(path, lambda out: np.savez(out, **arrays))


def _strings(values) -> np.ndarray:
    return np.array([str(v) for v in values], dtype=np.str_)


def _aligner_arrays(cache: CropCache) -> dict:
    return {"aligner": np.array(cache.aligner.name, dtype=np.str_),
            "aligner_version": np.array(cache.aligner.version, dtype=np.str_)}


def prepare_training(images: ImageList, cache: CropCache, out: Path, workers: int = 1,
                     progress: bool = True) -> dict:
    """Align, drop fallbacks and unreadable files, pack; returns the counts it reports."""
    aligned = align_files(images.paths, cache, workers, progress, desc=f"align {images.source}")
    index = {p: i for i, p in enumerate(images.paths)}
    keep = [k for k, m in enumerate(aligned.methods) if m != "center-crop"]
    labels = np.array([images.labels[index[aligned.paths[k]]] for k in keep], dtype=np.int64)
    save_npz(out, images=aligned.images[keep], labels=labels, classes=_strings(images.classes),
             paths=_strings(aligned.paths[k] for k in keep), methods=_strings(aligned.methods[k] for k in keep),
             **_aligner_arrays(cache))
    return _summary(images.source, len(images.paths), aligned, cache, kept=len(keep),
                    identities=int(np.unique(labels).size), out=out)


def prepare_protocol(name: str, root: Optional[str], cache: CropCache, out: Path, workers: int = 1,
                     progress: bool = True) -> dict:
    """Align every image of a pair protocol and pack it with the pair table."""
    pairs = load_protocol(name, root)
    aligned = align_files(pairs.images(), cache, workers, progress, desc=f"align {name}")
    index = aligned.index()
    first = np.array([index.get(p, -1) for p in pairs.first], dtype=np.int64)
    second = np.array([index.get(p, -1) for p in pairs.second], dtype=np.int64)
    save_npz(out, images=aligned.images, paths=_strings(aligned.paths), methods=_strings(aligned.methods),
             pair_first=first, pair_second=second, issame=pairs.issame, folds=pairs.folds, **_aligner_arrays(cache))
    return _summary(name, len(pairs.images()), aligned, cache, kept=len(aligned.paths), pairs=len(pairs),
                    pairs_with_unreadable_images=int(((first < 0) | (second < 0)).sum()), out=out)


def _summary(name: str, total: int, aligned: AlignedImages, cache: CropCache, **extra) -> dict:
    def rate(seconds: float) -> Optional[float]:
        return round(aligned.aligned_now / seconds, 2) if aligned.aligned_now and seconds > 0 else None

    return {"dataset": name, "aligner": cache.aligner.name, "aligner_version": cache.aligner.version,
            "images": total, "fallback_alignments": aligned.fallbacks,
            "unreadable": len(aligned.errors), "unreadable_examples": [str(e) for e in list(aligned.errors.values())[:5]],
            "aligned_now": aligned.aligned_now, "seconds": round(aligned.seconds, 2),
            "cpu_seconds": round(aligned.cpu_seconds, 2), "images_per_second": rate(aligned.seconds),
            "images_per_cpu_second": rate(aligned.cpu_seconds),
            **{k: str(v) if isinstance(v, Path) else v for k, v in extra.items()}}


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m train.prepare",
        description="Detect, align (112x112 ArcFace template) and pack a dataset into one .npz. "
                    "Crops are cached, so a second run only packs.")
    parser.add_argument("--dataset", required=True,
                        help=f"one of {', '.join(TRAIN_SETS + PROTOCOLS)}, an image folder (one sub-folder per "
                             "identity: a training set) or a pairs file (a test protocol)")
    parser.add_argument("--out", required=True, type=Path, help="output .npz path")
    parser.add_argument("--data-root", help="shared data folder (default: $FACESCOPE_DATA or ../shared/data)")
    parser.add_argument("--cache-dir", help="crop cache folder (default: $FACESCOPE_CACHE or <repo>/cache)")
    parser.add_argument("--aligner", choices=aligner_names(), default=DEFAULT_ALIGNER,
                        help=f"face detector + landmarks: {', '.join(aligner_names())} (default {DEFAULT_ALIGNER}; "
                             "crops of each aligner are cached apart)")
    parser.add_argument("--border", choices=sorted(YUNET_BORDERS),
                        help=f"yunet only: how the detection pad is filled (default {YUNET_BORDER}; 'constant' is "
                             "black, what packed the training set before the mirrored border became the default)")
    parser.add_argument("--workers", type=int, default=1, help="alignment processes (default 1)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)
    if args.border and args.aligner != "yunet":
        parser.error(f"--border applies to the yunet aligner, not {args.aligner}")
    cache = CropCache(args.cache_dir, make_aligner(args.aligner, **({"border": args.border} if args.border else {})))
    progress = not args.quiet
    try:
        if args.dataset in PROTOCOLS or Path(args.dataset).is_file():
            summary = prepare_protocol(args.dataset, args.data_root, cache, args.out, args.workers, progress)
        else:
            images = (facescope_small_train(data_root(args.data_root)) if args.dataset in TRAIN_SETS
                      else read_image_folder(args.dataset))
            summary = prepare_training(images, cache, args.out, args.workers, progress)
    except DataError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
