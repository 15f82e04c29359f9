"""Verification pair lists: LFW `pairs.txt`-style, CFP's split protocol, and plain lists.

Every pair keeps its origin (`file:line`) so a missing image or a skipped pair can be traced
back to the protocol line that asked for it. Lists without folds get 10 stratified folds
(positives and negatives each cut into 10 contiguous blocks in file order) so 10-fold
accuracy means the same thing on every protocol.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import FrozenSet, List, Optional, Sequence, Tuple

import numpy as np

from .errors import EmptyDatasetError, FormatError, MissingFileError, PathLike, require_file

NUM_FOLDS = 10
_TRUE = {"1", "true", "same", "yes"}
_FALSE = {"0", "false", "diff", "different", "no"}


@dataclass(frozen=True)
class PairList:
    """Image pairs with same/different labels, a fold per pair and the origin of each pair."""

    name: str
    first: Tuple[Path, ...]
    second: Tuple[Path, ...]
    issame: np.ndarray
    folds: np.ndarray
    origins: Tuple[Tuple[str, int], ...]
    identities: FrozenSet[str] = field(default_factory=frozenset)

    def __post_init__(self):
        if not self.first:
            raise EmptyDatasetError("pair list holds no pairs", self.origins[0][0] if self.origins else self.name)
        lengths = {len(self.first), len(self.second), len(self.issame), len(self.folds), len(self.origins)}
        if len(lengths) != 1:
            raise ValueError(f"pair list {self.name!r} has columns of different lengths {lengths}")

    def __len__(self) -> int:
        return len(self.first)

    def images(self) -> List[Path]:
        """Every distinct image the pairs use, sorted (each is aligned and embedded once)."""
        return sorted(set(self.first) | set(self.second))

    def where(self, index: int) -> str:
        file, line = self.origins[index]
        return f"{file}:{line}"

    def select(self, indices: Sequence[int]) -> "PairList":
        idx = np.asarray(indices, dtype=np.int64)
        return PairList(self.name, tuple(self.first[i] for i in idx), tuple(self.second[i] for i in idx),
                        self.issame[idx], self.folds[idx], tuple(self.origins[i] for i in idx),
                        self.identities)

    def subset(self, max_pairs: int) -> "PairList":
        """A smaller list for smoke tests: evenly spaced positives and negatives from every fold,
        taken round-robin (fold 0 same, fold 0 different, fold 1 same, ...) so even a tiny
        subset holds both kinds of pair."""
        if max_pairs >= len(self):
            return self
        fold_ids = np.unique(self.folds)
        per_group = max(1, -(-max_pairs // (2 * len(fold_ids))))
        groups = []
        for fold in fold_ids:
            for same in (True, False):
                members = np.flatnonzero((self.folds == fold) & (self.issame == same))
                picks = np.unique(np.linspace(0, members.size - 1, min(per_group, members.size)).round().astype(int))
                groups.append(members[picks].tolist() if members.size else [])
        keep = [group[r] for r in range(per_group) for group in groups if r < len(group)]
        return self.select(sorted(keep[:max_pairs]))


def stratified_folds(issame: np.ndarray, num_folds: int = NUM_FOLDS) -> np.ndarray:
    """Fold per pair: the k-th of n positives goes to fold k*num_folds//n, negatives likewise."""
    folds = np.zeros(len(issame), dtype=np.int64)
    for same in (True, False):
        members = np.flatnonzero(issame == same)
        folds[members] = np.arange(members.size) * num_folds // max(members.size, 1)
    return folds


def _lines(path: Path):
    """(line number, stripped text) for non-blank, non-comment lines."""
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as error:
        raise FormatError(f"not a UTF-8 text file ({error.reason} at byte {error.start})", path) from None
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if line and not line.startswith("#"):
            yield number, line


def _int(token: str, path: Path, line: int, what: str) -> int:
    try:
        return int(token)
    except ValueError:
        raise FormatError(f"{what} must be an integer, got {token!r}", path, line) from None


def lfw_image_path(images_root: Path, name: str, number: int) -> Path:
    return images_root / name / f"{name}_{number:04d}.jpg"


def read_lfw_pairs(pairs_file: PathLike, images_root: Optional[PathLike] = None,
                   name: Optional[str] = None) -> PairList:
    """LFW `pairs.txt` (header `10 300`: 10 folds of 300 same + 300 different pairs) or the
    View 1 files (header `500`: one set of 500 + 500, given stratified folds).

    `images_root` holds `NAME/NAME_NNNN.jpg`; default: `images/` next to the file if it exists,
    else the file's folder (the layout of the original lfw.tgz).
    """
    path = require_file(pairs_file, "LFW pairs file")
    if images_root is None:
        images_root = path.parent / "images" if (path.parent / "images").is_dir() else path.parent
    images_root = Path(images_root)
    lines = list(_lines(path))
    if not lines:
        raise EmptyDatasetError("pairs file is empty", path)
    header_line, header = lines[0]
    counts = [_int(t, path, header_line, "header field") for t in header.split()]
    if len(counts) == 1:
        num_sets, per_set = 1, counts[0]
    elif len(counts) == 2:
        num_sets, per_set = counts
    else:
        raise FormatError(f"header must be 'FOLDS PAIRS_PER_FOLD' or 'PAIRS', got {header!r}", path, header_line)
    body = lines[1:]
    expected = 2 * num_sets * per_set
    if len(body) != expected:
        raise FormatError(f"header promises {num_sets} x ({per_set} same + {per_set} different) = "
                          f"{expected} pairs, file has {len(body)} pair lines", path, header_line)
    first, second, issame, folds, origins, names = [], [], [], [], [], set()
    for k, (number, line) in enumerate(body):
        fields = line.split()
        same = (k % (2 * per_set)) < per_set
        if same:
            if len(fields) != 3:
                raise FormatError(f"a same-person line needs 'NAME N1 N2', got {line!r}", path, number)
            a_name, b_name = fields[0], fields[0]
            a_num, b_num = (_int(fields[1], path, number, "image number"), _int(fields[2], path, number, "image number"))
        else:
            if len(fields) != 4:
                raise FormatError(f"a different-person line needs 'NAME1 N1 NAME2 N2', got {line!r}", path, number)
            a_name, b_name = fields[0], fields[2]
            a_num, b_num = (_int(fields[1], path, number, "image number"), _int(fields[3], path, number, "image number"))
        first.append(lfw_image_path(images_root, a_name, a_num))
        second.append(lfw_image_path(images_root, b_name, b_num))
        issame.append(same)
        folds.append(k // (2 * per_set))
        origins.append((str(path), number))
        names.update((a_name, b_name))
    issame_array = np.array(issame, dtype=bool)
    fold_array = np.array(folds, dtype=np.int64) if num_sets > 1 else stratified_folds(issame_array)
    return PairList(name or path.stem, tuple(first), tuple(second), issame_array, fold_array,
                    tuple(origins), frozenset(names))


def read_plain_pairs(pairs_file: PathLike, root: Optional[PathLike] = None,
                     name: Optional[str] = None) -> PairList:
    """Lines `PATH1 PATH2 SAME [FOLD]` (SAME: 1/0, true/false, same/diff; FOLD: 0-9); `#`
    starts a comment.

    Relative paths are resolved against `root`, default the list file's folder. Paths must not
    contain whitespace. Folds come from the FOLD column when every line has one (`make_pairs`
    writes identity-disjoint ones), else they are stratified (see `stratified_folds`).
    """
    path = require_file(pairs_file, "pair list")
    base = Path(root) if root is not None else path.parent
    first, second, issame, folds, origins = [], [], [], [], []
    for number, line in _lines(path):
        fields = line.split()
        if len(fields) not in (3, 4):
            raise FormatError(f"expected 'PATH1 PATH2 SAME [FOLD]', got {len(fields)} field(s): {line!r}", path, number)
        flag = fields[2].lower()
        if flag not in _TRUE | _FALSE:
            raise FormatError(f"SAME must be one of {sorted(_TRUE | _FALSE)}, got {fields[2]!r}", path, number)
        if len(fields) == 4:
            fold = _int(fields[3], path, number, "fold")
            if not 0 <= fold < NUM_FOLDS:
                raise FormatError(f"FOLD must be 0 to {NUM_FOLDS - 1}, got {fold}", path, number)
            folds.append(fold)
        first.append(base / fields[0])
        second.append(base / fields[1])
        issame.append(flag in _TRUE)
        origins.append((str(path), number))
    if not first:
        raise EmptyDatasetError("pair list holds no pairs", path)
    if folds and len(folds) != len(first):
        raise FormatError(f"{len(folds)} of {len(first)} lines give a FOLD: give it on every line or on none", path)
    issame_array = np.array(issame, dtype=bool)
    fold_array = np.array(folds, dtype=np.int64) if folds else stratified_folds(issame_array)
    return PairList(name or path.stem, tuple(first), tuple(second), issame_array, fold_array, tuple(origins))


def read_pairs(pairs_file: PathLike, images_root: Optional[PathLike] = None) -> PairList:
    """Either format, told apart by the first line (LFW files start with integer counts)."""
    path = require_file(pairs_file, "pair list")
    first = next(_lines(path), None)
    if first is None:
        raise EmptyDatasetError("pair list is empty", path)
    if all(token.isdigit() for token in first[1].split()):
        return read_lfw_pairs(path, images_root)
    return read_plain_pairs(path, images_root)


def _cfp_index(list_file: Path) -> dict:
    index = {}
    for number, line in _lines(list_file):
        fields = line.split()
        if len(fields) != 2:
            raise FormatError(f"expected 'INDEX PATH', got {line!r}", list_file, number)
        index[_int(fields[0], list_file, number, "image index")] = (list_file.parent / fields[1]).resolve()
    return index


def read_cfp_pairs(cfp_root: PathLike, protocol: str) -> PairList:
    """CFP-FF or CFP-FP: `Protocol/Split/{FF,FP}/NN/{same,diff}.txt`, lines `I,J`.

    I indexes `Pair_list_F.txt`; J indexes `Pair_list_F.txt` (FF) or `Pair_list_P.txt` (FP).
    The split folder number is the fold.
    """
    protocol = protocol.upper()
    if protocol not in ("FF", "FP"):
        raise ValueError(f"CFP protocol must be 'FF' or 'FP', got {protocol!r}")
    root = Path(cfp_root)
    proto_dir = root / "Protocol"
    frontal = _cfp_index(require_file(proto_dir / "Pair_list_F.txt", "CFP frontal list"))
    second_index = frontal if protocol == "FF" else _cfp_index(require_file(proto_dir / "Pair_list_P.txt", "CFP profile list"))
    names_file = root / "Data" / "list_name.txt"
    names = [line.replace(" ", "_") for _, line in _lines(names_file)] if names_file.is_file() else []
    split_dir = proto_dir / "Split" / protocol
    if not split_dir.is_dir():
        raise MissingFileError("CFP split folder not found", split_dir)
    splits = sorted(p for p in split_dir.iterdir() if p.is_dir())
    if not splits:
        raise EmptyDatasetError("CFP split folder holds no splits", split_dir)
    first, second, issame, folds, origins = [], [], [], [], []
    for fold, split in enumerate(splits):
        for kind, same in (("same", True), ("diff", False)):
            pair_file = require_file(split / f"{kind}.txt", "CFP split file")
            for number, line in _lines(pair_file):
                fields = line.split(",")
                if len(fields) != 2:
                    raise FormatError(f"expected 'I,J', got {line!r}", pair_file, number)
                i, j = (_int(f.strip(), pair_file, number, "image index") for f in fields)
                if i not in frontal or j not in second_index:
                    raise FormatError(f"index {i if i not in frontal else j} is not in the image list", pair_file, number)
                first.append(frontal[i])
                second.append(second_index[j])
                issame.append(same)
                folds.append(fold)
                origins.append((str(pair_file), number))
    used = {p.parent.parent.name for p in first + second}
    identities = frozenset(names[int(i) - 1] for i in used if i.isdigit() and 0 < int(i) <= len(names))
    return PairList(f"cfp-{protocol.lower()}", tuple(first), tuple(second), np.array(issame, dtype=bool),
                    np.array(folds, dtype=np.int64), tuple(origins), identities)
