"""The app's model set and launch, without a shared server: thresholds and their fallback, the
zoo's order, hub pulls that cannot reach their hub, broken checkpoints, and starting as a
Hugging Face Space."""
from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch
from gradio_client import Client

import zoo
from zoo import hub
from app_server import (EMBEDDED_ZOO, REFERENCE, ROOT, SAME_A, SAME_B, card_metrics, free_port, running_app, verify,
                        zoo_for_tests)
from hostile import break_checkpoints


@pytest.fixture(scope="module")
def zoo_dir(tmp_path_factory) -> Path:
    return zoo_for_tests(tmp_path_factory)


def test_thresholds_fall_back_visibly():
    """The card's threshold; else the clean evaluation's in its metrics; else the uncalibrated default."""
    from app.models import DEFAULT_THRESHOLD, model_threshold
    from app.tabs.verify import Verdict

    metrics = card_metrics(0.42)
    assert model_threshold({"threshold": 0.4, "metrics": metrics}) == (0.4, metrics["threshold_from"], True)
    bare = {k: v for k, v in metrics.items() if k not in ("threshold", "threshold_from")}
    bare["protocols"] = {"cfp-fp": bare["protocols"]["cfp-fp"], "lfw-view1": bare["protocols"]["lfw-view1"]}
    threshold, source, calibrated = model_threshold({"metrics": bare})  # LFW View 1 clean wins over CFP-FP
    assert threshold == pytest.approx(0.42) and calibrated and source.startswith("lfw-view1 blur0")
    imported = zoo.read_config(EMBEDDED_ZOO / REFERENCE)
    for config in ({}, {key: value for key, value in imported.items() if key not in ("threshold", "metrics")}):
        threshold, source, calibrated = model_threshold(config)
        assert (threshold, calibrated) == (DEFAULT_THRESHOLD, False) and "uncalibrated" in source
    assert Verdict("m", 0.5, 0.3, calibrated=False).text == "same person (uncalibrated threshold)"
    assert Verdict("m", 0.1, 0.3).text == "different people"


def test_zoo_order_reference_then_plain_then_methods():
    from app.models import ZooEntry, zoo_order

    def entry(name, method, imported=False, error=None):
        config = {"architecture": {"method": method}, **({"imported_from": {"format": "mxnet"}} if imported else {})}
        return ZooEntry(name, "local zoo", Path(name), config, error=error)

    entries = [entry("arface-mobilefacenet.fss-ft", "arface"), entry("broken", "plain", error="corrupted"),
               entry("mobilefacenet.fss-ft-npcface", "plain"), entry(REFERENCE, "plain", imported=True),
               entry("scan-mobilefacenet.fss-ft", "scan-folded"), entry("mobilefacenet.fss-ft", "plain")]
    assert [e.name for e in sorted(entries, key=zoo_order)] == [
        REFERENCE, "mobilefacenet.fss-ft", "mobilefacenet.fss-ft-npcface", "arface-mobilefacenet.fss-ft",
        "scan-mobilefacenet.fss-ft", "broken"]


def test_pull_from_an_unreachable_hub(zoo_dir, tmp_path, monkeypatch):
    from huggingface_hub import constants

    from app.service import Service

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hf-cache"))
    closed = f"http://127.0.0.1:{free_port()}"
    service = Service(zoo_dir, hub_endpoint=closed)
    with pytest.raises(hub.HubError, match=f"cannot reach the Hugging Face Hub at {closed}"):
        service.pull("facescope/never-pulled")
    assert "facescope/never-pulled" not in [e.name for e in service.entries()]


def test_broken_checkpoints_in_the_zoo_are_listed_with_why_and_refused(tmp_path):
    """A zoo folder with a wrong-architecture and corrupted checkpoints: the app still serves
    the good model, shows why each other one failed, and names the failure when one is asked for."""
    from app.errors import InputError
    from app.service import Service

    torch.manual_seed(0)
    good = zoo.save(zoo.build("ir18", width=0.25, head="gdc").eval(), tmp_path / "zoo" / "good-ir18")
    broken = {folder.name: message for folder, message in break_checkpoints(good, tmp_path / "zoo").items()}
    service = Service(tmp_path / "zoo", peers=False)
    assert service.model_names() == ["good-ir18"]
    headers, rows = service.zoo_table()
    source = {row[0]: row[headers.index("source")] for row in rows}
    for name, message in broken.items():
        assert message in source[name]
        assert service.card(name).startswith("**Could not be loaded:**")
        with pytest.raises(InputError, match=f"model {name} could not be loaded: .*{re.escape(message)}.*Usable: good-ir18"):
            service.verify(SAME_A, SAME_B, [name])
    result = service.verify(SAME_A, SAME_B, ["good-ir18"])
    assert [v.model for v in result.verdicts] == ["good-ir18"]
    assert sorted(p.name for p in (tmp_path / "zoo").iterdir()) == sorted([*broken, "good-ir18"])  # nothing added


def test_the_repository_runs_as_a_hugging_face_space(zoo_dir, tmp_path):
    """A Space reads the README's front matter (sdk, app_file) and runs `python app.py` with the
    address and port in GRADIO_SERVER_NAME / GRADIO_SERVER_PORT: started that way, the app answers
    a pair through gradio_client."""
    from huggingface_hub import SpaceCard

    card = SpaceCard.load(ROOT / "README.md").data
    assert card.sdk == "gradio" and card.app_file == "app.py" and (ROOT / card.app_file).is_file()
    import gradio

    assert card.sdk_version == gradio.__version__  # the Space builds the version the tests ran
    with running_app(zoo_dir, tmp_path, {}, as_a_space=True) as url:
        client = Client(url, verbose=False, download_files=str(tmp_path / "downloads"))
        data = verify(client, SAME_A, SAME_B, [REFERENCE])[0]
        assert data["models"][0]["model"] == REFERENCE and data["models"][0]["same"]
