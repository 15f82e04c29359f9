"""The error browser's analysis (`analysis.error_browser`) on real stored per-pair results: three
zoo models evaluated by `zoo.evaluate --pairs` on 100 LFW View 1 pairs, clean and at blur 4.
Every expected value is counted straight from the CSV rows."""
from __future__ import annotations

from itertools import product
from pathlib import Path
from typing import Dict

import numpy as np
import pytest

import analysis as A
import zoo
from analysis import AnalysisError
from pair_results import CONDITIONS, PROTOCOL, evaluate_pairs, read_rows, write_rows
from zoo.peers import RESULTS_DIR

MODELS = ("mobilefacenet.y1", "mobilefacenet.fss-ft", "scan-mobilefacenet.fss-ft")
MAX_PAIRS = 100


@pytest.fixture(scope="module")
def files(tmp_path_factory, crop_cache) -> Dict[str, Path]:
    return evaluate_pairs(MODELS, tmp_path_factory.mktemp("pairs"), crop_cache.root, MAX_PAIRS)


@pytest.fixture(scope="module")
def results(files) -> A.PairResults:
    return A.read_pair_results(files)


def stored(files, model: str, condition: str) -> Dict[str, Dict[str, str]]:
    """The model's CSV rows of PROTOCOL `condition`, by pair-list line."""
    return {row["line"]: row for row in read_rows(files[model])
            if row["protocol"] == PROTOCOL and row["condition"] == condition}


def test_errors_are_the_wrong_pairs_most_wrong_first(files, results):
    """The list holds exactly the rows marked incorrect, split into false accepts (different people
    said same) and false rejects by the `same` column, ranked by distance from the fold threshold,
    with every other model's similarity and how many of them also get the pair wrong."""
    listed = 0
    for model, condition in product(MODELS, CONDITIONS):
        rows = {m: stored(files, m, condition) for m in MODELS}
        own = rows[model]
        wrong = [line for line, row in own.items() if row["correct"] == "False"]
        errors = A.model_errors(results, model, PROTOCOL, condition)
        table = errors.table
        assert sorted(table["line"]) == sorted(wrong) and errors.evaluated == len(own) == MAX_PAIRS
        assert table["rank"].tolist() == list(range(1, len(wrong) + 1))
        assert (np.diff(table["margin"].to_numpy()) <= 0).all()
        for _, row in table.iterrows():
            csv_row = own[row["line"]]
            assert row["outcome"] == ("false reject" if csv_row["same"] == "True" else "false accept")
            similarity, threshold = float(csv_row["similarity"]), float(csv_row["threshold"])
            assert (row["similarity"], row["threshold"]) == pytest.approx((similarity, threshold), abs=1e-9)
            assert row["margin"] == pytest.approx(abs(similarity - threshold), abs=1e-6)
            others = [m for m in MODELS if m != model]
            assert [row[m] for m in others] == pytest.approx([float(rows[m][row["line"]]["similarity"]) for m in others],
                                                             abs=1e-9)
            assert row["others_wrong"] == sum(rows[m][row["line"]]["correct"] == "False" for m in others)
        accepts = sum(own[line]["same"] == "False" for line in wrong)
        assert (table["outcome"] == "false accept").sum() == accepts
        listed += len(wrong)
    assert listed > 0, "no model erred on any pair: the test checked nothing"


def test_disagreement_counts_match_a_direct_count(files, results):
    for condition in CONDITIONS:
        rows = {m: stored(files, m, condition) for m in MODELS}
        data = A.disagreement_counts(results, PROTOCOL, condition)
        direct = [[sum(rows[a][line]["verdict_same"] != rows[b][line]["verdict_same"] for line in rows[a])
                   for b in MODELS] for a in MODELS]
        assert data.models == list(MODELS) and data.counts.tolist() == direct
        assert (data.compared == MAX_PAIRS).all()
        figure = A.disagreement_figure(data)
        assert np.array_equal(np.asarray(figure.data[0].z), data.counts) and list(figure.data[0].x) == list(MODELS)
    assert data.counts.sum() > 0, "the models agree on every blurred pair: the test checked nothing"


def test_disagreements_list_the_pairs_where_a_model_stands_apart(files, results):
    """Pairs where the model's verdict differs from at least one other's, the most contested first."""
    rows = {m: stored(files, m, "blur4") for m in MODELS}
    for model in MODELS:
        against = {line: sum(rows[m][line]["verdict_same"] != row["verdict_same"] for m in MODELS if m != model)
                   for line, row in rows[model].items()}
        table = A.model_disagreements(results, model, PROTOCOL, "blur4").table
        assert sorted(table["line"]) == sorted(line for line, count in against.items() if count)
        assert table["others_disagreeing"].tolist() == [against[line] for line in table["line"]]
        keys = list(zip(table["others_disagreeing"], table["margin"]))
        assert keys == sorted(keys, reverse=True)


def test_clear_messages_on_bad_input(files, tmp_path):
    ghost = tmp_path / "ghost" / "pairs.csv.gz"
    results = A.read_pair_results({**files, "ghost": ghost})
    with pytest.raises(AnalysisError, match=f"no stored per-pair results for ghost: looked for {ghost}. Make them "
                                            "with python -m zoo.evaluate --model "):
        A.model_errors(results, "ghost", PROTOCOL, "blur0")
    assert A.model_errors(results, MODELS[0], PROTOCOL, "blur0").evaluated == MAX_PAIRS  # the others still work
    assert results.missing_notes()[0].startswith(f"no stored per-pair results for ghost (looked for {ghost})")
    with pytest.raises(AnalysisError, match=r"no stored results for protocol 'cfp-xx'; known: lfw-view1 "
                                            r"\(blur0, blur4\)"):
        A.model_errors(results, MODELS[0], "cfp-xx", "blur0")
    with pytest.raises(AnalysisError, match="no stored results for lfw-view1 condition 'blur9'; lfw-view1 has "
                                            "blur0, blur4"):
        A.disagreement_counts(results, PROTOCOL, "blur9")
    with pytest.raises(AnalysisError, match="no results read for nobody; read: mobilefacenet.y1"):
        A.model_disagreements(results, "nobody", PROTOCOL, "blur0")
    broken = tmp_path / "broken.pairs.csv.gz"
    broken.write_text("this is not gzip\n")
    with pytest.raises(AnalysisError, match="is not a readable per-pair results file"):
        A.read_pair_results({"broken": broken})


def test_an_empty_error_list_says_so(files, tmp_path):
    """A model's real results cut to the pairs it got right: no errors, and a message, not a crash."""
    model = MODELS[0]
    right = [row for row in read_rows(files[model]) if row["correct"] == "True"]
    results = A.read_pair_results({model: write_rows(tmp_path / "right.pairs.csv.gz", right),
                                   MODELS[1]: files[MODELS[1]]})
    for condition in CONDITIONS:
        errors = A.model_errors(results, model, PROTOCOL, condition)
        kept = sum(row["condition"] == condition for row in right)
        assert errors.table.empty and errors.evaluated == kept
        assert errors.message == (f"{model} makes no errors on {PROTOCOL} {condition}: all {kept} pairs right at "
                                  "its fold thresholds")


@pytest.mark.fast
def test_where_stored_results_live(tmp_path):
    """Beside each checkpoint as pairs.csv.gz; a peer's under zoo/peers/results with zoo.evaluate's name for it."""
    assert A.stored_results_file("mobilefacenet.y1") == zoo.LOCAL_ZOO / "mobilefacenet.y1" / "pairs.csv.gz"
    assert A.stored_results_file("org/pulled", tmp_path) == tmp_path / "pairs.csv.gz"
    assert A.stored_results_file("peer:sface") == RESULTS_DIR / "peer-sface.pairs.csv.gz"
