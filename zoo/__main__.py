"""`python -m zoo list`: every registered model; `python -m zoo local`: the trained local zoo."""
from __future__ import annotations

import argparse

import zoo

PROTOCOL_COLUMNS = (("lfw-view1", ("blur0", "blur2", "blur4")), ("cfp-ff", ("blur0", "blur4")),
                    ("cfp-fp", ("blur0", "blur4")))


def local_table() -> str:
    """Markdown table of the local zoo: size and the verification accuracy stored with each model."""
    header = ["model", "architecture", "params", "MB"] + [f"{p} {c}" for p, cs in PROTOCOL_COLUMNS for c in cs]
    rows = []
    for name in zoo.local_models():
        folder = zoo.LOCAL_ZOO / name
        config = zoo.read_config(folder)
        protocols = config.get("metrics", {}).get("protocols", {})
        cells = []
        for protocol, conditions in PROTOCOL_COLUMNS:
            for condition in conditions:
                result = protocols.get(protocol, {}).get("conditions", {}).get(condition)
                cells.append(f"{100 * result['accuracy']:.1f}" if result else "-")
        model = zoo.load_checkpoint(folder)
        size = (folder / "model.safetensors").stat().st_size / 2**20
        rows.append([name, config["architecture"]["name"], f"{model.parameter_count():,}", f"{size:.1f}", *cells])
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(r) + " |" for r in rows])


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m zoo", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    listing = sub.add_parser("list", help="print every registered model: name, method, backbone, parameters")
    listing.add_argument("--width", type=float, default=1.0, help="width multiplier for the counts (default 1.0)")
    sub.add_parser("local", help="markdown table of the local zoo's checkpoints with their accuracy "
                                 "(LFW View 1 / CFP, clean and Gaussian-blurred, %%)")
    args = parser.parse_args(argv)
    if args.command == "list":
        for name in zoo.model_names():
            model = zoo.build(name, width=args.width)
            print(f"{name}\t{model.config.method}\t{model.config.backbone}\t{model.parameter_count()}")
    else:
        print(local_table())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
