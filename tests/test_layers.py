"""The layers point one way: zoo <- train, and zoo <- analysis <- app. The app and the
analyses turn photos into embeddings and pair lists into metrics through `zoo` alone."""
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.fast  # needs no face data: the fast tier (pytest -m fast)

ROOT = Path(__file__).resolve().parents[1]


def test_app_and_analysis_never_import_the_trainer():
    probe = ("import sys; import app.service, app.ui, analysis.__main__, zoo.evaluate, zoo.peers; "
             "print(sorted(m for m in sys.modules if m == 'train' or m.startswith('train.')))")
    out = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_zoo_never_imports_the_layers_above_it():
    probe = ("import sys; import zoo, zoo.data, zoo.evaluate, zoo.peers, zoo.importers, zoo.hub; "
             "print(sorted(m.split('.')[0] for m in sys.modules if m.split('.')[0] in ('train', 'analysis', 'app')))")
    out = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
