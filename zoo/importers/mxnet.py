"""InsightFace MXNet checkpoints (`model-NNNN.params` + `model-symbol.json`), read without MXNet.

`.params` is MXNet's NDArray-list file (src/ndarray/ndarray.cc, `NDArray::Save` of a list):

    uint64 0x112 (list magic), uint64 reserved
    uint64 count, then `count` arrays, each:
        uint32 magic: 0xF993FAC9 (v2: + int32 storage type), 0xF993FAC8 (v1), 0xF993FACA (v3,
               numpy shapes), or, in files older than v1, the array's ndim itself
        shape: uint32 ndim, then ndim int64 (v1-v3) or uint32 (legacy) dims
        (ndim 0: an empty array, nothing follows)
        int32 dev_type, int32 dev_id; int32 dtype flag (0 float32, 1 float64, 2 float16, ...)
        the raw little-endian data
    uint64 count, then `count` names: uint64 length + bytes ("arg:NAME" parameters,
    "aux:NAME" BatchNorm running statistics)

The symbol JSON is the graph: nodes in topological order, each {op, name, attrs, inputs}.
Layers are taken in that order from the nodes the output depends on; attributes a node does
not state take MXNet's defaults (BatchNorm: eps 1e-3, fix_gamma True; conv stride 1, pad 0).
"""
from __future__ import annotations

import json
import re
import struct
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import numpy as np

from .core import ImporterError, Layer, SourceFormat, SourceModel, centre_crop, centred_scale, register

LIST_MAGIC = 0x112
V1_MAGIC, V2_MAGIC, V3_MAGIC = 0xF993FAC8, 0xF993FAC9, 0xF993FACA
DTYPES = {0: np.float32, 1: np.float64, 2: np.float16, 3: np.uint8, 4: np.int32, 5: np.int8, 6: np.int64}
PARAMS_NAME = re.compile(r"^(?P<prefix>.+)-(?P<epoch>\d{4})\.params$")
# ops that carry no weights and do not change what the matched layers compute
PASSTHROUGH = {"Flatten", "flatten", "Dropout", "_copy", "identity", "BlockGrad", "stop_gradient"}
ADDS = {"elemwise_add", "_Plus", "_plus", "broadcast_add", "ElementWiseSum", "add_n"}
SCALAR_OPS = {"_minus_scalar", "_plus_scalar", "_mul_scalar", "_div_scalar"}
BN_DEFAULTS = {"eps": 1e-3, "fix_gamma": True}  # MXNet's BatchNorm defaults


class _Reader:
    """Bounds-checked reads that name the file, the array and the offset when it ends early."""

    def __init__(self, path: Path):
        self.path = path
        self.data = path.read_bytes()
        self.offset = 0

    def take(self, size: int, what: str) -> bytes:
        if self.offset + size > len(self.data):
            raise ImporterError(f"{self.path}: truncated or corrupt: {what} needs {size} bytes at offset "
                                f"{self.offset}, the file has {len(self.data) - self.offset} left "
                                f"({len(self.data)} bytes in all)")
        chunk = self.data[self.offset:self.offset + size]
        self.offset += size
        return chunk

    def unpack(self, fmt: str, what: str):
        values = struct.unpack("<" + fmt, self.take(struct.calcsize("<" + fmt), what))
        return values if len(values) > 1 else values[0]


def read_params(path: Path) -> Dict[str, np.ndarray]:
    """name -> array of an MXNet NDArray-list file (names keep their arg:/aux: prefixes)."""
    reader = _Reader(Path(path))
    magic, _reserved = reader.unpack("QQ", "the header")
    if magic != LIST_MAGIC:
        raise ImporterError(f"{path}: not an MXNet NDArray file (header {magic:#x}, expected {LIST_MAGIC:#x})")
    count = reader.unpack("Q", "the array count")
    if count > 1_000_000:
        raise ImporterError(f"{path}: corrupt: claims {count} arrays")
    arrays = [_read_array(reader, k, count) for k in range(count)]
    names_count = reader.unpack("Q", "the name count")
    if names_count not in (0, count):
        raise ImporterError(f"{path}: corrupt: {count} arrays but {names_count} names")
    if names_count == 0:
        raise ImporterError(f"{path}: the arrays have no names; cannot map them onto the symbol's layers")
    names = []
    for k in range(names_count):
        length = reader.unpack("Q", f"the length of name {k + 1} of {names_count}")
        raw = reader.take(length, f"name {k + 1} of {names_count}")
        try:
            names.append(raw.decode("utf-8"))
        except UnicodeDecodeError:
            raise ImporterError(f"{path}: corrupt: name {k + 1} is not text") from None
    if reader.offset != len(reader.data):
        raise ImporterError(f"{path}: corrupt: {len(reader.data) - reader.offset} unexpected bytes after the names")
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ImporterError(f"{path}: corrupt: array name(s) stored twice: {duplicates[:3]}")
    return dict(zip(names, arrays))


def _read_array(reader: _Reader, index: int, count: int) -> np.ndarray:
    what = f"array {index + 1} of {count}"
    magic = reader.unpack("I", f"the header of {what}")
    if magic == V2_MAGIC or magic == V3_MAGIC:
        stype = reader.unpack("i", f"the storage type of {what}")
        if stype not in (0, -1):
            raise ImporterError(f"{reader.path}: {what} is a sparse array (storage type {stype}); "
                                "face-network weights are dense: corrupt file?")
        ndim = reader.unpack("i" if magic == V3_MAGIC else "I", f"the shape of {what}")
        dims_fmt = "q"
    elif magic == V1_MAGIC:
        ndim, dims_fmt = reader.unpack("I", f"the shape of {what}"), "q"
    else:  # legacy: the magic is the ndim
        ndim, dims_fmt = magic, "I"
    if ndim < 0 or ndim > 8:
        raise ImporterError(f"{reader.path}: corrupt: {what} claims {ndim} dimensions (offset {reader.offset})")
    if ndim == 0:
        return np.zeros((0,), np.float32)
    shape = reader.unpack(f"{ndim}{dims_fmt}", f"the shape of {what}")
    shape = (shape,) if ndim == 1 else tuple(shape)
    if any(d < 0 for d in shape):
        raise ImporterError(f"{reader.path}: corrupt: {what} has shape {shape}")
    reader.unpack("ii", f"the device of {what}")
    flag = reader.unpack("i", f"the dtype of {what}")
    if flag not in DTYPES:
        raise ImporterError(f"{reader.path}: {what} has MXNet dtype flag {flag}, which this reader does not know")
    dtype = np.dtype(DTYPES[flag]).newbyteorder("<")
    size = int(np.prod(shape)) * dtype.itemsize
    data = reader.take(size, f"the data of {what}, shape {shape}")
    return np.frombuffer(data, dtype=dtype).reshape(shape).astype(np.float32)


def _attrs(node: Dict[str, Any]) -> Dict[str, str]:
    return node.get("attrs") or node.get("attr") or node.get("param") or {}


def _ints(text: str) -> Tuple[int, ...]:
    return tuple(int(v) for v in re.findall(r"-?\d+", str(text)))


def _bool(text: Any) -> bool:
    return str(text).strip().lower() in ("true", "1")


class _Graph:
    def __init__(self, symbol_path: Path, params: Dict[str, np.ndarray], params_path: Path):
        self.path = symbol_path
        self.params_path = params_path
        try:
            symbol = json.loads(symbol_path.read_text())
            self.nodes: List[Dict[str, Any]] = symbol["nodes"]
            self.head = symbol["heads"][0][0]
            for node in self.nodes:
                node["inputs"] = [int(i[0]) for i in node.get("inputs", [])]
                node["op"], node["name"]  # noqa: B018  (KeyError below if absent)
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise ImporterError(f"{symbol_path}: not valid JSON ({err}); truncated?") from None
        except (KeyError, IndexError, TypeError, ValueError) as err:
            raise ImporterError(f"{symbol_path}: not an MXNet symbol file (missing {err})") from None
        self.params = params
        self.cut = None
        names = [n["name"] for n in self.nodes]
        if self.nodes[self.head]["name"] != "fc1" and "fc1" in names:
            # a training symbol (classifier, loss on top): cut at the embedding, as InsightFace's
            # own loaders do with all_layers["fc1_output"]
            self.cut = self.nodes[self.head]["name"]
            self.head = names.index("fc1")
        self.used = self._ancestors(self.head)
        self.consumers: Dict[int, List[int]] = {}
        for k in sorted(self.used):
            for i in self.nodes[k]["inputs"]:
                self.consumers.setdefault(i, []).append(k)

    def _ancestors(self, head: int) -> set:
        seen, todo = set(), [head]
        while todo:
            k = todo.pop()
            if k in seen:
                continue
            if not 0 <= k < len(self.nodes):
                raise ImporterError(f"{self.path}: corrupt graph: node index {k} out of range")
            seen.add(k)
            todo.extend(self.nodes[k]["inputs"])
        return seen

    def param(self, node_index: int, owner: Dict[str, Any], role: str) -> np.ndarray:
        node = self.nodes[node_index]
        if node["op"] != "null":
            raise ImporterError(f"{self.path}: layer {owner['name']!r}: its {role} is computed by {node['name']!r} "
                                f"({node['op']}), not stored; unsupported")
        name = node["name"]
        for key in (f"arg:{name}", f"aux:{name}", name):
            if key in self.params:
                return self.params[key]
        raise ImporterError(f"{self.params_path}: no array for {name!r}, the {role} of layer {owner['name']!r} "
                            "in the symbol; params and symbol of different models?")

    def feeds_bn(self, index: int) -> bool:
        users = self.consumers.get(index, [])
        return len(users) == 1 and self.nodes[users[0]]["op"] == "BatchNorm"


def read_checkpoint(params_path: Path, symbol_path: Path, input_std: Optional[float] = None) -> SourceModel:
    params = read_params(params_path)
    graph = _Graph(symbol_path, params, params_path)
    nodes = graph.nodes
    layers: List[Layer] = []
    affine: Dict[int, Tuple[float, float]] = {}  # node -> (a, b): its value is a * pixels + b
    input_scale: Optional[float] = None
    adds, passthrough, used_params = 0, [], set()
    for k in sorted(graph.used):
        node = nodes[k]
        op, name, attrs, inputs = node["op"], node["name"], _attrs(node), node["inputs"]
        if op == "null":
            if not any(f"{p}{name}" in params for p in ("arg:", "aux:", "")):
                affine[k] = (1.0, 0.0)  # the data input
            continue
        if op in SCALAR_OPS:
            if not inputs or inputs[0] not in affine:
                raise ImporterError(f"{symbol_path}: layer {name!r} ({op}) acts on activations, not on the input; "
                                    "the zoo's architectures have no such layer")
            a, b = affine[inputs[0]]
            s = float(attrs.get("scalar", "nan"))
            a, b = {"_minus_scalar": (a, b - s), "_plus_scalar": (a, b + s),
                    "_mul_scalar": (a * s, b * s), "_div_scalar": (a / s, b / s)}[op]
            affine[k] = (a, b)
            continue
        data = inputs[0] if inputs else None
        if data in affine and affine[data] != (1.0, 0.0):
            a, b = affine[data]
            input_scale = centred_scale(-b / a, a, f"{symbol_path}: layer {name!r}")
        elif data in affine and layers:
            raise ImporterError(f"{symbol_path}: layer {name!r} ({op}) reads the raw input but is not the first layer")
        if op == "Convolution":
            if attrs.get("layout", "NCHW") != "NCHW" or len(_ints(attrs.get("kernel", ""))) != 2:
                raise ImporterError(f"{symbol_path}: layer {name!r}: only 2-D NCHW convolutions are supported "
                                    f"(kernel {attrs.get('kernel')}, layout {attrs.get('layout', 'NCHW')})")
            weight = graph.param(inputs[1], node, "weight")
            tensors = {"weight": weight}
            if not _bool(attrs.get("no_bias", "False")):
                if len(inputs) < 3:
                    raise ImporterError(f"{symbol_path}: layer {name!r} has a bias but the symbol gives none")
                tensors["bias"] = graph.param(inputs[2], node, "bias")
            used_params.update(nodes[i]["name"] for i in inputs[1:])
            kernel = _ints(attrs["kernel"])
            if weight.ndim != 4 or tuple(weight.shape[2:]) != kernel or weight.shape[0] != int(attrs.get("num_filter", weight.shape[0])):
                raise ImporterError(f"{params_path}: layer {name!r}: weight {weight.shape} disagrees with the symbol "
                                    f"(num_filter {attrs.get('num_filter')}, kernel {kernel})")
            layer_attrs = {"stride": _ints(attrs.get("stride", "(1, 1)")) or (1, 1),
                           "padding": _ints(attrs.get("pad", "(0, 0)")) or (0, 0),
                           "groups": int(attrs.get("num_group", 1)),
                           "dilation": _ints(attrs.get("dilate", "(1, 1)")) or (1, 1)}
            layers.append(Layer("conv", name, op, tensors, layer_attrs, feeds_bn=graph.feeds_bn(k)))
        elif op == "BatchNorm":
            if int(attrs.get("axis", 1)) != 1:
                raise ImporterError(f"{symbol_path}: layer {name!r}: BatchNorm over axis {attrs['axis']} unsupported")
            roles = ("weight", "bias", "running_mean", "running_var")
            tensors = {role: graph.param(i, node, role) for role, i in zip(roles, inputs[1:5])}
            used_params.update(nodes[i]["name"] for i in inputs[1:5])
            layer_attrs = {"eps": float(attrs.get("eps", BN_DEFAULTS["eps"])),
                           "fix_gamma": _bool(attrs.get("fix_gamma", BN_DEFAULTS["fix_gamma"]))}
            layers.append(Layer("bn", name, op, tensors, layer_attrs))
        elif op == "LeakyReLU":
            act = attrs.get("act_type", "leaky")
            if act != "prelu":
                raise ImporterError(f"{symbol_path}: layer {name!r} is LeakyReLU act_type={act!r}; the zoo's "
                                    "architectures use PReLU only")
            layers.append(Layer("prelu", name, f"LeakyReLU({act})", {"weight": graph.param(inputs[1], node, "gamma")}))
            used_params.add(nodes[inputs[1]]["name"])
        elif op == "FullyConnected":
            tensors = {"weight": graph.param(inputs[1], node, "weight")}
            if not _bool(attrs.get("no_bias", "False")):
                tensors["bias"] = graph.param(inputs[2], node, "bias")
            used_params.update(nodes[i]["name"] for i in inputs[1:])
            weight = tensors["weight"]
            if weight.ndim != 2:
                raise ImporterError(f"{params_path}: layer {name!r}: FullyConnected weight of shape {weight.shape}")
            layers.append(Layer("linear", name, op, tensors, feeds_bn=graph.feeds_bn(k)))
        elif op in ADDS:
            if len(inputs) != 2:
                raise ImporterError(f"{symbol_path}: layer {name!r} ({op}) sums {len(inputs)} inputs; "
                                    "the zoo's residual blocks add two")
            adds += 1
        elif op in PASSTHROUGH:
            passthrough.append(op)
        else:
            raise ImporterError(f"{symbol_path}: layer {name!r} is a {op} ({', '.join(f'{a}={v}' for a, v in attrs.items())}); "
                                "the zoo's architectures have no such layer (unknown layer or wrong file)")
    unused = sorted(n.split(":", 1)[-1] for n in params if n.split(":", 1)[-1] not in used_params)
    head = nodes[graph.head]
    notes = ["Channel order: RGB, as InsightFace feeds its MXNet models (the file does not record it)."]
    if graph.cut:
        notes.append(f"The symbol's output is {graph.cut!r}; the embedding is taken at 'fc1', as InsightFace does.")
    if unused:
        notes.append(f"{len(unused)} array(s) of the .params file are not used by the graph's output "
                     f"(training-only layers such as the classifier), e.g. {unused[:3]}.")
    source = SourceModel(
        format="mxnet", files=[params_path, symbol_path], layers=layers, input_scale=input_scale,
        residual_adds=adds, notes=notes,
        read={"arrays": len(params), "graph_nodes": len(nodes), "output_node": head["name"],
              "mxnet_version": _version(json.loads(symbol_path.read_text())),
              "skipped_ops": sorted(set(passthrough))})
    std = 128.0 if input_std is None else float(input_std)
    source.reference = lambda images, size: _run_graph(graph, centre_crop(images, size), input_scale, std)
    source.reference_name = f"{symbol_path.name} run op by op with torch (no MXNet)"
    return source


def _run_graph(graph: _Graph, images: np.ndarray, input_scale: Optional[float], std: float) -> np.ndarray:
    """The symbol's forward pass, op by op with torch.nn.functional, straight from its names."""
    import torch
    import torch.nn.functional as F

    x = torch.from_numpy(np.asarray(images, np.float32))
    # the graph's data input: raw RGB pixels when it normalises inside, else what its caller feeds
    data = x * 128.0 + 127.5 if input_scale is not None else x * (128.0 / std)
    values: Dict[int, Any] = {}

    def p(index: int, owner) -> torch.Tensor:
        return torch.from_numpy(graph.param(index, owner, "parameter").copy())

    for k in sorted(graph.used):
        node = graph.nodes[k]
        op, attrs, inputs = node["op"], _attrs(node), node["inputs"]
        if op == "null":
            if not any(f"{q}{node['name']}" in graph.params for q in ("arg:", "aux:", "")):
                values[k] = data
            continue
        arg = values.get(inputs[0]) if inputs else None
        if op in SCALAR_OPS:
            s = float(attrs["scalar"])
            values[k] = {"_minus_scalar": arg - s, "_plus_scalar": arg + s, "_mul_scalar": arg * s,
                         "_div_scalar": arg / s}[op]
        elif op == "Convolution":
            bias = None if _bool(attrs.get("no_bias", "False")) else p(inputs[2], node)
            values[k] = F.conv2d(arg, p(inputs[1], node), bias, _ints(attrs.get("stride", "(1,1)")) or 1,
                                 _ints(attrs.get("pad", "(0,0)")) or 0, _ints(attrs.get("dilate", "(1,1)")) or 1,
                                 int(attrs.get("num_group", 1)))
        elif op == "BatchNorm":
            gamma, beta, mean, var = (p(i, node) for i in inputs[1:5])
            if _bool(attrs.get("fix_gamma", True)):
                gamma = torch.ones_like(gamma)
            values[k] = F.batch_norm(arg, mean, var, gamma, beta, False, 0.0, float(attrs.get("eps", 1e-3)))
        elif op == "LeakyReLU":
            values[k] = F.prelu(arg, p(inputs[1], node))
        elif op == "FullyConnected":
            bias = None if _bool(attrs.get("no_bias", "False")) else p(inputs[2], node)
            values[k] = F.linear(arg.flatten(1), p(inputs[1], node), bias)
        elif op in ADDS:
            values[k] = values[inputs[0]] + values[inputs[1]]
        elif op in ("Flatten", "flatten"):
            values[k] = arg.flatten(1)
        else:  # passthrough
            values[k] = arg
    return values[graph.head].numpy()


def _version(symbol: Dict[str, Any]) -> Optional[str]:
    """MXNet writes its version as ["int", major * 10000 + minor * 100 + patch]."""
    value = (symbol.get("attrs") or {}).get("mxnet_version")
    try:
        number = int(value[1])
    except (TypeError, ValueError, IndexError):
        return None
    return f"{number // 10000}.{number // 100 % 100}.{number % 100}"


@register
class MXNetFormat(SourceFormat):
    name = "mxnet"
    description = "InsightFace MXNet: PREFIX-NNNN.params + PREFIX-symbol.json (a folder or the .params file)"

    def detect(self, path: Path) -> Optional[List[Path]]:
        if path.is_dir():
            params = sorted(path.glob("*-[0-9][0-9][0-9][0-9].params"))
            if not params:
                return None
            if len(params) > 1:
                raise ImporterError(f"{path}: holds {len(params)} MXNet checkpoints ({', '.join(p.name for p in params)}); "
                                    "name the .params file to import")
            path = params[0]
        elif path.name.endswith("-symbol.json"):
            prefix = path.name[:-len("-symbol.json")]
            params = sorted(path.parent.glob(f"{prefix}-[0-9][0-9][0-9][0-9].params"))
            if len(params) != 1:
                raise ImporterError(f"{path}: {'no' if not params else len(params)} {prefix}-NNNN.params beside it; "
                                    "name the .params file to import")
            path = params[0]
        if path.suffix != ".params":
            return None
        match = PARAMS_NAME.match(path.name)
        prefix = match.group("prefix") if match else path.stem.rsplit("-", 1)[0]
        symbol = path.with_name(f"{prefix}-symbol.json")
        if not path.is_file():
            raise ImporterError(f"{path}: no such file")
        if not symbol.is_file():
            raise ImporterError(f"{path}: an MXNet .params file needs its graph, {symbol.name}, beside it "
                                "(the layer order and BatchNorm settings are only in the symbol)")
        return [path, symbol]

    def read(self, files: List[Path], input_std: Optional[float] = None) -> SourceModel:
        return read_checkpoint(files[0], files[1], input_std)
