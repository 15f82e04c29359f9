"""Where a model goes wrong, and where models disagree, from stored per-pair results (no model runs).

`python -m zoo.evaluate --model NAME --protocol ... --pairs --out-dir DIR` stores every pair's
similarity, its fold's threshold (learnt on the other nine folds) and the verdict, per protocol
and condition (DIR/NAME.pairs.csv.gz). Beside a checkpoint the file is `pairs.csv.gz` (in
zoo/checkpoints/NAME/ or a pulled hub model's folder); a peer's is
zoo/peers/results/peer-KEY.pairs.csv.gz (`stored_results_file`).

    from analysis import disagreement_counts, disagreement_figure, model_errors, stored_pair_results
    results = stored_pair_results(["mobilefacenet.y1", "scan-mobilefacenet.fss-ft", "peer:sface"])
    errors = model_errors(results, "mobilefacenet.y1", "lfw-view1", "blur4")
    errors.table        # false accepts and false rejects, most wrong first, with every other model's similarity
    disagreement_figure(disagreement_counts(results, "lfw-view1", "blur4")).show()

An error is judged at the model's own fold threshold, as its 10-fold accuracy counts it; how
wrong it is, is the distance of the similarity from that threshold. Image paths in the tables
are relative to the data root they were evaluated under (`zoo.data.data_root()`).
"""
from __future__ import annotations

import functools
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, Iterable, List, Mapping, Optional, Sequence, Union

import numpy as np
import pandas as pd
import plotly.graph_objects as go

import zoo
from zoo.checkpoint import PAIR_RESULTS_FILE
from zoo.evaluate import result_file
from zoo.peers import RESULTS_DIR as PEER_RESULTS_DIR, is_peer

from .common import AnalysisError

PAIRS_SUFFIX = ".pairs.csv.gz"  # what `zoo.evaluate --pairs --out-dir` adds to a model's name
TEXT_COLUMNS = ("protocol", "condition", "line", "first", "second")  # read as categories: few distinct values
COLUMNS = (*TEXT_COLUMNS, "same", "fold", "similarity", "threshold", "verdict_same", "correct")
PAIR_COLUMNS = ("first", "second", "same", "fold")  # what a pair is, whichever model evaluated it
EVALUATE_SETTINGS = "--protocol lfw-view1,cfp-ff,cfp-fp --blur 0,2,4 --pairs"  # the embedded zoo's evaluation
OUTCOMES = {(True, True): "true accept", (True, False): "false reject", (False, True): "false accept",
            (False, False): "true reject"}  # (same person, model says same) -> outcome

PathLike = Union[str, Path]


def stored_results_file(model: str, folder: Optional[PathLike] = None) -> Path:
    """Where `model`'s stored per-pair results live: `pairs.csv.gz` in its checkpoint `folder` (default:
    the local zoo's folder of that name); a peer's in zoo/peers/results/ under evaluate's own name."""
    if is_peer(model):
        return result_file(PEER_RESULTS_DIR, model).with_suffix(PAIRS_SUFFIX)
    return Path(folder if folder is not None else zoo.LOCAL_ZOO / model) / PAIR_RESULTS_FILE


def how_to_store(model: str, path: Path) -> str:
    """The commands that make `model`'s missing results file at `path`."""
    spec = model if is_peer(model) or path.parent == zoo.LOCAL_ZOO / model else str(path.parent)
    name = result_file(Path(), model).stem  # --out NAME.json writes NAME.pairs.csv.gz beside it
    return (f"python -m zoo.evaluate --model {spec} {EVALUATE_SETTINGS} --out {name}.json, then copy "
            f"{name}{PAIRS_SUFFIX} to {path}")


@functools.lru_cache(maxsize=64)
def _read(path: str, modified_ns: int, size: int) -> pd.DataFrame:
    """One results file, parsed once per version (the app reopens the same files on every request)."""
    try:
        frame = pd.read_csv(path, dtype={name: "category" for name in TEXT_COLUMNS})
    except (OSError, EOFError, ValueError) as err:  # gzip and CSV parse errors are among these
        raise AnalysisError(f"{path} is not a readable per-pair results file ({err}); "
                            "remake it with python -m zoo.evaluate ... --pairs") from None
    missing = [name for name in COLUMNS if name not in frame.columns]
    if missing:
        raise AnalysisError(f"{path} lacks the column(s) {', '.join(missing)} of python -m zoo.evaluate --pairs: "
                            "remake it with the current zoo.evaluate")
    return frame


def forget_parsed_files() -> None:
    """Parse every results file anew on its next read (they are kept, parsed, until a file changes)."""
    _read.cache_clear()


@dataclass
class ConditionResults:
    """Every model's verdicts on one protocol and condition, one row per pair (index: the pair-list line, in
    pair-list order). A model without a pair (skipped, or evaluated on fewer pairs) has NaN there."""

    protocol: str
    condition: str
    pairs: pd.DataFrame  # first, second, same, fold
    similarity: pd.DataFrame  # one column per model
    threshold: pd.DataFrame
    says_same: pd.DataFrame  # 1.0 / 0.0 / NaN
    correct: pd.DataFrame  # 1.0 / 0.0 / NaN

    @property
    def models(self) -> List[str]:
        return list(self.similarity.columns)

    def evaluated(self, model: str) -> pd.Index:
        """The pairs `model` has a verdict on, in pair-list order."""
        return self.similarity.index[self.similarity[model].notna()]


@dataclass
class PairResults:
    """Several models' stored per-pair results; `missing`: models without a file -> where it was looked for."""

    frames: Dict[str, pd.DataFrame]
    missing: Dict[str, Path]
    _views: Dict[tuple, ConditionResults] = field(default_factory=dict, repr=False)

    @property
    def models(self) -> List[str]:
        return list(self.frames)

    def protocols(self) -> Dict[str, List[str]]:
        """Every protocol in any model's results -> its conditions, in the files' order."""
        return _protocols(self.frames.values())

    def missing_notes(self) -> List[str]:
        """One line per model without stored results: where it was looked for and how to make it."""
        return [f"no stored per-pair results for {model} (looked for {path}): {how_to_store(model, path)}"
                for model, path in self.missing.items()]

    def require(self, model: str) -> None:
        """AnalysisError unless `model`'s results were read (saying how to make them when they are missing)."""
        if model in self.missing:
            path = self.missing[model]
            raise AnalysisError(f"no stored per-pair results for {model}: looked for {path}. Make them with "
                                f"{how_to_store(model, path)}")
        if model not in self.frames:
            raise AnalysisError(f"no results read for {model}; read: {', '.join(self.models) or 'none'}")

    def condition(self, protocol: str, condition: str) -> ConditionResults:
        """Every model's verdicts on `protocol` `condition`, or AnalysisError listing the known ones."""
        known = self.protocols()
        if not known:
            raise AnalysisError("no stored per-pair results to browse: " + "; ".join(self.missing_notes() or [
                "no model given"]))
        if protocol not in known:
            raise AnalysisError(f"no stored results for protocol {protocol!r}; known: {_listing(known)}")
        if condition not in known[protocol]:
            raise AnalysisError(f"no stored results for {protocol} condition {condition!r}; {protocol} has "
                                f"{', '.join(known[protocol])}")
        key = (protocol, condition)
        if key not in self._views:
            self._views[key] = self._gather(protocol, condition)
        return self._views[key]

    def _gather(self, protocol: str, condition: str) -> ConditionResults:
        rows = {}
        for model, frame in self.frames.items():
            chosen = frame[(frame["protocol"] == protocol) & (frame["condition"] == condition)]
            if len(chosen):
                rows[model] = chosen.set_index(chosen["line"].astype(str))
        found = pd.unique(np.concatenate([r.index.to_numpy() for r in rows.values()]))
        lines = pd.Index(sorted(found, key=_pair_list_order), name="line")
        pairs = pd.concat([r.loc[:, list(PAIR_COLUMNS)] for r in rows.values()])
        pairs = pairs[~pairs.index.duplicated()].reindex(lines).astype({"first": str, "second": str})

        def column(name: str) -> pd.DataFrame:
            return pd.DataFrame({model: r[name].astype(float) for model, r in rows.items()}).reindex(lines)

        return ConditionResults(protocol, condition, pairs, column("similarity"), column("threshold"),
                                column("verdict_same"), column("correct"))


def _pair_list_order(line: str) -> tuple:
    """Where a pair stands in its protocol: (pair-list file, line number), whichever models evaluated it."""
    file, _, number = line.rpartition(":")
    return (file, int(number)) if number.isdigit() else (line, 0)


def _protocols(frames: Iterable[pd.DataFrame]) -> Dict[str, List[str]]:
    found: Dict[str, Dict[str, None]] = {}
    for frame in frames:
        for protocol, condition in frame[["protocol", "condition"]].drop_duplicates().itertuples(index=False):
            found.setdefault(protocol, {})[condition] = None
    return {protocol: list(conditions) for protocol, conditions in found.items()}


def _listing(known: Mapping[str, Sequence[str]]) -> str:
    return "; ".join(f"{protocol} ({', '.join(conditions)})" for protocol, conditions in known.items())


def read_pair_results(files: Mapping[str, PathLike]) -> PairResults:
    """The results files of several models (model -> path); a file that is not there goes to `missing`."""
    frames, missing = {}, {}
    for model, path in files.items():
        path = Path(path)
        if not path.is_file():
            missing[model] = path
            continue
        stat = path.stat()
        frames[model] = _read(str(path.resolve()), stat.st_mtime_ns, stat.st_size)
    return PairResults(frames, missing)


def stored_pair_results(models: Sequence[str]) -> PairResults:
    """The stored results of local zoo models and peers, by name (`stored_results_file`)."""
    return read_pair_results({model: stored_results_file(model) for model in models})


@dataclass
class RankedPairs:
    """Pairs of one protocol and condition about one model, ranked; `message` says what was found (or
    that nothing was). Table columns: rank, outcome (the model's), margin (|similarity - threshold|),
    similarity, threshold, (the disagreement list's others_disagreeing,) others_wrong, each other model's
    similarity (its column is its name), same, fold, first, second, line."""

    kind: str
    model: str
    protocol: str
    condition: str
    evaluated: int  # pairs the model has a verdict on here
    table: pd.DataFrame
    message: str


def _ranked(view: ConditionResults, model: str, lines: pd.Index, kind: str, message: str,
            extra: Optional[Dict[str, pd.Series]] = None) -> RankedPairs:
    """`lines`, in that order, as a RankedPairs table about `model`."""
    others = [m for m in view.models if m != model]
    pairs = view.pairs.loc[lines]
    says_same = view.says_same.loc[lines, model]
    table = pd.DataFrame({"rank": np.arange(1, len(lines) + 1),
                          "outcome": [OUTCOMES[bool(same), bool(says)] for same, says in zip(pairs["same"], says_same)],
                          "margin": _margin(view, model, lines), "similarity": view.similarity.loc[lines, model],
                          "threshold": view.threshold.loc[lines, model], **(extra or {}),
                          "others_wrong": (view.correct.loc[lines, others] == 0).sum(axis=1)}, index=lines)
    table = table.join(view.similarity.loc[lines, others]).join(pairs[["same", "fold", "first", "second"]])
    table = table.assign(line=lines.to_numpy()).reset_index(drop=True)
    return RankedPairs(kind, model, view.protocol, view.condition, len(view.evaluated(model)), table, message)


def _margin(view: ConditionResults, model: str, lines: pd.Index) -> pd.Series:
    """How wrong (or how sure) `model` is on each pair: its similarity's distance from its threshold, to the
    6 decimals both are stored with (so rounding noise never reorders a tie)."""
    return (view.similarity.loc[lines, model] - view.threshold.loc[lines, model]).abs().round(6)


def _view_of(results: PairResults, model: str, protocol: str, condition: str) -> ConditionResults:
    results.require(model)
    view = results.condition(protocol, condition)
    if model not in view.models:
        raise AnalysisError(f"{model} has no stored results for {protocol} {condition}; its results hold "
                            f"{_listing(_protocols([results.frames[model]]))}")
    return view


def model_errors(results: PairResults, model: str, protocol: str, condition: str) -> RankedPairs:
    """`model`'s false accepts and false rejects on `protocol` `condition` at its fold thresholds, the most
    wrong (farthest from the threshold) first; ties keep pair-list order."""
    view = _view_of(results, model, protocol, condition)
    evaluated = view.evaluated(model)
    wrong = evaluated[(view.correct.loc[evaluated, model] == 0).to_numpy()]
    wrong = _margin(view, model, wrong).sort_values(ascending=False, kind="stable").index
    says = view.says_same.loc[wrong, model]
    accepts, rejects = int((says == 1).sum()), int((says == 0).sum())
    where = f"{protocol} {condition}"
    message = (f"{model}: {len(wrong)} errors of {len(evaluated)} pairs on {where} at its fold thresholds "
               f"({accepts} false accepts, {rejects} false rejects), the most wrong first" if len(wrong) else
               f"{model} makes no errors on {where}: all {len(evaluated)} pairs right at its fold thresholds")
    return _ranked(view, model, wrong, "errors", message)


def model_disagreements(results: PairResults, model: str, protocol: str, condition: str) -> RankedPairs:
    """The pairs on which `model`'s verdict differs from at least one other model's (one says same, another
    different), the most contested first (most other models disagreeing, then farthest from its threshold)."""
    view = _view_of(results, model, protocol, condition)
    evaluated = view.evaluated(model)
    others = [m for m in view.models if m != model]
    verdicts = view.says_same.loc[evaluated]
    disagreeing = verdicts[others].notna() & verdicts[others].ne(verdicts[model], axis=0)
    count = disagreeing.sum(axis=1)
    keys = pd.DataFrame({"count": count, "margin": _margin(view, model, evaluated)})[count > 0]
    lines = keys.sort_values(["count", "margin"], ascending=False, kind="stable").index
    where = f"{protocol} {condition}"
    if not others:
        message = f"only {model} has stored results for {where}: disagreement needs a second model"
    elif len(lines):
        message = (f"{model} disagrees with at least one of {len(others)} other models on {len(lines)} of "
                   f"{len(evaluated)} pairs of {where}, the most contested first")
    else:
        message = (f"{model} agrees with all {len(others)} other models on every one of {len(evaluated)} pairs "
                   f"of {where}")
    return _ranked(view, model, lines, "disagreements", message, {"others_disagreeing": count.loc[lines]})


@dataclass
class Disagreements:
    """For each pair of models, on how many pairs (of those both evaluated) one says same and the other different."""

    protocol: str
    condition: str
    models: List[str]
    counts: np.ndarray  # (M, M) int
    compared: np.ndarray  # (M, M) int: pairs both models evaluated


def disagreement_counts(results: PairResults, protocol: str, condition: str,
                        models: Optional[Sequence[str]] = None) -> Disagreements:
    """The disagreement matrix of `models` (default: every model with results there) on `protocol` `condition`."""
    view = results.condition(protocol, condition)
    models = [m for m in (models or view.models) if m in view.models]
    verdicts = view.says_same[models].to_numpy()
    known = ~np.isnan(verdicts)
    both = known[:, :, None] & known[:, None, :]
    differ = (verdicts[:, :, None] != verdicts[:, None, :]) & both
    return Disagreements(protocol, condition, models, differ.sum(axis=0), both.sum(axis=0))


def disagreement_figure(data: Disagreements) -> go.Figure:
    """The disagreement matrix as an annotated heatmap; hovering gives the count out of the pairs compared."""
    size = len(data.models)
    fig = go.Figure(go.Heatmap(
        z=data.counts, x=data.models, y=data.models, text=data.counts, texttemplate="%{text}", customdata=data.compared,
        colorscale="Reds", colorbar=dict(title="pairs"),
        hovertemplate="%{y} vs %{x}: they disagree on %{z} of %{customdata} pairs<extra></extra>"))
    fig.update_layout(title=f"Pairs where two models disagree (one says same, the other different): "
                            f"{data.protocol} {data.condition}",
                      width=max(480, 60 * size + 320), height=max(400, 50 * size + 260),
                      margin=dict(l=20, r=20, t=70, b=20), xaxis=dict(tickangle=-35),
                      yaxis=dict(autorange="reversed"))
    return fig
