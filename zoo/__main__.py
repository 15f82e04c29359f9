"""`python -m zoo list`: every registered model, and the trained checkpoints of the local zoo."""
from __future__ import annotations

import argparse

import zoo


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m zoo", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    listing = sub.add_parser("list", help="print every registered model: name, method, backbone, parameters")
    listing.add_argument("--width", type=float, default=1.0, help="width multiplier for the counts (default 1.0)")
    sub.add_parser("local", help="print the trained checkpoints of the local zoo")
    args = parser.parse_args(argv)
    if args.command == "list":
        for name in zoo.model_names():
            model = zoo.build(name, width=args.width)
            print(f"{name}\t{model.config.method}\t{model.config.backbone}\t{model.parameter_count()}")
    else:
        for name in zoo.local_models():
            config = zoo.read_config(zoo.LOCAL_ZOO / name)["architecture"]
            print(f"{name}\t{config['name']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
