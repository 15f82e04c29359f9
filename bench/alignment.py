"""Alignment speed and faces not found, per aligner (YuNet, dlib), on real LFW and CFP photos.

For each aligner of `zoo.data.align.ALIGNERS` (or --aligners) and each image set, every
image is decoded first (not timed), the aligner's models are loaded on one extra image (not
timed), then `aligner.align(image)` - detection, landmarks and the warp - runs on every
image in turn. Reported: images per second of wall time and of process CPU time (the CPU
column holds up on a busy machine), faces not found (the centre-crop fallback), and which
detector stage answered (dlib's cascade: hog / cnn).

Image sets (a fixed random draw, seed 0): `lfw` - --count images of LFW (deep-funneled 160
px crops); `cfp` - --count images of CFP, half frontal and half profile (profiles are what
separates the detectors).

Writes bench/results/alignment.{json,md}.

    python bench/alignment.py                        # 300 + 300 images, every aligner
    python bench/alignment.py --count 50 --aligners yunet
"""
from __future__ import annotations

import argparse
import collections
import sys
import time
from pathlib import Path
from typing import Dict, List

import numpy as np

from bench.common import write_results
from zoo.data import ALIGNERS, data_root, load_image, make_aligner
from zoo.data.align import aligner_names
from zoo.tables import markdown_table

SETS = ("lfw", "cfp")


def image_set(name: str, count: int, root: Path, seed: int = 0) -> List[Path]:
    """`count` image paths of set `name`, a fixed random draw."""
    rng = np.random.default_rng(seed)
    if name == "lfw":
        files = sorted((root / "lfw" / "images").glob("*/*.jpg"))
        return [files[i] for i in sorted(rng.choice(len(files), size=min(count, len(files)), replace=False))]
    if name == "cfp":
        images = root / "cfp" / "Data" / "Images"
        frontal, profile = sorted(images.glob("*/frontal/*.jpg")), sorted(images.glob("*/profile/*.jpg"))
        half = count // 2
        picks = [frontal[i] for i in sorted(rng.choice(len(frontal), size=count - half, replace=False))]
        return picks + [profile[i] for i in sorted(rng.choice(len(profile), size=half, replace=False))]
    raise ValueError(f"unknown image set {name!r}; known: {', '.join(SETS)}")


def measure(aligner_name: str, paths: List[Path]) -> Dict:
    """Time `align` over decoded images; count fallbacks and detector stages."""
    images = [load_image(p) for p in paths]
    aligner = make_aligner(aligner_name)
    aligner.align(images[0])  # loads the models: not timed
    stages: collections.Counter = collections.Counter()
    missed = []
    wall, cpu = time.perf_counter(), time.process_time()
    for path, image in zip(paths, images):
        face = aligner.align(image)
        stages[face.detection.detector if face.detection else face.method] += 1
        if face.fallback:
            missed.append(str(path))
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    return {"aligner": aligner.name, "version": aligner.version, "images": len(images),
            "wall_seconds": round(wall, 3), "cpu_seconds": round(cpu, 3),
            "images_per_second": round(len(images) / wall, 1), "images_per_cpu_second": round(len(images) / cpu, 1),
            "no_face": len(missed), "no_face_examples": missed[:10], "stages": dict(stages)}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python bench/alignment.py", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--aligners", default=",".join(aligner_names()),
                        help=f"comma-separated, of {', '.join(ALIGNERS)} (default: all, the default first)")
    parser.add_argument("--sets", default=",".join(SETS), help="comma-separated image sets (default lfw,cfp)")
    parser.add_argument("--count", type=int, default=300, help="images per set (default 300)")
    parser.add_argument("--data-root", help="shared data folder (default: $FACESCOPE_DATA or ../shared/data)")
    parser.add_argument("--threads", type=int, default=1,
                        help="OpenCV / torch threads (default 1: per-core throughput, comparable between aligners)")
    args = parser.parse_args(argv)
    aligners = [a for a in args.aligners.split(",") if a]
    unknown = [a for a in aligners if a not in ALIGNERS]
    if unknown:
        parser.error(f"unknown aligner(s) {', '.join(unknown)}; known: {', '.join(ALIGNERS)}")
    sets = [s for s in args.sets.split(",") if s]
    if any(s not in SETS for s in sets):
        parser.error(f"--sets takes {', '.join(SETS)}")

    import cv2
    import torch

    cv2.setNumThreads(args.threads)
    torch.set_num_threads(args.threads)
    root = data_root(args.data_root)
    results = {s: {a: measure(a, image_set(s, args.count, root)) for a in aligners} for s in sets}

    headers = ["aligner", "images", "img/s (wall)", "img/s (CPU)", "faces not found", "detector stages"]
    rows = []
    for s in sets:
        for a in aligners:
            r = results[s][a]
            stages = ", ".join(f"{k} {v}" for k, v in sorted(r["stages"].items()))
            rows.append([f"{a} ({r['version']})", f"{s}: {r['images']}", r["images_per_second"],
                         r["images_per_cpu_second"], r["no_face"], stages])
    table = (f"Alignment (detect + 5 landmarks + warp to 112x112) per image, {args.threads} thread(s), images "
             "decoded beforehand, models loaded beforehand. lfw: LFW deep-funneled 160 px crops; cfp: CFP, "
             "half frontal, half profile. Faces not found fall back to a centre crop.\n\n"
             + markdown_table(headers, rows))
    print(table)
    payload = {"count": args.count, "threads": args.threads, "results": results}
    print(f"wrote {write_results('alignment', payload, table)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
