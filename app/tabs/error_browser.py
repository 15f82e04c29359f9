"""The Error browser tab: a model's false accepts and false rejects on a test protocol, ranked by how
wrong they are, or the pairs where it disagrees with another model, each with both aligned faces and
every compared model's similarity; and how often each two models disagree. It reads the per-pair
results stored beside each model (`analysis.error_browser`), so no model runs. A listed pair opens
as photos A and B, for Verify, Explain and Occlusion."""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, List, Sequence, Tuple

import numpy as np

import analysis
from zoo.data import DataError, data_root, load_image
from zoo.data.align import SIZE

from ..errors import InputError
from ..models import ZooEntry

# What the tab lists -> the analysis that ranks it; the page shows the labels.
VIEWS = {"errors": analysis.model_errors, "disagreements": analysis.model_disagreements}
VIEW_LABELS = {"errors": "false accepts and false rejects", "disagreements": "pairs where models disagree"}
DEFAULT_PROTOCOL, DEFAULT_CONDITION = "lfw-view1", "blur0"
ROW_LIMITS, DEFAULT_ROWS = (1, 100), 20  # rows shown with their faces (aligning them is the tab's slow part)
GAP = 4  # white pixels between the two faces of a pair


@dataclass
class ErrorBrowser:
    """One opening of the browser: the ranked pairs, the disagreement matrix, the shown rows' faces."""

    ranked: analysis.RankedPairs
    disagreements: analysis.Disagreements
    faces: List[Tuple[np.ndarray, str]]  # (both aligned faces side by side, caption) per shown row, in rank order
    notes: List[str]
    seconds: float


def stored_results(entries: Sequence[ZooEntry]) -> analysis.PairResults:
    """The stored per-pair results of `entries`: in each checkpoint's folder, a peer's in zoo/peers/results."""
    return analysis.read_pair_results({e.name: analysis.stored_results_file(e.name, e.folder) for e in entries})


def ranked_pairs(entries: Sequence[ZooEntry], model: ZooEntry, protocol: str, condition: str,
                 view: str) -> Tuple[analysis.PairResults, analysis.RankedPairs]:
    """`view` ("errors" or "disagreements") of `model` among `entries` on `protocol` `condition`."""
    if view not in VIEWS:
        raise InputError(f"unknown list {view!r}: choose {' or '.join(VIEWS)}")
    compared = list(entries) if model.name in {e.name for e in entries} else [model, *entries]
    results = stored_results(compared)  # in listing order: the table's columns and the matrix follow it
    return results, VIEWS[view](results, model.name, str(protocol or "").strip(), str(condition or "").strip())


def browse(entries: Sequence[ZooEntry], model: ZooEntry, protocol: str, condition: str, view: str, rows: int,
           align: Callable[[np.ndarray], np.ndarray]) -> ErrorBrowser:
    """The ranked list, the disagreement matrix of every compared model, and the first `rows` rows' faces."""
    start = time.perf_counter()
    rows = int(rows)
    if not ROW_LIMITS[0] <= rows <= ROW_LIMITS[1]:
        raise InputError(f"{rows} rows: show {ROW_LIMITS[0]} to {ROW_LIMITS[1]}")
    results, ranked = ranked_pairs(entries, model, protocol, condition, view)
    matrix = analysis.disagreement_counts(results, ranked.protocol, ranked.condition)
    faces, notes = aligned_rows(ranked.table.head(rows), align)
    return ErrorBrowser(ranked, matrix, faces, [ranked.message, *notes, *results.missing_notes()],
                        time.perf_counter() - start)


def aligned_rows(table, align: Callable[[np.ndarray], np.ndarray]) -> Tuple[List[Tuple[np.ndarray, str]], List[str]]:
    """Each row's two faces aligned as the evaluation aligned them (largest face, else a centre crop), side
    by side; a row whose images are not under the data root gets a grey placeholder, and a note says where
    it looked."""
    root, faces, absent = data_root(), [], []
    for row in table.itertuples(index=False):
        caption = f"#{row.rank} {row.outcome}: {row.similarity:.3f} (threshold {row.threshold:.3f})"
        try:
            images = [load_image(root / name) for name in (row.first, row.second)]
        except DataError as err:
            absent.append(str(err))
            faces.append((np.full((SIZE, 2 * SIZE + GAP, 3), 200, np.uint8), f"{caption}; images not found"))
            continue
        a, b = (align(image) for image in images)
        faces.append((np.concatenate([a, np.full((SIZE, GAP, 3), 255, np.uint8), b], axis=1), caption))
    if not absent:
        return faces, []
    return faces, [f"{len(absent)} of {len(table)} rows shown without faces: their images are not under the data "
                   f"root {root} (set FACESCOPE_DATA to the folder they were evaluated from); first: {absent[0]}"]


def pair_files(entries: Sequence[ZooEntry], model: ZooEntry, protocol: str, condition: str, view: str,
               rank: int) -> Tuple[Path, Path, Dict]:
    """The two image files of row `rank` (1 = first) of the list, and the row."""
    _, ranked = ranked_pairs(entries, model, protocol, condition, view)
    table, rank = ranked.table, int(rank)
    if table.empty:
        raise InputError(f"nothing to load: {ranked.message}")
    if not 1 <= rank <= len(table):
        raise InputError(f"there is no row {rank}: the list has rows 1 to {len(table)}")
    row = table.iloc[rank - 1]
    root = data_root()
    paths = (root / row["first"], root / row["second"])
    absent = [str(p) for p in paths if not p.is_file()]
    if absent:
        raise InputError(f"cannot load row {rank}: {' and '.join(absent)} not found under the data root {root} "
                         "(set FACESCOPE_DATA to the folder the results were evaluated from)")
    return paths[0], paths[1], row_record(row)


def row_record(row) -> Dict:
    """A table row as JSON-ready values (a model without that pair: None)."""
    values = {key: value.item() if isinstance(value, np.generic) else value for key, value in row.items()}
    return {key: None if isinstance(value, float) and np.isnan(value) else value for key, value in values.items()}
