"""CPU ms/image of every embedded zoo model in torch and in onnxruntime (its `zoo.export` ONNX file).

Both run one thread on the same real LFW faces, timed in alternation so a busy machine slows
both alike, at the batch sizes FaceScope uses: 2 (the app verifying a pair) and 8 (zoo.evaluate's
default); the table also gives the smallest cosine between the two runtimes' embeddings.

    python bench/onnx_runtime.py                  # every local zoo model, batches 2 and 8
    python bench/onnx_runtime.py --models mobilefacenet.y1 --batch 1,32
Writes bench/results/onnx_runtime.{json,md}.
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import onnxruntime
import torch

import zoo
from bench.common import write_results
from zoo.data import data_root, load_image
from zoo.export import export_onnx
from zoo.tables import markdown_table


def faces(count: int) -> torch.Tensor:
    """`count` LFW photos resized to 112x112 (timing needs real pixels, not alignment)."""
    people = sorted(p for p in (data_root() / "lfw" / "images").iterdir() if p.is_dir())[:count]
    crops = np.stack([np.asarray(torch.nn.functional.interpolate(
        torch.from_numpy(load_image(sorted(p.glob("*.jpg"))[0])).permute(2, 0, 1)[None].float(), size=(112, 112),
        mode="bilinear", align_corners=False)[0].permute(1, 2, 0).round().clamp(0, 255).byte()) for p in people])
    return zoo.build("mobilefacenet").preprocess(crops)


def measure(name: str, faces: torch.Tensor, batches, rounds: int, folder: Path) -> dict:
    model = zoo.load(name).eval()
    path = export_onnx(model, folder / f"{name}.onnx", source=name)
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads, options.inter_op_num_threads = 1, 1
    session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    reference, ours = model.embed(faces).numpy(), session.run(None, {"faces": faces.numpy()})[0]  # also the warm-up
    row = {"model": name, "exported_as": model.inference_form().name,
           "min_cosine": float(np.sum(reference * ours, axis=1).min())}
    for batch in batches:
        chunks = [faces[i:i + batch] for i in range(0, len(faces), batch)]
        torch_s, ort_s = [], []
        for _ in range(rounds):
            start = time.process_time()
            for chunk in chunks:
                model.embed(chunk)
            torch_s.append(time.process_time() - start)
            start = time.process_time()
            for chunk in chunks:
                session.run(None, {"faces": chunk.numpy()})
            ort_s.append(time.process_time() - start)
        row[f"batch{batch}"] = {"torch_ms_per_image": 1000 * float(np.median(torch_s)) / len(faces),
                                "onnxruntime_ms_per_image": 1000 * float(np.median(ort_s)) / len(faces)}
    return row


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python bench/onnx_runtime.py", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default="", help="comma-separated (default: every local zoo model)")
    parser.add_argument("--batch", default="2,8", help="faces per call, comma-separated (default 2,8)")
    parser.add_argument("--faces", type=int, default=32, help="faces embedded per timed round (default 32)")
    parser.add_argument("--rounds", type=int, default=10, help="timed rounds per runtime (default 10; median)")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    names = [m for m in args.models.split(",") if m] or zoo.local_models()
    batches = [int(b) for b in args.batch.split(",") if b.strip()]
    batch = faces(args.faces)
    with tempfile.TemporaryDirectory(prefix="facescope-onnx-") as folder:
        rows = [measure(name, batch, batches, args.rounds, Path(folder)) for name in names]
    headers = ["model", "exported as"]
    for b in batches:
        headers += [f"torch ms/image (batch {b})", f"onnxruntime ms/image (batch {b})", f"speed-up (batch {b})"]
    table_rows = []
    for r in rows:
        cells = [r["model"], r["exported_as"]]
        for b in batches:
            t, o = r[f"batch{b}"]["torch_ms_per_image"], r[f"batch{b}"]["onnxruntime_ms_per_image"]
            cells += [f"{t:.2f}", f"{o:.2f}", f"{t / o:.2f}x"]
        table_rows.append(cells + [f"{r['min_cosine']:.6f}"])
    table = (f"CPU time, one thread, {args.faces} LFW faces per round, median of {args.rounds} rounds, the two "
             f"runtimes in alternation.\n\n" + markdown_table(headers + ["min cosine"], table_rows))
    write_results("onnx_runtime", {"batches": batches, "faces": args.faces, "rounds": args.rounds, "models": rows},
                  table)
    print(table)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
