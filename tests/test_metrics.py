"""Metrics against values computed by hand, and the report's table, CSV and figures."""
import csv
import json

import numpy as np
import pytest

from zoo import metrics, report

pytestmark = pytest.mark.fast  # needs no face data: the fast tier (pytest -m fast)

# Six pairs, scores descending: same, same, diff, same, diff, diff.
SCORES = [0.9, 0.8, 0.7, 0.6, 0.5, 0.4]
SAME = [1, 1, 0, 1, 0, 0]


def test_known_roc_and_auc():
    far, tar, thresholds = metrics.roc_curve(SCORES, SAME)
    assert far.tolist() == pytest.approx([0, 0, 0, 1 / 3, 1 / 3, 2 / 3, 1])
    assert tar.tolist() == pytest.approx([0, 1 / 3, 2 / 3, 2 / 3, 1, 1, 1])
    assert thresholds.tolist() == [np.inf] + SCORES
    # 8 of the 9 (same, diff) score pairs are ordered correctly.
    assert metrics.auc(far, tar) == pytest.approx(8 / 9)


def test_tied_scores_form_one_roc_step():
    far, tar, _ = metrics.roc_curve([0.5, 0.5, 0.2, 0.2], [1, 0, 1, 0])
    assert far.tolist() == [0, 0.5, 1] and tar.tolist() == [0, 0.5, 1]
    assert metrics.auc(far, tar) == pytest.approx(0.5)


def test_best_threshold_by_hand():
    # Threshold 0.55 accepts .9 .8 .7 .6: right on .9 .8 .6 and on .5 .4 -> 5/6; 0.75 ties, lower wins.
    assert metrics.best_threshold(SCORES, SAME) == (pytest.approx(0.55), pytest.approx(5 / 6))
    assert metrics.accuracy(SCORES, SAME, 0.55) == pytest.approx(5 / 6)


def test_known_ten_fold_split():
    folds = np.repeat(np.arange(10), 2)
    scores, issame = [], []
    for f in range(10):
        scores += [0.6 + 0.01 * f, 0.95 if f == 3 else 0.2 + 0.02 * f]
        issame += [True, False]
    result = metrics.kfold_accuracy(scores, issame, folds)
    # Test fold 0: train positives start at 0.61, negatives (0.95 aside) end at 0.38 -> 0.495.
    # Test fold 9: positives from 0.60, negatives end at 0.36 -> 0.48. Others: 0.60 / 0.38 -> 0.49.
    assert result["fold_thresholds"] == pytest.approx([0.495] + [0.49] * 8 + [0.48])
    # Fold 3's negative (0.95) is accepted at any of those thresholds.
    assert result["fold_accuracies"] == [1.0, 1.0, 1.0, 0.5] + [1.0] * 6
    assert result["accuracy"] == pytest.approx(0.95)
    assert result["accuracy_std"] == pytest.approx(0.15)  # population std, as LFW's code


def test_tar_at_far_by_hand():
    negatives = [i / 10 for i in range(10)]
    positives = [0.95, 0.85, 0.5, 0.05]
    scores = positives + negatives
    same = [1] * 4 + [0] * 10
    out = metrics.tar_at_far(scores, same, [1.0, 0.5, 0.1, 0.01])
    assert list(out) == ["1", "0.5", "0.1"]  # 0.01 < 1/10 negatives: not measurable, not reported
    assert out["0.1"] == {"far": 0.1, "tar": 0.5, "threshold": 0.8, "achieved_far": 0.1}
    assert out["0.5"]["tar"] == 0.75 and out["0.5"]["threshold"] == pytest.approx(0.4)
    assert out["1"] == {"far": 1.0, "tar": 1.0, "threshold": None, "achieved_far": 1.0}


def test_supported_fars_follow_the_negative_count():
    assert metrics.supported_fars(500) == ([0.1, 0.01], [0.001, 1e-4, 1e-5, 1e-6])
    assert metrics.supported_fars(3500)[0] == [0.1, 0.01, 0.001]
    assert metrics.supported_fars(1000)[0] == [0.1, 0.01, 0.001]


def test_cosine_scores():
    a = np.array([[1.0, 0.0], [3.0, 4.0]])
    b = np.array([[0.0, 2.0], [3.0, 4.0]])
    assert metrics.cosine_scores(a, b).tolist() == pytest.approx([0.0, 1.0])


def test_bad_inputs_are_explained():
    with pytest.raises(ValueError, match="both same and different"):
        metrics.roc_curve([0.1, 0.2], [1, 1])
    with pytest.raises(ValueError, match="NaN"):
        metrics.kfold_accuracy([np.nan, 0.2], [1, 0], [0, 1])
    with pytest.raises(ValueError, match="3 scores but 2 labels"):
        metrics.auc(*metrics.roc_curve([0.1, 0.2, 0.3], [1, 0])[:2])


def test_verification_metrics_and_downsampled_roc():
    rng = np.random.default_rng(0)
    issame = np.r_[np.ones(3000, bool), np.zeros(3000, bool)]
    scores = np.r_[rng.normal(0.6, 0.15, 3000), rng.normal(0.1, 0.15, 3000)]
    folds = np.tile(np.arange(10), 600)
    out = metrics.verification_metrics(scores, issame, folds)
    assert out["pairs"] == 6000 and out["negatives"] == 3000
    assert list(out["tar_at_far"]) == ["0.1", "0.01", "0.001"]
    assert out["far_levels_omitted"] == ["0.0001", "1e-05", "1e-06"]
    assert 0.9 < out["accuracy"] < 0.99 and out["auc"] > 0.97
    far, tar, _ = metrics.roc_curve(scores, issame)
    roc = out["roc"]
    assert len(roc["far"]) <= metrics.ROC_POINTS
    assert roc["far"][0] == 0 and roc["far"][-1] == 1 and roc["tar"][-1] == 1
    exact = set(zip(np.round(far, 8), np.round(tar, 8)))
    assert all((f, t) in exact for f, t in zip(roc["far"], roc["tar"]))  # real operating points only
    assert metrics.auc(np.array(roc["far"]), np.array(roc["tar"])) == pytest.approx(out["auc"], abs=2e-3)
    json.dumps(out)  # JSON-ready


def _results():
    """A results dict shaped like zoo.evaluate's, from known scores."""
    def condition(kind, amount, scores, same, folds):
        return {"degradation": {"kind": kind, "amount": amount}, **metrics.verification_metrics(scores, same, folds)}

    six_folds = [0, 0, 1, 1, 1, 0]
    lfw = {"pairs_skipped": 0, "fallback_alignments": 2, "conditions": {
        "blur0": condition("blur", 0.0, SCORES, SAME, six_folds),
        "blur2": condition("blur", 2.0, np.array(SCORES) ** 2, SAME, six_folds),
        "lowres28": condition("lowres", 28, SCORES, SAME, six_folds)}}
    # 10 negatives: FAR 0.1 becomes measurable.
    twenty = np.linspace(0, 1, 20)
    cfp = {"pairs_skipped": 1, "fallback_alignments": 0, "conditions": {
        "blur0": condition("blur", 0.0, twenty, np.arange(20) % 2 == 1, np.arange(20) // 2)}}
    return {"model": {"spec": "ir18"}, "protocols": {"lfw-view1": lfw, "cfp-fp": cfp}}


def test_table_and_csv(tmp_path):
    results = _results()
    lines = report.results_table([results]).splitlines()
    assert lines[0].split() == ["protocol", "condition", "pairs", "skipped", "fallback", "accuracy", "auc",
                                "TAR@0.1", "TAR@0.01", "TAR@0.001"]  # the same columns for every list
    assert lines[1].split()[:5] == ["lfw-view1", "blur0", "6", "0", "2"]
    assert lines[1].split()[-3:] == ["n/a", "n/a", "n/a"]  # 3 negatives cannot measure FAR 0.1
    # FAR 0.1 admits one of 10 negatives: accept above the 2nd-highest negative (16/19), which
    # only the positives 17/19 and 19/19 pass: TAR 2/10.
    assert lines[4].split()[:5] == ["cfp-fp", "blur0", "20", "1", "0"] and lines[4].split()[-3:] == ["0.2000", "n/a", "n/a"]
    two = report.results_table([results, {**results, "model": {"spec": "peer:sface"}}]).splitlines()
    assert two[0].split()[0] == "model" and two[1].split()[0] == "ir18" and two[5].split()[0] == "peer:sface"
    path = tmp_path / "r.csv"
    report.write_csv(path, [results])
    rows = list(csv.DictReader(path.open()))
    assert [r["condition"] for r in rows] == ["blur0", "blur2", "lowres28", "blur0"]
    assert float(rows[0]["auc"]) == pytest.approx(8 / 9)
    assert rows[0]["tar@far=0.1"] == "n/a" and float(rows[3]["tar@far=0.1"]) == pytest.approx(0.2)


def test_roc_figure_content():
    figure = report.roc_figure(_results(), condition="blur0")
    data = json.loads(figure.to_json())
    assert [t["name"] for t in data["data"]] == ["lfw-view1 blur0 (AUC 0.889)", "cfp-fp blur0 (AUC 0.550)"]
    trace = data["data"][0]
    assert trace["x"] == pytest.approx([1 / 3, 1 / 3, 2 / 3, 1])  # FAR 0 has no place on a log axis
    assert data["layout"]["xaxis"]["type"] == "log"


def test_accuracy_vs_blur_figure_content():
    results = _results()
    data = json.loads(report.accuracy_vs_blur_figure(results).to_json())
    trace = data["data"][0]
    conditions = results["protocols"]["lfw-view1"]["conditions"]
    assert trace["x"] == [0.0, 2.0]  # lowres is not a blur level
    assert trace["y"] == pytest.approx([conditions["blur0"]["accuracy"], conditions["blur2"]["accuracy"]])
    assert trace["error_y"]["array"] == pytest.approx([conditions["blur0"]["accuracy_std"],
                                                       conditions["blur2"]["accuracy_std"]])
