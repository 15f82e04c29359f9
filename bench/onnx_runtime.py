"""CPU ms/image of every embedded zoo model in torch and in onnxruntime (its `zoo.export` ONNX file).

Both run one thread on the same batch of real LFW faces, timed in alternation so a busy
machine slows both alike; the table also gives the largest cosine gap between the two.

    python bench/onnx_runtime.py                  # every local zoo model, batch 32
    python bench/onnx_runtime.py --models mobilefacenet.y1 --batch 1
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


def measure(name: str, batch: torch.Tensor, rounds: int, folder: Path) -> dict:
    model = zoo.load(name).eval()
    path = export_onnx(model, folder / f"{name}.onnx", source=name)
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads, options.inter_op_num_threads = 1, 1
    session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    feed = {"faces": batch.numpy()}
    torch_s, ort_s = [], []
    reference, ours = model.embed(batch).numpy(), session.run(None, feed)[0]  # also the warm-up
    for _ in range(rounds):
        start = time.perf_counter()
        model.embed(batch)
        torch_s.append(time.perf_counter() - start)
        start = time.perf_counter()
        session.run(None, feed)
        ort_s.append(time.perf_counter() - start)
    per_image = 1000 / len(batch)
    return {"model": name, "exported_as": model.inference_form().name,
            "torch_ms_per_image": float(np.median(torch_s)) * per_image,
            "onnxruntime_ms_per_image": float(np.median(ort_s)) * per_image,
            "min_cosine": float(np.sum(reference * ours, axis=1).min())}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python bench/onnx_runtime.py", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default="", help="comma-separated (default: every local zoo model)")
    parser.add_argument("--batch", type=int, default=32, help="faces per call (default 32)")
    parser.add_argument("--rounds", type=int, default=10, help="timed calls per runtime (default 10; median)")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    names = [m for m in args.models.split(",") if m] or zoo.local_models()
    batch = faces(args.batch)
    with tempfile.TemporaryDirectory(prefix="facescope-onnx-") as folder:
        rows = [measure(name, batch, args.rounds, Path(folder)) for name in names]
    table = markdown_table(
        ["model", "exported as", "torch ms/image", "onnxruntime ms/image", "speed-up", "min cosine"],
        [[r["model"], r["exported_as"], f"{r['torch_ms_per_image']:.2f}", f"{r['onnxruntime_ms_per_image']:.2f}",
          f"{r['torch_ms_per_image'] / r['onnxruntime_ms_per_image']:.2f}x", f"{r['min_cosine']:.6f}"] for r in rows])
    table = f"One CPU thread, batch {args.batch}, median of {args.rounds} alternating calls.\n\n" + table
    write_results("onnx_runtime", {"batch": args.batch, "rounds": args.rounds, "models": rows}, table)
    print(table)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
