"""Time of the embedding UMAP (analysis.embedding_umap) on 1,000 real faces, on this CPU.

1,000 LFW faces (people with at least 4 photos, up to 10 each), aligned (crops cached in
cache/aligned), embedded by one model (cache/embeddings), then in this fresh process:
- cold: the first UMAP call, which includes importing umap-learn and numba's compilation
  (numba keeps part of it on disk, so only a machine's very first run compiles everything);
- warm: a second call of `embedding_umap` with the same inputs, which is what the app pays
  for a redraw: embeddings come from the cache, UMAP is already compiled.
Writes bench/results/umap_time.{json,md}.

    python bench/umap_time.py                      # mobilefacenet.y1 (else the first local checkpoint)
    python bench/umap_time.py --model mobilefacenet.fss-ft --faces 1000
"""
from __future__ import annotations

import argparse
import sys
import time

import numpy as np
import torch

from analysis import EmbeddingCache, embed_faces, embedding_umap
from bench.common import write_results
import zoo
from zoo.data import CropCache, align_files, data_root
from zoo.tables import markdown_table

REFERENCE = "mobilefacenet.y1"  # the embedded zoo's reference: there for good


def lfw_set(count: int, min_photos: int = 4, per_identity: int = 10):
    """Paths and labels of `count` LFW photos of people with at least `min_photos` photos."""
    root = data_root() / "lfw"
    paths, labels, names = [], [], []
    for line in (root / "lfw-names.txt").read_text().splitlines():
        name, photos = line.split("\t")
        if int(photos) < min_photos or len(paths) >= count:
            continue
        files = sorted((root / "images" / name).glob("*.jpg"))[:min(per_identity, count - len(paths))]
        paths += files
        labels += [len(names)] * len(files)
        names.append(name)
    return paths, np.array(labels), names


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=None,
                        help=f"zoo model (default: {REFERENCE}, else the first local checkpoint, else an untrained "
                             "mobilefacenet)")
    parser.add_argument("--faces", type=int, default=1000, help="number of faces (default 1000)")
    parser.add_argument("--workers", type=int, default=2, help="alignment processes (default 2)")
    args = parser.parse_args(argv)
    local = zoo.local_models()
    name = args.model or (REFERENCE if REFERENCE in local else local[0] if local else None)
    torch.manual_seed(0)  # an untrained stand-in keeps its weights, so its cached embeddings are reused
    model = zoo.load(name) if name else zoo.build("mobilefacenet", embedding_dim=128).eval()
    paths, labels, names = lfw_set(args.faces)
    aligned = align_files(paths, CropCache(), workers=args.workers, progress=True)
    keep = [paths.index(p) for p in aligned.paths]
    faces, labels = aligned.images, labels[keep]
    was_cached = EmbeddingCache().load(EmbeddingCache().path(model, faces, "blur0"), len(faces),
                                       model.config.embedding_dim) is not None
    start = time.perf_counter()
    embed_faces(model, faces, "blur0", progress=True)
    embed_seconds = time.perf_counter() - start
    start = time.perf_counter()
    import umap  # noqa: F401  (timed apart from the first call)
    import_seconds = time.perf_counter() - start
    cold = embedding_umap(model, faces, labels, names)
    start = time.perf_counter()
    warm = embedding_umap(model, faces, labels, names)
    warm_total = time.perf_counter() - start
    record = {"model": model.name, "trained": name is not None, "faces": len(faces), "identities": len(names),
              "embed_seconds": round(embed_seconds, 2), "embeddings_were_cached": was_cached,
              "umap_import_seconds": round(import_seconds, 2),
              "cold_umap_seconds": round(cold.seconds["umap"], 2), "warm_umap_seconds": round(warm.seconds["umap"], 2),
              "warm_call_total_seconds": round(warm_total, 2), "warm_call_embed_seconds": round(warm.seconds["embed"], 3)}
    rows = [[record["model"], record["faces"], record["umap_import_seconds"], record["cold_umap_seconds"],
             record["warm_umap_seconds"], record["warm_call_total_seconds"]]]
    table = markdown_table(["model", "embeddings", "import umap (s)", "cold UMAP (s)", "warm UMAP (s)",
                            "warm call incl. cached embeddings (s)"], rows)
    path = write_results("umap_time", record, table)
    print(table + f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
