"""`python -m zoo list`: every registered model; `python -m zoo local`: the trained local zoo;
`python -m zoo import SOURCE --arch ARCH --out DIR`: a checkpoint made elsewhere -> a zoo checkpoint."""
from __future__ import annotations

import argparse
import textwrap

import zoo
from zoo.tables import markdown_table

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
    return markdown_table(header, rows).rstrip("\n")


def add_import_parser(sub) -> None:
    importer = sub.add_parser(
        "import", help="turn an InsightFace MXNet, safetensors state-dict or ONNX checkpoint into a zoo checkpoint",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description=textwrap.fill(
                    "Import a face-recognition checkpoint made elsewhere into a FaceScope checkpoint folder "
                    "(model.safetensors + config.json + README.md card). Embedding size, input size and every "
                    "BatchNorm eps are read from the source; layers are matched in order onto ARCH with every "
                    "shape checked, and the import fails naming the layer when they do not fit. Where the source "
                    "can run itself (MXNet symbol, ONNX with onnxruntime) the imported model is checked against it "
                    "before anything is written.", 100),
        epilog="SOURCE formats:\n"
               "  mxnet        PREFIX-NNNN.params with PREFIX-symbol.json beside it, or a folder holding the pair\n"
               "  safetensors  a torch state dict (.safetensors): CASIA MobileFaceNet (Xiaoccer), InsightFace\n"
               "               iresnet, or FaceScope key names\n"
               "  onnx         an ONNX graph (.onnx): InsightFace IResNet exports, MobileFaceNet, torch.onnx.export\n"
               "               of zoo models; BatchNorm folded into the convs is restored\n\n"
               "examples:\n"
               "  python -m zoo import ../shared/pretrained/insightface-mobilefacenet-y1 --arch mobilefacenet \\\n"
               "      --out zoo/checkpoints/insightface-y1 --licence 'InsightFace: non-commercial research only'\n"
               "  python -m zoo import w600k_r50.onnx --arch ir50 --out ckpt/w600k-r50 --input-std 127.5")
    importer.add_argument("source", help="the checkpoint to import: a file or a folder (format detected)")
    importer.add_argument("--arch", required=True,
                          help="zoo architecture the weights belong to: mobilefacenet, ir18, ir34, ir50, ir100")
    importer.add_argument("--out", required=True, help="checkpoint folder to write (replaced if it exists)")
    importer.add_argument("--name", help="title of the model card (default: the --out folder's name)")
    importer.add_argument("--licence", "--license", dest="licence",
                          help="licence line for the card (default: \"unknown: check the source's licence\")")
    importer.add_argument("--note", help="free text for the card: where the weights come from, training data")
    importer.add_argument("--input-std", type=float,
                          help="for graphs that leave input normalisation to their caller: the std they expect, "
                               "(x - 127.5) / STD (default 128, the zoo's; 127.5 for InsightFace's arcface_torch "
                               "ONNX models)")
    importer.add_argument("--no-check", action="store_true",
                          help="skip the comparison with the source's own forward pass")


def run_import(args) -> int:
    import sys

    from zoo.importers import ImporterError, import_checkpoint

    try:
        out = import_checkpoint(args.source, args.arch, args.out, name=args.name, licence=args.licence,
                                note=args.note, input_std=args.input_std, check=not args.no_check)
    except ImporterError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    config = zoo.read_config(out)
    arch, read = config["architecture"], config["imported_from"]["read"]
    print(f"wrote {out}: {arch['name']}, {arch['embedding_dim']}-d embedding, input {arch['input_size'][0]}x"
          f"{arch['input_size'][1]}, bn_eps {arch['bn_eps']}")
    check = read.get("verification")
    print("checked against " + check["reference"] + f": max difference {check['max_abs_diff']:.2g}" if check else
          "not checked against the source's own forward pass: measure its accuracy before relying on it")
    for note in config["imported_from"]["assumed"]:
        print(f"assumed: {note}")
    return 0


def run_export(args) -> int:
    import sys

    from zoo.export import export_onnx

    try:
        model = zoo.load(args.model)
        out = export_onnx(model, args.out, source=args.model)
    except (FileNotFoundError, zoo.CheckpointError, TypeError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"wrote {out}: {model.inference_form().name}, {model.config.embedding_dim}-d L2-normalised output; "
          f"input 'faces' (N,3,112,112) = (x - {model.config.input_mean:g}) / {model.config.input_std:g}, "
          f"{model.config.channel_order}")
    return 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m zoo", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    listing = sub.add_parser("list", help="print every registered model: name, method, backbone, parameters")
    listing.add_argument("--width", type=float, default=1.0, help="width multiplier for the counts (default 1.0)")
    sub.add_parser("local", help="markdown table of the local zoo's checkpoints with their accuracy "
                                 "(LFW View 1 / CFP, clean and Gaussian-blurred, %%)")
    add_import_parser(sub)
    exporter = sub.add_parser("export", help="write a zoo model as ONNX (its inference form, L2-normalised output, "
                                             "input convention in the metadata)")
    exporter.add_argument("model", help="a local zoo name, checkpoint folder or hf-hub:ORG/NAME")
    exporter.add_argument("--format", choices=("onnx",), default="onnx", help="only onnx for now (default)")
    exporter.add_argument("--out", required=True, help="the file to write, e.g. model.onnx")
    args = parser.parse_args(argv)
    if args.command == "import":
        return run_import(args)
    if args.command == "export":
        return run_export(args)
    if args.command == "list":
        for name in zoo.model_names():
            model = zoo.build(name, width=args.width)
            print(f"{name}\t{model.config.method}\t{model.config.backbone}\t{model.parameter_count()}")
    else:
        print(local_table())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
