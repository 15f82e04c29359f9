"""Verification accuracy of every local zoo model and the pretrained peers, clean and blurred, with ROC curves.

Every model goes through zoo.evaluate's own protocol code (`evaluate_protocol`: the same
cached aligned crops, the same blur applied to the 112 px crop, cosine scores, 10-fold
accuracy, AUC, TAR@FAR) on the project protocol: LFW View 1 test pairs, CFP-FF and CFP-FP,
at blur sigma 0, 2 and 4. Nothing is reused from earlier evaluations.

The peers (zoo.peers: dlib's ResNet, trained on about 3 million faces, and OpenCV Zoo's
SFace, trained on web celebrity faces) are pretrained models from outside FaceScope; their
rows say so. dlib costs ~0.12 CPU-s per image (SFace and the ir18 x0.25 zoo models a few
ms), so work is split into jobs - one per zoo model, one per (peer, blur level) - run as
`--jobs` parallel processes of one torch thread each. Faces are aligned by `--aligner`
(default YuNet, zoo.data's default), recorded in every result.

Writes bench/results/accuracy.{json,md}, one evaluate-format JSON per model in
bench/results/accuracy/ (the schema of `python -m zoo.evaluate --out`), and ROC curves per
protocol (every model; solid clean, dashed blur 2, dotted blur 4) as HTML, JSON and PNG in
bench/results/roc/ (see `write_figures`).

    python bench/accuracy.py                              # everything (tens of minutes on 2 cores)
    python bench/accuracy.py --models peer:dlib,peer:sface --max-pairs 200 --protocols lfw-view1
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Dict, List

import plotly.graph_objects as go
from plotly.colors import qualitative

REPO = Path(__file__).resolve().parents[1]
from bench.common import RESULTS, write_results
import zoo
from zoo.data.align import DEFAULT_ALIGNER, aligner_names
from zoo.data.paths import atomic_write
from zoo.peers import is_peer, peer_names
from zoo.tables import markdown_table

PROTOCOLS = ("lfw-view1", "cfp-ff", "cfp-fp")
DASH = {0.0: "solid", 2.0: "dash", 4.0: "dot"}


def run_job(job: Dict) -> Dict:
    """Evaluate one model on every protocol under the job's conditions (in a child process)."""
    import torch

    from zoo import evaluate
    from zoo.data import CropCache, load_protocol, parse_degradation

    torch.set_num_threads(1)
    name = job["model"]
    model = zoo.load(name)
    cache = CropCache(None, job.get("aligner", DEFAULT_ALIGNER))
    conditions = [parse_degradation(c) for c in job["conditions"]]
    memo: Dict = {}  # CFP-FF and CFP-FP share their frontal faces: embedded once
    protocols = {}
    for protocol in job["protocols"]:
        pairs = load_protocol(protocol)
        if job["max_pairs"]:
            pairs = pairs.subset(job["max_pairs"])
        protocols[protocol] = evaluate.evaluate_protocol(model.eval(), pairs, conditions, cache,
                                                         progress=False, memo=memo)
    return {"model": {"spec": name, "name": getattr(model, "name", name),
                      "resolved_by": "zoo.peers" if is_peer(name) else "zoo.load",
                      "trained_on": trained_on(name, model), "trained_on_short": getattr(model, "short", None),
                      "parameters": model.parameter_count()},
            "settings": {"flip_test": False, "conditions": job["conditions"], "max_pairs": job["max_pairs"],
                         "aligner": cache.aligner.name, "aligner_version": cache.aligner.version},
            "protocols": protocols}


def jobs_for(models: List[str], conditions: List[str], protocols: List[str], max_pairs: int,
             aligner: str = DEFAULT_ALIGNER) -> List[Dict]:
    jobs = []
    for name in models:
        split = [[c] for c in conditions] if is_peer(name) else [conditions]
        jobs += [{"model": name, "conditions": part, "protocols": protocols, "max_pairs": max_pairs,
                  "aligner": aligner} for part in split]
    return jobs


def run_jobs(jobs: List[Dict], parallel: int) -> List[Dict]:
    """Each job in its own `python bench/accuracy.py --job` process, `parallel` at a time."""
    start = time.perf_counter()

    def one(job: Dict) -> Dict:
        with tempfile.TemporaryDirectory(prefix="facescope-accuracy-") as folder:
            out = Path(folder) / "result.json"
            run = subprocess.run([sys.executable, str(Path(__file__).resolve()), "--job", json.dumps(job),
                                  "--job-out", str(out)], cwd=REPO, capture_output=True, text=True)
            if run.returncode != 0:
                raise RuntimeError(f"accuracy job {job} failed:\n{run.stderr[-3000:]}")
            print(f"[{time.perf_counter() - start:6.0f} s] {job['model']} {','.join(job['conditions'])} done",
                  flush=True)
            return json.loads(out.read_text())

    with ThreadPoolExecutor(parallel) as pool:
        return list(pool.map(one, jobs))


def merge(parts: List[Dict]) -> Dict[str, Dict]:
    """Per model: one evaluate-format result with the conditions of all its jobs."""
    merged: Dict[str, Dict] = {}
    for part in parts:
        name = part["model"]["spec"]
        if name not in merged:
            merged[name] = part
            continue
        target = merged[name]
        target["settings"]["conditions"] += part["settings"]["conditions"]
        for protocol, entry in part["protocols"].items():
            target["protocols"][protocol]["conditions"].update(entry["conditions"])
    return merged


def trained_on(name: str, model) -> str:
    """What the model's weights saw, from its card's config: a peer's own statement, an
    imported checkpoint's provenance note, or FaceScope-small plus the initialisation's data."""
    if is_peer(name):
        return model.trained_on
    config = zoo.read_config(zoo.LOCAL_ZOO / name) if (zoo.LOCAL_ZOO / name / "config.json").is_file() else {}
    if config.get("imported_from"):
        return f"imported, not trained by FaceScope: {config['imported_from'].get('note') or 'not recorded'}"
    init = (config.get("training") or {}).get("init") or {}
    if init.get("from"):
        return (f"FaceScope-small, fine-tuned from {init['from']} ({init.get('trained_on') or 'see its card'}); "
                "not identity-disjoint from the test sets")
    return "FaceScope-small (from scratch)"


def short_trained_on(text: str) -> str:
    """The table's "trained on" cell: enough to tell the model kinds apart."""
    if text.startswith("imported"):
        return "MS1M (imported as is)" if "MS1M" in text else "imported as is"
    if text.startswith("FaceScope-small, fine-tuned"):
        return "FaceScope-small, fine-tuned from MS1M" if "MS1M" in text else "FaceScope-small, fine-tuned"
    return "FaceScope-small"


def label(result: Dict) -> str:
    spec = result["model"]["spec"]
    return f"{spec} (pretrained peer)" if result["model"]["resolved_by"] == "zoo.peers" else spec


def roc_figures(results: Dict[str, Dict], protocols: List[str]) -> Dict[str, tuple]:
    """name -> (figure, data): one ROC figure per protocol, every model and blur level."""
    items = {}
    for protocol in protocols:
        figure, data = go.Figure(), {}
        for k, (name, result) in enumerate(results.items()):
            colour = qualitative.Plotly[k % len(qualitative.Plotly)]
            for condition, values in result["protocols"][protocol]["conditions"].items():
                points = [(f, t) for f, t in zip(values["roc"]["far"], values["roc"]["tar"]) if f > 0]
                sigma = values["degradation"]["amount"]
                figure.add_trace(go.Scatter(
                    x=[f for f, _ in points], y=[t for _, t in points], mode="lines", legendgroup=name,
                    line={"color": colour, "dash": DASH.get(sigma, "dashdot")},
                    name=f"{label(result)} {condition} (AUC {values['auc']:.3f})"))
                data[f"{name} {condition}"] = {"far": values["roc"]["far"], "tar": values["roc"]["tar"],
                                               "auc": values["auc"]}
        figure.update_layout(title=f"ROC on {protocol}: solid clean, dashed blur 2, dotted blur 4",
                             xaxis_title="false accept rate", yaxis_title="true accept rate", xaxis_type="log",
                             yaxis_range=[0, 1.02], width=1100, height=700)
        items[f"roc_{protocol}"] = (figure, data)
    return items


def write_figures(folder: Path, items: Dict[str, tuple], png: bool) -> Dict[str, Dict[str, Path]]:
    """HTML (plotly.js from its CDN, so results stay small; the PNG is the offline view), the
    plotted data as JSON, and PNG when export works here (analysis.export: kaleido + Chromium)."""
    from analysis import export

    written = {}
    for name, (figure, data) in items.items():
        html, data_file = folder / f"{name}.html", folder / f"{name}.json"
        atomic_write(html, lambda out, f=figure: out.write(f.to_html(include_plotlyjs="cdn").encode()))
        atomic_write(data_file, lambda out, d=data: out.write(json.dumps(d, allow_nan=False).encode()))
        written[name] = {"html": html, "json": data_file}
    available, reason = export.png_export_status()
    if png and not available:
        print(f"note: no PNG: {reason}", file=sys.stderr)
    if png and available:
        paths = export.write_pngs({folder / f"{name}.png": figure for name, (figure, _) in items.items()})
        for name, path in zip(items, paths):
            written[name]["png"] = path
    return written


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python bench/accuracy.py", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default="",
                        help="comma-separated (default: every local zoo model and every peer: "
                             f"{', '.join(peer_names())})")
    parser.add_argument("--protocols", default=",".join(PROTOCOLS), help="default lfw-view1,cfp-ff,cfp-fp")
    parser.add_argument("--blur", default="0,2,4", help="blur sigmas at 112 px (default 0,2,4)")
    parser.add_argument("--max-pairs", type=int, default=0, help="pairs per protocol (default: all; for smoke runs)")
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1, help="parallel processes (default: cores)")
    parser.add_argument("--aligner", choices=aligner_names(), default=DEFAULT_ALIGNER,
                        help=f"face detector + landmarks for every model (default {DEFAULT_ALIGNER})")
    parser.add_argument("--no-png", action="store_true", help="ROC curves as HTML and JSON only")
    parser.add_argument("--job", help=argparse.SUPPRESS)  # internal: one job, in a child process
    parser.add_argument("--job-out", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.job:
        result = run_job(json.loads(args.job))
        atomic_write(args.job_out, lambda out: out.write(json.dumps(result, allow_nan=False).encode()))
        return 0

    models = [m for m in args.models.split(",") if m] or zoo.local_models() + peer_names()
    protocols = [p for p in args.protocols.split(",") if p]
    conditions = [f"blur{b.strip()}" for b in args.blur.split(",") if b.strip()]
    start = time.perf_counter()
    results = merge(run_jobs(jobs_for(models, conditions, protocols, args.max_pairs, args.aligner), args.jobs))
    results = {name: results[name] for name in models}
    folder = RESULTS / "accuracy"
    for stale in (folder, RESULTS / "roc"):  # files of models or protocols left out of this run would mislead
        shutil.rmtree(stale, ignore_errors=True)
    for name, result in results.items():
        atomic_write(folder / f"{name.replace(':', '-')}.json", lambda out, r=result: out.write((json.dumps(r, indent=1) + "\n").encode()))

    written = write_figures(RESULTS / "roc", roc_figures(results, protocols), png=not args.no_png)

    headers = ["model", "trained on"] + [f"{p} {c}" for p in protocols for c in conditions]
    rows = []
    for name, result in results.items():
        cells = []
        for protocol in protocols:
            for condition in conditions:
                values = result["protocols"][protocol]["conditions"][condition]
                cells.append(f"{100 * values['accuracy']:.2f} ± {100 * values['accuracy_std']:.2f}")
        short = result["model"].get("trained_on_short") or short_trained_on(result["model"]["trained_on"])
        rows.append([label(result), short] + cells)
    first = next(iter(results.values()))
    counts = ", ".join(f"{p} {first['protocols'][p]['conditions'][conditions[0]]['pairs']} pairs" for p in protocols)
    table = ("10-fold verification accuracy (%, mean ± std over folds), cosine similarity, no flip test, "
             f"Gaussian blur sigma in pixels of the 112 px aligned crop ({counts}; faces aligned by "
             f"{args.aligner}). \"trained on\" comes from each card: the imported InsightFace MobileFaceNet and "
             "the models fine-tuned from it on FaceScope-small saw MS1M, which likely holds people of LFW and CFP, so "
             "their numbers are not identity-disjoint; the pretrained peers were trained elsewhere (dlib on ~3 "
             "million faces, SFace on web celebrity faces) and are reference points. ROC curves: "
             "bench/results/roc/.\n\n"
             + markdown_table(headers, rows))
    payload = {"protocols": protocols, "conditions": conditions, "max_pairs": args.max_pairs,
               "aligner": args.aligner,
               "seconds": round(time.perf_counter() - start, 1),
               "roc_files": {n: {k: str(p.relative_to(RESULTS)) for k, p in files.items()}  # beside this file
                             for n, files in written.items()},
               "models": {name: {"model": r["model"], "protocols": {
                   p: {"pairs_total": e["pairs_total"], "pairs_skipped": e["pairs_skipped"],
                       "fallback_alignments": e["fallback_alignments"],
                       "conditions": {c: {k: v[k] for k in ("accuracy", "accuracy_std", "auc", "tar_at_far", "pairs")}
                                      for c, v in e["conditions"].items()}}
                   for p, e in r["protocols"].items()}} for name, r in results.items()}}
    print(table)
    print(f"wrote {write_results('accuracy', payload, table)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
