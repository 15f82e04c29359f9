"""ONNX graphs: InsightFace IResNet exports (`w600k_r50.onnx`), MobileFaceNet, zoo models exported
with `torch.onnx.export`.

Weights are the graph's initializers (or Constant nodes); the layer order is the node order
(ONNX keeps nodes topologically sorted; exporters write them in the order the network runs),
restricted to the nodes the first output depends on. BatchNorm eps is each
BatchNormalization's `epsilon`; the embedding size is the output's last dimension; the input
size is the input's (h, w) when static.

Folded BatchNorm: exporters in eval mode fold a BatchNorm that follows a conv into the
conv's weights and a bias (`torch.onnx.export` does; so do InsightFace's models). The
importer restores such a conv as the zoo's conv + an identity BatchNorm carrying the bias
(running mean 0, running var 1, gamma sqrt(1 + eps), beta = bias): exact, and the model can
still be fine-tuned, though the restored BNs start from identity statistics rather than the
original ones (which the file no longer has).

Input normalisation: a graph that starts with Sub/Mul/Div by constants states its own;
otherwise its caller normalises and the file does not say how. The zoo's (x - 127.5) / 128
is assumed unless `input_std` is given: InsightFace's arcface_torch models (`w600k_r50.onnx`)
expect (x - 127.5) / 127.5, so import them with `input_std=127.5`; the first conv is then
rescaled by 128 / 127.5, exactly.

With onnxruntime installed, the import runs the original graph on the same faces and refuses
to save a model whose embeddings differ.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, List, Optional, Set, Tuple

import numpy as np

from .core import ImporterError, Layer, SingleFileFormat, SourceModel, centre_crop, centred_scale, register

# ops that only move or reshape activations, or compute shapes
PASSTHROUGH = {"Flatten", "Reshape", "Dropout", "Identity", "Squeeze", "Unsqueeze", "Shape", "Gather", "Concat",
               "Cast", "Constant", "ConstantOfShape", "Range", "Slice"}
AFFINE_OPS = {"Sub", "Add", "Mul", "Div"}


def _load(path: Path):
    try:
        import onnx
    except ImportError:
        raise ImporterError(f"{path}: reading ONNX needs the `onnx` package (pip install onnx)") from None
    try:
        model = onnx.load(str(path))
    except Exception as err:  # protobuf DecodeError, missing external data, ...
        raise ImporterError(f"{path}: not a readable ONNX model, truncated or corrupt "
                            f"({type(err).__name__}: {err})") from None
    if not model.graph.node:
        raise ImporterError(f"{path}: an ONNX model with no nodes (truncated or not a network)")
    return model


def _attrs(node) -> Dict[str, Any]:
    from onnx import helper

    return {a.name: helper.get_attribute_value(a) for a in node.attribute}


class _Graph:
    def __init__(self, path: Path, model):
        from onnx import numpy_helper

        self.path = path
        graph = model.graph
        self.consts: Dict[str, np.ndarray] = {}
        try:
            for init in graph.initializer:
                self.consts[init.name] = numpy_helper.to_array(init)
        except Exception as err:
            raise ImporterError(f"{path}: unreadable initializer ({err}); truncated or corrupt?") from None
        for node in graph.node:
            if node.op_type == "Constant":
                attrs = _attrs(node)
                if "value" in attrs:
                    self.consts[node.output[0]] = numpy_helper.to_array(attrs["value"])
                elif "value_float" in attrs:
                    self.consts[node.output[0]] = np.array(attrs["value_float"], np.float32)
                elif "value_floats" in attrs:
                    self.consts[node.output[0]] = np.array(attrs["value_floats"], np.float32)
            elif node.op_type == "Identity" and node.input[0] in self.consts:
                self.consts[node.output[0]] = self.consts[node.input[0]]
        inputs = [i for i in graph.input if i.name not in self.consts]
        if len(inputs) != 1:
            raise ImporterError(f"{path}: a face network has one input, this graph has {len(inputs)} "
                                f"({', '.join(i.name for i in inputs)})")
        self.input = inputs[0]
        if not graph.output:
            raise ImporterError(f"{path}: the graph has no output")
        self.output = graph.output[0]
        producer = {out: k for k, n in enumerate(graph.node) for out in n.output}
        used, todo = set(), [self.output.name]
        while todo:
            name = todo.pop()
            k = producer.get(name)
            if k is None or k in used:
                continue
            used.add(k)
            todo.extend(i for i in graph.node[k].input if i)
        self.nodes = [n for k, n in enumerate(graph.node) if k in used]
        self.consumers: Dict[str, List[Any]] = {}
        for node in self.nodes:
            for name in node.input:
                self.consumers.setdefault(name, []).append(node)

    def const(self, name: str, node, role: str) -> np.ndarray:
        if name not in self.consts:
            raise ImporterError(f"{self.path}: node {node.name or node.op_type!r} ({node.op_type}): its {role} "
                                f"{name!r} is computed at run time, not stored; unsupported")
        return np.asarray(self.consts[name])

    def feeds_bn(self, name: str) -> bool:
        users = self.consumers.get(name, [])
        return len(users) == 1 and users[0].op_type == "BatchNormalization"

    def dims(self, value_info) -> List[Optional[int]]:
        shape = value_info.type.tensor_type.shape
        return [d.dim_value if d.HasField("dim_value") else None for d in shape.dim]


def _scalar(value: np.ndarray, node, path: Path) -> float:
    flat = np.asarray(value, np.float64).ravel()
    if flat.size == 0 or not np.all(flat == flat[0]):
        raise ImporterError(f"{path}: node {node.name or node.op_type!r} ({node.op_type}) normalises the input "
                            f"per channel ({flat.tolist()[:3]}...); only one mean and scale for all channels is supported")
    return float(flat[0])


def read_graph(path: Path, input_std: Optional[float] = None) -> SourceModel:
    model = _load(path)
    graph = _Graph(path, model)
    input_dims = graph.dims(graph.input)
    if len(input_dims) != 4 or input_dims[1] not in (3, None):
        raise ImporterError(f"{path}: input {graph.input.name!r} has shape {input_dims}; a face network takes "
                            "(N, 3, H, W) images")
    input_size = tuple(input_dims[2:]) if None not in input_dims[2:] else None
    output_dims = graph.dims(graph.output)
    embedding_dim = output_dims[-1] if output_dims and output_dims[-1] else None
    layers: List[Layer] = []
    affine: Dict[str, Tuple[float, float]] = {graph.input.name: (1.0, 0.0)}
    input_scale: Optional[float] = None
    adds, skipped, consumed = 0, set(), set()
    activations: Set[str] = {graph.input.name}
    shape_values: Set[str] = set()
    for node in graph.nodes:
        op, name, attrs = node.op_type, node.name or node.output[0], _attrs(node)
        if id(node) in consumed:
            continue
        dynamic = [i for i in node.input if i and i not in graph.consts]
        if op == "Shape" or (op != "Constant" and all(i in shape_values for i in dynamic)):
            # shape arithmetic (x.view(x.size(0), -1), the centre crop's offsets): no activations
            shape_values.update(node.output)
            skipped.add(op)
            continue
        data = node.input[0] if node.input else None
        if op in AFFINE_OPS and data is not None:
            operands = [i for i in node.input if i in activations]
            constants = [i for i in node.input if i not in activations]
            if len(operands) == 2 and op == "Add":
                adds += 1
                activations.add(node.output[0])
                continue
            if len(operands) == 1 and len(constants) == 1 and operands[0] in affine and operands[0] == node.input[0]:
                a, b = affine[operands[0]]
                c = _scalar(graph.const(constants[0], node, "operand"), node, path)
                affine[node.output[0]] = {"Sub": (a, b - c), "Add": (a, b + c), "Mul": (a * c, b * c),
                                          "Div": (a / c, b / c)}[op]
                activations.add(node.output[0])
                continue
            raise ImporterError(f"{path}: node {name!r} ({op} of {list(node.input)}) is not a residual addition or an "
                                "input normalisation; the zoo's architectures have no such layer")
        if op in ("Conv", "BatchNormalization", "PRelu", "Gemm", "MatMul"):
            if data in affine:
                if layers:
                    raise ImporterError(f"{path}: node {name!r} ({op}) reads the raw input but is not the first layer")
                a, b = affine[data]
                if (a, b) != (1.0, 0.0):
                    input_scale = centred_scale(-b / a, a, f"{path}: node {name!r}")
        if op == "Conv":
            weight = graph.const(node.input[1], node, "weight")
            tensors = {"weight": weight}
            if len(node.input) > 2 and node.input[2]:
                tensors["bias"] = graph.const(node.input[2], node, "bias")
            if weight.ndim != 4:
                raise ImporterError(f"{path}: node {name!r}: only 2-D convolutions are supported (weight {weight.shape})")
            pads = list(attrs.get("pads", [0, 0, 0, 0]))
            if attrs.get("auto_pad", b"NOTSET") not in (b"NOTSET", "NOTSET", b"VALID", "VALID") and any(pads):
                raise ImporterError(f"{path}: node {name!r}: auto_pad {attrs['auto_pad']!r} unsupported")
            if pads[:2] != pads[2:]:
                raise ImporterError(f"{path}: node {name!r}: asymmetric padding {pads} has no torch Conv2d equivalent")
            layer_attrs = {"stride": tuple(attrs.get("strides", [1, 1])), "padding": tuple(pads[:2]),
                           "groups": int(attrs.get("group", 1)), "dilation": tuple(attrs.get("dilations", [1, 1]))}
            layers.append(Layer("conv", name, op, tensors, layer_attrs, feeds_bn=graph.feeds_bn(node.output[0])))
        elif op == "BatchNormalization":
            if attrs.get("training_mode", 0):
                raise ImporterError(f"{path}: node {name!r}: a BatchNormalization in training mode")
            roles = ("weight", "bias", "running_mean", "running_var")
            tensors = {role: graph.const(i, node, role) for role, i in zip(roles, node.input[1:5])}
            layers.append(Layer("bn", name, op, tensors, {"eps": float(attrs.get("epsilon", 1e-5))}))
        elif op == "PRelu":
            layers.append(Layer("prelu", name, op, {"weight": graph.const(node.input[1], node, "slope")}))
        elif op == "Gemm":
            if attrs.get("transA", 0):
                raise ImporterError(f"{path}: node {name!r}: Gemm with transA unsupported")
            weight = graph.const(node.input[1], node, "weight").astype(np.float64) * float(attrs.get("alpha", 1.0))
            weight = weight if attrs.get("transB", 0) else weight.T
            tensors = {"weight": weight.astype(np.float32)}
            if len(node.input) > 2 and node.input[2]:
                bias = graph.const(node.input[2], node, "bias").astype(np.float64) * float(attrs.get("beta", 1.0))
                tensors["bias"] = bias.reshape(-1).astype(np.float32)
            layers.append(Layer("linear", name, op, tensors, feeds_bn=graph.feeds_bn(node.output[0])))
        elif op == "MatMul":
            weight = graph.const(node.input[1], node, "weight")
            if weight.ndim != 2:
                raise ImporterError(f"{path}: node {name!r}: MatMul weight of shape {weight.shape}")
            tensors = {"weight": weight.T.copy()}
            out = node.output[0]
            users = graph.consumers.get(out, [])
            if len(users) == 1 and users[0].op_type == "Add":
                other = [i for i in users[0].input if i != out]
                if other and other[0] in graph.consts:
                    tensors["bias"] = np.asarray(graph.consts[other[0]], np.float32).reshape(-1)
                    consumed.add(id(users[0]))
                    out = users[0].output[0]
            layers.append(Layer("linear", name, op, tensors, feeds_bn=graph.feeds_bn(out)))
            activations.add(out)
        elif op in PASSTHROUGH:
            skipped.add(op)
            if data in affine and op in ("Identity", "Slice", "Cast"):
                affine[node.output[0]] = affine[data]
        else:
            raise ImporterError(f"{path}: node {name!r} is a {op}; the zoo's architectures have no such layer "
                                "(unknown layer or wrong file)")
        activations.update(o for o in node.output if o not in graph.consts)
    notes = ["Channel order: RGB assumed (the file does not record it; InsightFace feeds RGB)."]
    if input_scale is None:
        std = 128.0 if input_std is None else float(input_std)
        notes.append("Input normalisation: the graph leaves it to its caller and the file does not say which; "
                     f"(x - 127.5) / {std:g} " + ("assumed (the zoo's own; InsightFace's arcface_torch models "
                                                  "expect 127.5: import them with --input-std 127.5)."
                                                  if input_std is None else "as given."))
    else:
        std = None
    read = {"nodes": len(model.graph.node), "used_nodes": len(graph.nodes), "opset": [
        f"{o.domain or 'ai.onnx'} {o.version}" for o in model.opset_import], "producer":
        f"{model.producer_name} {model.producer_version}".strip() or None,
        "input": f"{graph.input.name} {input_dims}", "output": f"{graph.output.name} {output_dims}"}
    if skipped:
        read["skipped_ops"] = sorted(skipped)
    source = SourceModel(format="onnx", files=[path], layers=layers, input_scale=input_scale,
                         input_size=input_size, embedding_dim=embedding_dim, residual_adds=adds, read=read, notes=notes)
    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        notes.append("onnxruntime is not installed: the import was not checked against the graph itself.")
        return source
    source.reference = lambda images, size: _run(model, graph, images, size, input_scale, std, input_size)
    source.reference_name = "the ONNX graph run by onnxruntime"
    return source


def _run(model, graph: _Graph, images: np.ndarray, size, input_scale, std, input_size) -> np.ndarray:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = options.inter_op_num_threads = 1
    options.log_severity_level = 3
    session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    images = np.asarray(images, np.float32)
    if input_size is None or tuple(input_size) != tuple(images.shape[-2:]):
        images = centre_crop(images, size)
    feed = images * 128.0 + 127.5 if input_scale is not None else images * np.float32(128.0 / std)
    batch = graph.dims(graph.input)[0]
    chunks = [feed] if batch in (None, len(feed)) else [feed[i:i + 1] for i in range(len(feed))]
    outputs = [session.run([graph.output.name], {graph.input.name: c.astype(np.float32)})[0] for c in chunks]
    return np.concatenate(outputs).reshape(len(feed), -1)


@register
class ONNXFormat(SingleFileFormat):
    name = "onnx"
    suffix = ".onnx"
    description = "an ONNX graph (.onnx, or a folder holding one)"

    def read(self, files: List[Path], input_std: Optional[float] = None) -> SourceModel:
        return read_graph(files[0], input_std)
