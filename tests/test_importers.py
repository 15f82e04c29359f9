"""Importers: InsightFace MXNet, safetensors state dicts and ONNX graphs -> zoo checkpoints.

The two real pretrained MobileFaceNets of ../shared/pretrained are imported and evaluated on
real LFW faces; ONNX exports of the zoo's own ir50 and mobilefacenet come back with equal
embeddings; truncated, mismatched and wrong-architecture sources fail naming the file and
the layer.
"""
from __future__ import annotations

import json
import os
import struct
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

import zoo
from faces import lfw_faces, lfw_identities
from zoo.importers import ImporterError, import_checkpoint, import_model
from zoo.importers.mxnet import read_params

PRETRAINED = Path(__file__).resolve().parents[2] / "shared" / "pretrained"
Y1 = PRETRAINED / "insightface-mobilefacenet-y1"
CASIA = PRETRAINED / "casia-mobilefacenet-112x96" / "model.safetensors"
Y1_SHA256 = {"model-0000.params": "b151f97e392e68cb540fb9710a91a574a4187d491eeda77d1c1799ae6dc3b82b",
             "model-symbol.json": "967a17dd970632480609caac8b0a809f4784f1caa333a1d801365f7d34517e55"}
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}
Y1_LICENCE = "InsightFace: pretrained models for non-commercial research only; MS-Celeb-1M is research-only"


@pytest.fixture(scope="module")
def y1_folder(tmp_path_factory) -> Path:
    return import_checkpoint(Y1, "mobilefacenet", tmp_path_factory.mktemp("zoo") / "insightface-y1",
                             licence=Y1_LICENCE)


@pytest.fixture(scope="module")
def casia_folder(tmp_path_factory) -> Path:
    return import_checkpoint(CASIA, "mobilefacenet", tmp_path_factory.mktemp("zoo") / "casia-112x96")


def randomise_statistics(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """BN statistics and PReLU slopes away from their initial values, so folding matters."""
    generator = torch.Generator().manual_seed(seed)
    for module in model.modules():
        if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
            n = module.num_features
            module.running_mean.copy_(torch.randn(n, generator=generator) * 0.1)
            module.running_var.copy_(torch.rand(n, generator=generator) * 1.5 + 0.5)
            module.weight.data.copy_(torch.rand(n, generator=generator) + 0.5)
            module.bias.data.copy_(torch.randn(n, generator=generator) * 0.1)
        elif isinstance(module, torch.nn.PReLU):
            module.weight.data.copy_(torch.rand(module.weight.shape, generator=generator) * 0.5)
    return model.eval()


def export_onnx(model: torch.nn.Module, path: Path, batch: int = 1) -> Path:
    """`torch.onnx.export` in eval mode; torch 2.14's TorchScript exporter (`dynamo=False`) needs no
    onnxscript, and folds every BatchNorm that follows a conv into that conv."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model.eval(), torch.zeros(batch, 3, 112, 112), str(path), dynamo=False,
                          input_names=["input.1"], output_names=["embedding"], dynamic_axes={"input.1": {0: "n"}})
    return path


# --------------------------------------------------------------------------- MXNet (InsightFace y1)


@pytest.mark.fast
def test_mxnet_params_file_reads_without_mxnet():
    arrays = read_params(Y1 / "model-0000.params")
    assert len(arrays) == 284
    assert arrays["arg:conv_1_conv2d_weight"].shape == (64, 3, 3, 3)
    assert arrays["aux:fc1_moving_var"].shape == (128,)
    assert arrays["arg:fc1_weight"].shape == (128, 512)
    assert all(a.dtype == np.float32 for a in arrays.values())
    assert sum(n.startswith("aux:") for n in arrays) == 100  # 50 BN layers x (mean, var)


def test_y1_import_reads_architecture_from_the_source(y1_folder):
    config = zoo.read_config(y1_folder)
    arch = config["architecture"]
    assert arch["name"] == "mobilefacenet" and arch["embedding_dim"] == 128 and arch["input_size"] == [112, 112]
    # 49 BNs without an eps attribute take MXNet's default 1e-3; fc1 states 2e-5
    assert arch["bn_eps"] == {"*": 1e-3, "backbone.head.1.bn": 2e-5}
    imported = config["imported_from"]
    assert imported["format"] == "mxnet"
    assert {Path(f["path"]).name: f["sha256"] for f in imported["files"]} == Y1_SHA256
    assert imported["read"]["verification"]["relative_max_diff"] < 1e-5
    assert imported["read"]["residual_adds"] == 12 and imported["licence"] == Y1_LICENCE
    model = zoo.load(y1_folder)
    assert model.backbone.head[1].bn.eps == 2e-5 and model.backbone.stem[0][1].eps == 1e-3
    assert torch.equal(model.backbone.head[1].bn.weight, torch.ones(128))  # fix_gamma=True
    card = (y1_folder / "README.md").read_text()
    for fact in (*Y1_SHA256.values(), "128-d", "112x112", "0.001", "2e-05", Y1_LICENCE, str(Y1)):
        assert fact in card


def test_y1_embeds_the_same_person_closer_than_different_people(y1_folder):
    images, labels = lfw_identities(people=8, per_person=3)
    faces = (torch.from_numpy(images).permute(0, 3, 1, 2).float() - 127.5) / 128
    embeddings = zoo.load(y1_folder).embed(faces).numpy()
    assert embeddings.shape == (24, 128)
    scores = embeddings @ embeddings.T
    same = (labels[:, None] == labels[None]) & ~np.eye(len(labels), dtype=bool)
    different = labels[:, None] != labels[None]
    assert scores[same].mean() > scores[different].mean() + 0.3, (scores[same].mean(), scores[different].mean())


def _lfw_view1(model, cache, max_pairs=None):
    from zoo.data import load_protocol, parse_degradation
    from zoo.evaluate import evaluate_protocol

    pairs = load_protocol("lfw-view1")
    if max_pairs:
        pairs = pairs.subset(max_pairs)
    result = evaluate_protocol(model, pairs, [parse_degradation("blur0")], cache, progress=False)
    return result, result["conditions"]["blur0"]


@pytest.fixture(scope="module")
def yunet_cache(tmp_path_factory):
    from zoo.data import CropCache

    return CropCache(tmp_path_factory.mktemp("crop-cache-yunet"), "yunet")


@pytest.mark.timeout(900)
@pytest.mark.parametrize("aligner", ["dlib", "yunet"])
def test_y1_lfw_view1_accuracy(y1_folder, aligner, request):
    """LFW View 1 test pairs (1,000), no flip: >= 98.5% (MS1M holds many LFW identities: not disjoint)."""
    cache = request.getfixturevalue("crop_cache" if aligner == "dlib" else "yunet_cache")
    result, clean = _lfw_view1(zoo.load(y1_folder), cache)
    assert clean["pairs"] == 1000 and result["pairs_skipped"] == 0
    assert clean["accuracy"] >= 0.985, f"{aligner}: {clean['accuracy']:.4f}"


def write_insightface_mxnet(model, folder: Path, fc1_gamma: float = 2.0) -> Path:
    """A zoo IR-ResNet written as InsightFace's MXNet fresnet (`LResNetxxE-IR`) would save it:
    symbol JSON with its names and wiring, NDArray-list params with arg:/aux: names."""
    nodes, arrays = [], {}

    def node(op, name, inputs=(), **attrs):
        nodes.append({"op": op, "name": name, "attrs": {k: str(v) for k, v in attrs.items()},
                      "inputs": [[i, 0, 0] for i in inputs]})
        return len(nodes) - 1

    def weights(name, tensors, aux=("moving_mean", "moving_var")):
        ids = []
        for role, value in tensors.items():
            ids.append(node("null", f"{name}_{role}"))
            arrays[f"{'aux' if role in aux else 'arg'}:{name}_{role}"] = value.detach().numpy().astype(np.float32)
        return ids

    def conv(x, name, m):
        return node("Convolution", name, [x, *weights(name, {"weight": m.weight})], kernel=tuple(m.kernel_size),
                    stride=tuple(m.stride), pad=tuple(m.padding), num_filter=m.out_channels, num_group=m.groups,
                    no_bias=True)

    def bn(x, name, m, gamma=None, fix_gamma=False):
        tensors = {"gamma": m.weight if gamma is None else gamma, "beta": m.bias, "moving_mean": m.running_mean,
                   "moving_var": m.running_var}
        return node("BatchNorm", name, [x, *weights(name, tensors)], eps=m.eps, fix_gamma=fix_gamma, momentum=0.9)

    def prelu(x, name, m):
        return node("LeakyReLU", name, [x, *weights(name, {"gamma": m.weight})], act_type="prelu")

    net = model.backbone
    x = node("_mul_scalar", "_mulscalar0", [node("_minus_scalar", "_minusscalar0", [node("null", "data")], scalar=127.5)],
             scalar=0.0078125)
    x = prelu(bn(conv(x, "conv0", net.stem[0]), "bn0", net.stem[1]), "relu0", net.stem[2])
    for k, block in enumerate(net.blocks):
        r, name = block.residual, f"stage{net.block_stage[k] + 1}_unit{k + 1}"
        y = bn(conv(bn(x, f"{name}_bn1", r[0]), f"{name}_conv1", r[1]), f"{name}_bn2", r[2])
        y = bn(conv(prelu(y, f"{name}_relu1", r[3]), f"{name}_conv2", r[4]), f"{name}_bn3", r[5])
        shortcut = x if isinstance(block.shortcut, torch.nn.Identity) else bn(
            conv(x, f"{name}_conv1sc", block.shortcut[0]), f"{name}_sc", block.shortcut[1])
        x = node("elemwise_add", f"_plus{k}", [y, shortcut])
    head = net.head
    x = node("Dropout", "dropout0", [bn(x, "bn1", head.reduce[0])], p=0.4)
    x = node("FullyConnected", "pre_fc1", [x, node("null", "fc1_weight"), node("null", "pre_fc1_bias")],
             num_hidden=head.fc.out_features)
    arrays["arg:fc1_weight"], arrays["arg:pre_fc1_bias"] = head.fc.weight.detach().numpy(), head.fc.bias.detach().numpy()
    x = bn(x, "fc1", head.bn, gamma=torch.full_like(head.bn.weight, fc1_gamma), fix_gamma=True)
    x = node("FullyConnected", "fc7", [x, node("null", "fc7_weight")], num_hidden=10, no_bias=True)
    arrays["arg:fc7_weight"] = np.zeros((10, head.fc.out_features), np.float32)
    node("SoftmaxOutput", "softmax", [x, node("null", "softmax_label")])  # a training symbol: cut at fc1
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "model-symbol.json").write_text(json.dumps({"nodes": nodes, "heads": [[len(nodes) - 1, 0, 0]],
                                                          "attrs": {"mxnet_version": ["int", 10600]}}))
    chunks = [struct.pack("<QQQ", 0x112, 0, len(arrays))]
    for value in arrays.values():
        value = np.ascontiguousarray(value, np.float32)
        chunks.append(struct.pack(f"<IiI{value.ndim}qiii", 0xF993FAC9, 0, value.ndim, *value.shape, 1, 0, 0))
        chunks.append(value.tobytes())
    chunks.append(struct.pack("<Q", len(arrays)))
    for name in arrays:
        chunks.append(struct.pack("<Q", len(name.encode())) + name.encode())
    (folder / "model-0000.params").write_bytes(b"".join(chunks))
    return folder


def test_insightface_mxnet_iresnet_imports_exactly(tmp_path):
    torch.manual_seed(0)
    model = randomise_statistics(zoo.build("ir18", bn_eps={"*": 2e-5}))
    model.backbone.head.bn.weight.data.fill_(1.0)  # MXNet's fix_gamma=True: the stored gamma (2.0) is ignored
    folder = write_insightface_mxnet(model, tmp_path / "r18")
    imported, source, record = import_model(folder, "ir18")
    assert imported.config.bn_eps == {"*": 2e-5} and imported.config.embedding_dim == 512
    assert record["residual_adds"] == 8 and record["verification"]["relative_max_diff"] < 1e-5
    assert any("'softmax'" in note for note in source.notes)
    faces = lfw_faces(2)
    assert torch.allclose(imported(faces), model(faces), atol=1e-5, rtol=1e-5)


# --------------------------------------------------------------------------- safetensors state dicts


@pytest.mark.fast
def test_casia_import_reads_its_112x96_crop(casia_folder):
    arch = zoo.read_config(casia_folder)["architecture"]
    assert arch["embedding_dim"] == 128 and arch["input_size"] == [112, 96]
    assert arch["bn_eps"] == {"*": 1e-5}  # torch BN (num_batches_tracked), which stores no eps
    card = (casia_folder / "README.md").read_text()
    assert "112x96" in card and "unknown: check the source's licence" in card
    assert "Not checked against the source's own forward pass" in card


@pytest.mark.timeout(900)
def test_casia_accuracy_is_sensible_on_lfw_pairs(casia_folder, crop_cache):
    result, clean = _lfw_view1(zoo.load(casia_folder), crop_cache, max_pairs=300)
    assert clean["pairs"] == 300
    assert clean["accuracy"] >= 0.95, clean["accuracy"]


def _insightface_iresnet_names(state):
    """FaceScope IR-ResNet keys -> InsightFace arcface_torch iresnet.py keys."""
    stage_of, renamed = {}, {}
    blocks = sorted({int(k.split(".")[2]) for k in state if k.startswith("backbone.blocks.")})
    channels = [state[f"backbone.blocks.{b}.residual.1.weight"].shape[0] for b in blocks]
    stage, index = 0, 0
    for b, c in zip(blocks, channels):
        if b and c != channels[b - 1]:
            stage, index = stage + 1, 0
        stage_of[b] = (stage + 1, index)
        index += 1
    inner = {"residual.0": "bn1", "residual.1": "conv1", "residual.2": "bn2", "residual.3": "prelu",
             "residual.4": "conv2", "residual.5": "bn3", "shortcut.0": "downsample.0", "shortcut.1": "downsample.1"}
    top = {"backbone.stem.0": "conv1", "backbone.stem.1": "bn1", "backbone.stem.2": "prelu",
           "backbone.head.reduce.0": "bn2", "backbone.head.fc": "fc", "backbone.head.bn": "features"}
    for key, value in state.items():
        prefix, leaf = key.rsplit(".", 1)
        if prefix in top:
            renamed[f"{top[prefix]}.{leaf}"] = value
        else:
            parts = prefix.split(".")
            layer, unit = stage_of[int(parts[2])]
            renamed[f"layer{layer}.{unit}.{inner['.'.join(parts[3:])]}.{leaf}"] = value
    return renamed


@pytest.mark.parametrize("layout", ["insightface-iresnet", "facescope"])
def test_state_dict_layouts_import_exactly(tmp_path, layout):
    torch.manual_seed(0)
    model = randomise_statistics(zoo.build("ir18"))
    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    if layout == "insightface-iresnet":
        state = {f"module.{k}": v for k, v in _insightface_iresnet_names(state).items()}  # DataParallel prefix
    save_file(state, str(tmp_path / "backbone.safetensors"))
    imported, source, record = import_model(tmp_path / "backbone.safetensors", "ir18")
    assert source.read["key_layout"] == layout
    faces = lfw_faces(2)
    assert torch.allclose(imported.embed(faces), model.embed(faces), atol=1e-6)


# --------------------------------------------------------------------------- ONNX


@pytest.mark.timeout(900)
@pytest.mark.parametrize("arch, options", [
    ("ir50", {}),
    ("mobilefacenet", {"embedding_dim": 128}),
    ("mobilefacenet", {"embedding_dim": 256, "input_size": (112, 96), "bn_eps": {"*": 1e-3}}),
], ids=["ir50", "mobilefacenet", "mobilefacenet-112x96-eps1e-3"])
def test_onnx_export_of_zoo_models_imports_back_equal(tmp_path, arch, options):
    torch.manual_seed(0)
    model = randomise_statistics(zoo.build(arch, **options))
    path = export_onnx(model, tmp_path / f"{arch}.onnx")
    out = import_checkpoint(path, arch, tmp_path / "imported")
    imported = zoo.load(out)
    config = imported.config
    assert config.embedding_dim == model.config.embedding_dim and config.input_size == model.config.input_size
    assert config.bn_eps == {"*": options.get("bn_eps", {}).get("*", 1e-5)}
    faces = lfw_faces(2)
    assert torch.allclose(imported.embed(faces), model.embed(faces), atol=1e-5)
    assert torch.allclose(imported(faces), model(faces), atol=1e-5, rtol=1e-5)
    read = zoo.read_config(out)["imported_from"]["read"]
    assert read["bn_folded_into_conv"] > 0  # the exporter folded conv+BN; the importer restored them
    assert read["verification"]["reference"] == "the ONNX graph run by onnxruntime"


class _PixelInput(torch.nn.Module):
    """A graph taking raw pixels and normalising inside, like InsightFace's MXNet models."""

    def __init__(self, model, std):
        super().__init__()
        self.model, self.std = model, std

    def forward(self, pixels):
        return self.model((pixels - 127.5) / self.std)


def test_onnx_input_normalisation_inside_or_given(tmp_path):
    torch.manual_seed(0)
    model = randomise_statistics(zoo.build("mobilefacenet", embedding_dim=128))
    faces = lfw_faces(2)
    # in the graph, InsightFace's (x - 127.5) / 127.5: the first conv is rescaled to take the zoo's input
    inside = export_onnx(_PixelInput(model, 127.5), tmp_path / "inside.onnx")
    imported, _, record = import_model(inside, "mobilefacenet")
    assert record["input_normalisation"].startswith("inside the graph") and record["first_conv_scaled_by"] == pytest.approx(128 / 127.5)
    assert torch.allclose(imported.embed(faces), model.embed(faces * 128 / 127.5), atol=1e-5)
    # left to the caller: --input-std says what the caller feeds
    outside = export_onnx(model, tmp_path / "outside.onnx")
    imported, _, record = import_model(outside, "mobilefacenet", input_std=127.5)
    assert torch.allclose(imported.embed(faces), model.embed(faces * 128 / 127.5), atol=1e-5)
    with pytest.raises(ImporterError, match="normalises its input itself"):
        import_model(inside, "mobilefacenet", input_std=127.5)


# --------------------------------------------------------------------------- errors
