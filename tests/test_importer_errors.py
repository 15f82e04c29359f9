"""Importers refuse what they cannot read exactly, naming the file, the layer and the zoo key:
truncated files, missing symbols, a wrong --arch, mismatched shapes, unknown layers, and wiring
only the source's own forward pass can catch."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.numpy import load_file as load_numpy, save_file as save_numpy

import zoo
from test_importers import CASIA, ENV, Y1, Y1_LICENCE, export_onnx
from zoo.importers import ImporterError, detect, import_checkpoint

def _truncate(source: Path, target: Path, fraction: float = 0.6) -> Path:
    data = source.read_bytes()
    target.write_bytes(data[:int(len(data) * fraction)])
    return target


@pytest.mark.fast
def test_truncated_params_fail_naming_the_file(tmp_path):
    shutil.copy(Y1 / "model-symbol.json", tmp_path / "model-symbol.json")
    params = _truncate(Y1 / "model-0000.params", tmp_path / "model-0000.params")
    with pytest.raises(ImporterError, match=r"model-0000\.params: truncated or corrupt: the data of array \d+ of 284"):
        import_checkpoint(tmp_path, "mobilefacenet", tmp_path / "out")
    assert not (tmp_path / "out").exists()
    params.write_bytes(b"\x00" * 64)
    with pytest.raises(ImporterError, match="not an MXNet NDArray file"):
        import_checkpoint(params, "mobilefacenet", tmp_path / "out")
    (tmp_path / "model-symbol.json").write_text((Y1 / "model-symbol.json").read_text()[:5000])
    shutil.copy(Y1 / "model-0000.params", params)
    with pytest.raises(ImporterError, match=r"model-symbol\.json: not valid JSON"):
        import_checkpoint(params, "mobilefacenet", tmp_path / "out")


@pytest.mark.fast
def test_params_without_symbol_fail(tmp_path):
    shutil.copy(Y1 / "model-0000.params", tmp_path / "model-0000.params")
    with pytest.raises(ImporterError, match=r"needs its graph, model-symbol\.json"):
        import_checkpoint(tmp_path / "model-0000.params", "mobilefacenet", tmp_path / "out")


@pytest.mark.fast
def test_truncated_safetensors_and_onnx_fail_naming_the_file(tmp_path):
    path = _truncate(CASIA, tmp_path / "model.safetensors")
    with pytest.raises(ImporterError, match=r"model\.safetensors: not a readable safetensors file, truncated or corrupt"):
        import_checkpoint(path, "mobilefacenet", tmp_path / "out")
    onnx_file = export_onnx(zoo.build("mobilefacenet", width=0.25), tmp_path / "full.onnx")
    truncated = _truncate(onnx_file, tmp_path / "cut.onnx")
    with pytest.raises(ImporterError, match=r"cut\.onnx: not a readable ONNX model, truncated or corrupt"):
        import_checkpoint(truncated, "mobilefacenet", tmp_path / "out")
    assert not (tmp_path / "out").exists()


@pytest.mark.fast
def test_wrong_arch_names_the_layer(tmp_path):
    with pytest.raises(ImporterError, match=r"'conv_1_conv2d'.*stride \(2, 2\) does not fit ir50 backbone\.stem\.0\.weight"):
        import_checkpoint(Y1, "ir50", tmp_path / "out")
    with pytest.raises(ImporterError, match=r"'dw_conv1\.conv'.*ir18 backbone\.blocks\.0\.residual\.0\.weight"):
        import_checkpoint(CASIA, "ir18", tmp_path / "out")
    with pytest.raises(ImporterError, match="importers fill a plain backbone"):
        import_checkpoint(Y1, "scan-mobilefacenet", tmp_path / "out")
    with pytest.raises(ImporterError, match="unknown model 'resnet50'"):
        import_checkpoint(Y1, "resnet50", tmp_path / "out")
    assert not (tmp_path / "out").exists()


@pytest.mark.fast
def test_mismatched_shape_names_source_layer_and_zoo_key(tmp_path):
    state = load_numpy(str(CASIA))
    state["blocks.5.conv.3.weight"] = np.zeros((256, 1, 5, 5), np.float32)
    save_numpy(state, str(tmp_path / "model.safetensors"))
    with pytest.raises(ImporterError, match=r"'blocks\.5\.conv\.3'.*\(256, 1, 5, 5\).*backbone\.blocks\.5\.residual\.1\.0\.weight.*\(256, 1, 3, 3\)"):
        import_checkpoint(tmp_path / "model.safetensors", "mobilefacenet", tmp_path / "out")
    state = load_numpy(str(CASIA))
    del state["linear1.bn.running_var"]
    save_numpy(state, str(tmp_path / "model.safetensors"))
    with pytest.raises(ImporterError, match=r"'linear1\.bn'.*no running_var in the source for mobilefacenet backbone\.head\.1\.bn"):
        import_checkpoint(tmp_path / "model.safetensors", "mobilefacenet", tmp_path / "out")


@pytest.mark.fast
def test_unknown_layers_are_named(tmp_path):
    symbol = json.loads((Y1 / "model-symbol.json").read_text())
    node = next(n for n in symbol["nodes"] if n["name"] == "res_4_block2_conv_dw_relu")
    node["attrs"]["act_type"] = "leaky"
    shutil.copy(Y1 / "model-0000.params", tmp_path / "model-0000.params")
    (tmp_path / "model-symbol.json").write_text(json.dumps(symbol))
    with pytest.raises(ImporterError, match="'res_4_block2_conv_dw_relu' is LeakyReLU act_type='leaky'"):
        import_checkpoint(tmp_path, "mobilefacenet", tmp_path / "out")
    node["op"] = "Pooling"
    (tmp_path / "model-symbol.json").write_text(json.dumps(symbol))
    with pytest.raises(ImporterError, match="'res_4_block2_conv_dw_relu' is a Pooling"):
        import_checkpoint(tmp_path, "mobilefacenet", tmp_path / "out")
    model = zoo.build("mobilefacenet", width=0.25)
    model.backbone.stem[1][2] = torch.nn.ReLU()
    with pytest.raises(ImporterError, match=r"node '/backbone/stem/stem\.1/stem\.1\.2/Relu' is a Relu"):
        import_checkpoint(export_onnx(model, tmp_path / "relu.onnx"), "mobilefacenet", tmp_path / "out")
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(ImporterError, match="cannot tell which format"):
        detect(tmp_path / "notes.txt")


@pytest.mark.fast
def test_wiring_the_shapes_cannot_see_is_caught_by_the_source_itself(tmp_path):
    """Same layers, different residual wiring: shapes match, the run-the-source check does not."""
    symbol = json.loads((Y1 / "model-symbol.json").read_text())
    names = [n["name"] for n in symbol["nodes"]]
    plus = symbol["nodes"][names.index("_plus1")]
    plus["inputs"][1] = [names.index("dconv_23_conv_proj_batchnorm"), 0, 0]  # skip from two blocks back
    shutil.copy(Y1 / "model-0000.params", tmp_path / "model-0000.params")
    (tmp_path / "model-symbol.json").write_text(json.dumps(symbol))
    with pytest.raises(ImporterError, match="does not compute what the source does"):
        import_checkpoint(tmp_path, "mobilefacenet", tmp_path / "out")


@pytest.mark.fast
def test_cli_imports_and_explains_errors(tmp_path):
    out = tmp_path / "y1"
    ok = subprocess.run([sys.executable, "-m", "zoo", "import", str(Y1 / "model-0000.params"), "--arch",
                         "mobilefacenet", "--out", str(out), "--name", "InsightFace y1", "--licence", Y1_LICENCE],
                        capture_output=True, text=True, env=ENV, cwd=Path(__file__).parents[1])
    assert ok.returncode == 0, ok.stderr
    assert "128-d embedding, input 112x112" in ok.stdout and "checked against" in ok.stdout
    assert (out / "README.md").read_text().count("# InsightFace y1") == 1
    bad = subprocess.run([sys.executable, "-m", "zoo", "import", str(Y1), "--arch", "ir34", "--out",
                          str(tmp_path / "bad")], capture_output=True, text=True,
                         env=ENV, cwd=Path(__file__).parents[1])
    assert bad.returncode == 2 and "error:" in bad.stderr and "conv_1_conv2d" in bad.stderr
    assert not (tmp_path / "bad").exists()
    usage = subprocess.run([sys.executable, "-m", "zoo", "import", "--help"], capture_output=True, text=True,
                           cwd=Path(__file__).parents[1])
    assert "--arch" in usage.stdout and "mxnet" in usage.stdout and "--input-std" in usage.stdout
