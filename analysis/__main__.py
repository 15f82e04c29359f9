"""Command line for the analyses: each writes HTML, JSON (the data) and PNG into --out.

    python -m analysis t-density   --model scan-mobilefacenet.fss-ft
    python -m analysis t-density   --records runs/scan-mobilefacenet.fss-ft/records.jsonl
    python -m analysis scale-map   --model scan-mobilefacenet.fss-ft --image face.jpg --blur 0,1,2,3,4,6
    python -m analysis attention   --model sranet-mobilefacenet.fss-ft --image face.jpg --query 50,40
    python -m analysis gradcam     --model mobilefacenet.y1 --reference a.jpg --image b.jpg c.jpg
    python -m analysis correlation --model mobilefacenet.fss-ft-npcface --folder DIR
    python -m analysis correlation --records runs/mobilefacenet.fss-ft-npcface/records.jsonl
    python -m analysis umap        --model mobilefacenet.y1 --folder ../shared/data/lfw/images --blur 0,2,4

--model is a local zoo name, a checkpoint folder or a hub repo id; a registered
architecture name (scan-mobilefacenet) builds an untrained model, which is said on stderr. Images
are aligned to the 112x112 template (zoo.data's default aligner, YuNet; 112x112 crops pass
through), and the crops are cached. A labelled set (--folder) is one sub-folder per identity.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
from tqdm import tqdm

from zoo import CheckpointError
from zoo.data import CropCache, DataError, align_files, read_image_folder
from zoo.evaluate import ModelNotFoundError, resolve_model

from . import attention_maps, correlation, embeddings, export, gradcam, scale_map, t_density
from .common import AnalysisError, methods_showing


def _floats(text: str) -> List[float]:
    try:
        return [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}") from None


def _query(text: str) -> Tuple[float, float]:
    values = _floats(text)
    if len(values) != 2:
        raise argparse.ArgumentTypeError(f"expected Y,X (two numbers), got {text!r}")
    return values[0], values[1]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m analysis", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, help_text: str) -> argparse.ArgumentParser:
        sub = commands.add_parser(name, help=help_text, description=help_text)
        sub.add_argument("--out", type=Path, default=None, help=f"output folder (default: analysis-out/{name})")
        sub.add_argument("--no-png", action="store_true", help="write HTML and JSON only")
        sub.add_argument("--width", type=float, default=None,
                         help="width multiplier when --model builds an untrained registered architecture")
        return sub

    def model_arg(sub: argparse.ArgumentParser, required: bool = True, many: bool = False) -> None:
        sub.add_argument("--model", required=required, action="append" if many else "store",
                         help="zoo name, checkpoint folder or hub repo id" + (" (repeat to compare)" if many else ""))

    def images_arg(sub: argparse.ArgumentParser) -> None:
        sub.add_argument("--image", required=True, nargs="+", action="extend", type=Path,
                         help="face image(s); aligned to the 112x112 template")

    def labelled_set(sub: argparse.ArgumentParser, required: bool) -> None:
        sub.add_argument("--folder", type=Path, required=required, help="labelled set: one sub-folder per identity")
        sub.add_argument("--identities", type=int, default=50, help="use the first N identities (default 50)")
        sub.add_argument("--per-identity", type=int, default=20, help="at most K images each (default 20)")
        sub.add_argument("--min-images", type=int, default=2,
                         help="skip identities with fewer images (default 2: a class centre needs company)")
        sub.add_argument("--workers", type=int, default=1, help="alignment processes (default 1)")
        sub.add_argument("--no-cache", action="store_true", help="do not read or write cached embeddings")

    def shown_by(analysis: str) -> str:
        return " / ".join(methods_showing(analysis))

    sub = command("t-density", f"{shown_by('t-density')}: density of the learnt scales t per layer, "
                               "side by side per source")
    model_arg(sub, required=False, many=True)
    sub.add_argument("--records", type=Path, action="append", default=[],
                     help="the records.jsonl of a run that learns t (repeatable): densities per epoch")
    sub.add_argument("--epochs", default="spread",
                     help="epochs of --records: all, spread (first, last, two between; default), last or 1,5,10")

    sub = command("scale-map", f"{shown_by('scale-map')}: which learnt scale responds most at each location, "
                               "across blur levels")
    model_arg(sub)
    images_arg(sub)
    sub.add_argument("--layer", default=None, help="SAC layer (default: the deepest at least 14x14)")
    sub.add_argument("--blur", type=_floats, default=[0, 1, 2, 3, 4, 6], help="blur sigmas (default 0,1,2,3,4,6)")

    sub = command("attention", f"{shown_by('attention')}: the method's attention on each face")
    model_arg(sub)
    images_arg(sub)
    sub.add_argument("--query", type=_query, default=None,
                     help=f"{shown_by('residual-attention')}: the query pixel Y,X (default: the centre)")

    sub = command("gradcam", "any model: Grad-CAM of each face's cosine similarity to a reference face")
    model_arg(sub)
    images_arg(sub)
    sub.add_argument("--reference", type=Path, default=None,
                     help="reference face (default: the first --image, then explained against the rest)")

    sub = command("correlation", "NPCFace: hard positive-negative correlation over training and on a labelled set")
    model_arg(sub, required=False)
    sub.add_argument("--records", type=Path, default=None, help="a run's records.jsonl: correlation per epoch")
    labelled_set(sub, required=False)

    sub = command("umap", "any model: UMAP of a labelled set's embeddings (colour identity, marker blur)")
    model_arg(sub)
    labelled_set(sub, required=True)
    sub.add_argument("--blur", type=_floats, default=[0], help="blur sigmas to embed at (default 0), e.g. 0,2,4")
    return parser


def load_model(spec: str, width: Optional[float]):
    model, how = resolve_model(spec, {"width": width} if width is not None else None)
    if how != "zoo.load":
        print(f"note: {spec!r} is not a trained model; analysing an untrained {model.name}", file=sys.stderr)
    return model.eval()


def align(paths: Sequence[Path], workers: int = 1) -> Tuple[List[Path], np.ndarray]:
    aligned = align_files(paths, CropCache(), workers=workers, progress=True, desc="align")
    for path, error in aligned.errors.items():
        print(f"skipped {path}: {error}", file=sys.stderr)
    if not aligned.paths:
        raise AnalysisError("none of the images could be read")
    return aligned.paths, aligned.images


def labelled_faces(args) -> Tuple[np.ndarray, np.ndarray, List[str], List[Path]]:
    images = read_image_folder(args.folder, min_images=args.min_images)
    chosen = list(range(len(images.classes)))[:args.identities]
    picks = [i for c in chosen for i in np.flatnonzero(images.labels == c)[:args.per_identity]]
    paths, faces = align([images.paths[i] for i in picks], args.workers)
    label_of = {images.paths[i]: images.labels[i] for i in picks}
    remap = {c: k for k, c in enumerate(chosen)}
    return faces, np.array([remap[label_of[p]] for p in paths]), [images.classes[c] for c in chosen], paths


def run(args) -> Dict[str, Tuple]:
    """Figures and data of one command: name -> (figure, data)."""
    items: Dict[str, Tuple] = {}
    if args.command == "t-density":
        if not args.model and not args.records:
            raise AnalysisError("t-density needs --model and/or --records")
        sources = {}
        for spec in tqdm(args.model or [], desc="models", leave=False):
            sources[spec] = t_density.model_t(load_model(spec, args.width))
        for path in args.records:
            epochs = t_density.records_t(path)
            for epoch in t_density.pick_epochs(list(epochs), args.epochs):
                sources[f"{path.parent.name} epoch {epoch}"] = epochs[epoch]
        densities = t_density.t_densities(sources)
        items["t_density"] = (t_density.t_density_figure(densities), densities)
    elif args.command in ("scale-map", "attention"):
        model = load_model(args.model, args.width)
        paths, faces = align(args.image)
        for path, face in tqdm(list(zip(paths, faces)), desc=args.command, leave=False):
            if args.command == "scale-map":
                data = scale_map.scale_maps(model, face, args.layer, args.blur)
                items[f"scale_map_{path.stem}"] = (scale_map.scale_maps_figure(data), data)
            else:
                data = attention_maps.attention(model, face, args.query)
                items[f"attention_{path.stem}"] = (attention_maps.attention_figure(data), data)
    elif args.command == "gradcam":
        model = load_model(args.model, args.width)
        reference = args.reference or args.image[0]
        others = [p for p in args.image if p != reference]
        if not others:
            raise AnalysisError("gradcam needs a face to explain besides the reference (explaining a face against "
                                "itself has zero gradient): give --reference and --image, or two or more --image")
        paths, faces = align([reference, *others])
        if paths[0] != Path(reference):
            raise AnalysisError(f"the reference {reference} could not be read")
        data = gradcam.gradcam_similarity(model, faces[1:], faces[0])
        items["gradcam"] = (gradcam.gradcam_figure(data), data)
    elif args.command == "correlation":
        if args.records is None and args.model is None:
            raise AnalysisError("correlation needs --records and/or --model with --folder")
        if args.records is not None:
            data = correlation.records_correlation(args.records)
            items["correlation_epochs"] = (correlation.epochs_figure(data), data)
        if args.model is not None:
            if args.folder is None:
                raise AnalysisError("correlation on a model needs a labelled set: --folder DIR")
            model = load_model(args.model, args.width)
            faces, labels, names, _ = labelled_faces(args)
            data = correlation.model_hard_samples(model, faces, labels, names, cache=not args.no_cache, progress=True)
            items["hard_samples"] = (correlation.hard_samples_figure(data), data)
    elif args.command == "umap":
        model = load_model(args.model, args.width)
        faces, labels, names, paths = labelled_faces(args)
        data = embeddings.embedding_umap(model, faces, labels, names, paths, args.blur,
                                         cache=not args.no_cache, progress=True)
        print(f"embeddings {data.seconds['embed']:.1f} s, UMAP {data.seconds['umap']:.1f} s", file=sys.stderr)
        items["umap"] = (embeddings.umap_figure(data), data)
    return items


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    out = args.out or Path("analysis-out") / args.command
    try:
        items = run(args)
    except (AnalysisError, CheckpointError, DataError, FileNotFoundError, ModelNotFoundError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    png = not args.no_png
    if png and not export.png_export_status()[0]:
        print(f"note: no PNG: {export.png_export_status()[1]}", file=sys.stderr)
        png = False
    for name, files in export.save_all(out, items, png=png).items():
        print(f"{name}: " + ", ".join(str(p) for p in files.values()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
