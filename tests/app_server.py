"""The app under test: its test zoo, `python app.py` on a free port, and gradio_client helpers
(shared by test_app.py and test_app_browser.py)."""
from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Dict, Iterator, List

import numpy as np
import pytest
import torch
from gradio_client import handle_file
from PIL import Image

import zoo
from zoo import card

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "app" / "examples"
SAME_A, SAME_B = EXAMPLES / "leonardo_dicaprio_1.jpg", EXAMPLES / "leonardo_dicaprio_2.jpg"
OTHER = EXAMPLES / "condoleezza_rice.jpg"
# Mean grey-level gap under which two crops are "the same photo aligned alike". With YuNet a
# copy of SAME_A lands 3.4 (grayscale) to 12.8 (transparent frame) levels from the original's
# crop; another photo of the same person lands 49 away and other people's 51-88.
SAME_ALIGNMENT_TOLERANCE = 16
HUB_REPO = "facescope/hub-copy"
REFERENCE = "mobilefacenet.y1"  # the embedded zoo's imported reference: there for good
EMBEDDED_ZOO = Path(zoo.__file__).resolve().parent / "checkpoints"
ENDPOINTS = ("/detect_faces", "/verify", "/blur_curve", "/explain", "/occlusion", "/error_browser",
             "/error_browser_open", "/embeddings", "/zoo_list", "/model_card", "/pull_model", "/compare",
             "/compare_report", "/compare_png", "/verify_png", "/blur_curve_png", "/explain_png", "/occlusion_png",
             "/embeddings_png")
START_TIMEOUT = 600  # seconds: importing torch and gradio on a CPU busy with training is slow


def card_metrics(threshold: float) -> Dict:
    """A card.summarize-shaped record, so the Zoo tab has accuracies to show (made-up numbers)."""
    def condition(amount, accuracy):
        return {"kind": "blur", "amount": amount, "pairs": 1000, "accuracy": accuracy, "accuracy_std": 0.01,
                "auc": accuracy, "tar_at_far": {"0.1": 0.2}, "threshold": threshold}

    return {"evaluated_model": "test", "flip_test": False, "max_pairs": None, "aligner": "test",
            "protocols": {"lfw-view1": {"pairs_total": 1000, "pairs_skipped": 0, "fallback_alignments": 0,
                                        "conditions": {"blur0": condition(0, 0.61), "blur4": condition(4, 0.55)}},
                          "cfp-fp": {"pairs_total": 1000, "pairs_skipped": 0, "fallback_alignments": 0,
                                     "conditions": {"blur0": condition(0, 0.58)}}},
            "threshold": threshold, "threshold_from": "lfw-view1 blur0: made up for the app's tests"}


def make_zoo(folder: Path) -> Path:
    """The reference mobilefacenet.y1 without a threshold (as imported), then untrained small models
    with a card's threshold: a plain one and each method with maps (named in alphabetical order,
    so the app's order - imported, plain, methods - differs from the folders')."""
    folder.mkdir(parents=True, exist_ok=True)
    reference = shutil.copytree(EMBEDDED_ZOO / REFERENCE, folder / REFERENCE)
    config = json.loads((reference / "config.json").read_text())
    for key in ("threshold", "metrics"):  # should the embedded copy be evaluated one day: as imported
        config.pop(key, None)
    (reference / "config.json").write_text(json.dumps(config, indent=2))
    torch.manual_seed(0)
    small = {"width": 0.25, "embedding_dim": 128}
    models = {"arface-mobilefacenet.untrained": zoo.build("arface-mobilefacenet", **small),
              "hpda-mobilefacenet.untrained": zoo.build("hpda-mobilefacenet", hbp_dim=128, **small),
              "mobilefacenet.untrained": zoo.build("mobilefacenet", **small),
              "scan-mobilefacenet.untrained": zoo.build("scan-mobilefacenet", **small).fold(),
              "sranet-mobilefacenet.untrained": zoo.build("sranet-mobilefacenet", **small)}
    for k, (name, model) in enumerate(models.items()):
        metrics = card_metrics(0.2 + 0.1 * k)
        zoo.save(model.eval(), folder / name, card=card.render(model, metrics=metrics, name=name),
                 extra_config=card.extra_config(metrics=metrics))
    return folder


def first_model(zoo_dir: Path) -> str:
    """The model the app lists first (app.models.zoo_order), read from the configs alone."""
    from app.models import ZooEntry, zoo_order

    entries = [ZooEntry(p.name, "local zoo", p, zoo.read_config(p)) for p in sorted(zoo_dir.iterdir())
               if (p / "config.json").is_file()]
    return min(entries, key=zoo_order).name


def zoo_for_tests(tmp_path_factory) -> Path:
    """FACESCOPE_APP_TEST_ZOO when set, else a fresh `make_zoo`."""
    chosen = os.environ.get("FACESCOPE_APP_TEST_ZOO")
    return Path(chosen).resolve() if chosen else make_zoo(tmp_path_factory.mktemp("zoo"))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextlib.contextmanager
def running_app(zoo_dir: Path, scratch: Path, env: Dict[str, str], args: List[str] = (),
                as_a_space: bool = False) -> Iterator[str]:
    """`python app.py` on a free port; yields its URL, stops it afterwards (its log is in `scratch`).
    `as_a_space`: started the way a Hugging Face Space starts it, bare `python app.py` with the
    address, port and zoo in environment variables."""
    port = free_port()
    if not as_a_space and "--runtime" not in args:
        # torch unless a test asks: the default (auto) would move models to onnxruntime mid-test as
        # their exports land, and spend a core exporting (test_app_runtime.py tests both others).
        args = [*args, "--runtime", "torch"]
    log_path = scratch / "app.log"
    environment = {k: v for k, v in os.environ.items() if k != "HF_HUB_OFFLINE"}
    environment.update({"HF_HUB_CACHE": str(scratch / "hf-cache"), "GRADIO_TEMP_DIR": str(scratch / "gradio"),
                        **env})
    if as_a_space:
        environment.update({"GRADIO_SERVER_NAME": "127.0.0.1", "GRADIO_SERVER_PORT": str(port),
                            "FACESCOPE_ZOO": str(zoo_dir)})
        command = [sys.executable, "app.py", *args]
    else:
        command = [sys.executable, str(ROOT / "app.py"), "--host", "127.0.0.1", "--port", str(port),
                   "--zoo", str(zoo_dir), *args]
    with open(log_path, "w") as log:
        process = subprocess.Popen(command, cwd=ROOT, env=environment, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            if process.poll() is not None:
                pytest.fail(f"app.py exited with {process.returncode}:\n{log_path.read_text()[-3000:]}")
            try:
                with urllib.request.urlopen(url, timeout=5) as response:
                    if response.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"app.py did not answer within {START_TIMEOUT} s:\n{log_path.read_text()[-3000:]}")
            time.sleep(1)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()



def verify(client, a, b, models, face_a=1, face_b=1):
    return client.predict(handle_file(a), handle_file(b), face_a, face_b, models, api_name="/verify")


def aligned(client, photo, mode: str = "RGB") -> List[np.ndarray]:
    """The aligned crops of every face the app finds in `photo`, largest first."""
    return [pixels(face["image"], mode) for face in client.predict(handle_file(photo), api_name="/detect_faces")[2]]


def pixels(path, mode: str = "RGB") -> np.ndarray:
    return np.asarray(Image.open(path).convert(mode), dtype=np.float64)


def configs(zoo_dir: Path, names: List[str]) -> Dict[str, Dict]:
    """Each model's config as the app reads it: the checkpoint's config.json, a peer's own."""
    stored = {n: zoo.read_config(zoo_dir / n) for n in names if (zoo_dir / n / "config.json").is_file()}
    return {**stored, **{n: zoo.load(n).checkpoint_config() for n in names if n.startswith("peer:")}}


def expected_threshold(config: Dict):
    """(threshold, calibrated) the app must judge with: the config's own, else the uncalibrated default."""
    from app.models import DEFAULT_THRESHOLD

    threshold = config.get("threshold")
    return (DEFAULT_THRESHOLD, False) if threshold is None else (threshold, True)




def awkward_photos(folder: Path, data_root: Path) -> Dict[str, Path]:
    """Bad and awkward inputs for the app, each a small file in `folder`."""
    upright = Image.open(SAME_A).convert("RGB")
    files = {}

    def path(name):
        files[name.split(".")[0]] = folder / name
        return folder / name

    path("text.jpg").write_text("this is a note, not a photo\n")
    data = SAME_A.read_bytes()
    path("truncated.jpg").write_bytes(data[:len(data) // 2])
    path("empty.jpg").write_bytes(b"")
    huge = Image.new("1", (10_000, 10_000), 1)  # 1 bit per pixel: 12 MB in memory, a few KB as PNG
    huge.paste(0, (4000, 4000, 6000, 6000))
    huge.save(path("huge.png"))
    background = Image.open(data_root / "celeba" / "images" / "000711.jpg").convert("RGB").crop((0, 0, 60, 224))
    background.save(path("background.jpg"), quality=92)
    upright.convert("L").save(path("gray.jpg"), quality=92)
    upright.convert("CMYK").save(path("cmyk.jpg"), quality=92)
    rgba = upright.convert("RGBA")
    alpha = Image.new("L", rgba.size, 0)
    alpha.paste(255, (8, 8, rgba.width - 8, rgba.height - 8))
    rgba.putalpha(alpha)
    rgba.save(path("rgba.png"))
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 degrees clockwise to display": the pixels are stored turned left
    upright.transpose(Image.Transpose.ROTATE_90).save(path("rotated.jpg"), quality=95, exif=exif)
    upright.resize((2400, 2400), Image.BICUBIC).save(path("large.jpg"), quality=90)
    tiles = [upright, Image.open(OTHER).convert("RGB"),
             Image.open(sorted((data_root / "lfw" / "images" / "Jimmy_Carter").glob("*.jpg"))[-1]).convert("RGB")]
    group = Image.new("RGB", (sum(t.width for t in tiles), max(t.height for t in tiles)), "white")
    for k, tile in enumerate(tiles):
        group.paste(tile, (k * tiles[0].width, 0))
    group.save(path("group.jpg"), quality=92)
    return files
