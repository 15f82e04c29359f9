"""A balanced verification pair list from a folder of faces (one sub-folder per person).

    python -m zoo.make_pairs my_faces/ --out my_faces/pairs.txt
    python -m zoo.evaluate --model zoo --protocol my_faces/pairs.txt --out-dir results/

People are dealt to 10 folds (seeded); every pair stays inside one fold, genuine pairs are two
images of one person and impostor pairs two people of the same fold, so the 10-fold accuracy
never tunes its threshold on the people it is tested on (the LFW View 2 rule). The list is
`PATH1 PATH2 SAME FOLD` with paths relative to the list's folder, the format zoo.evaluate reads.
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from .data import DataError, read_image_folder
from .data.pairs import NUM_FOLDS
from .data.paths import atomic_write

Pair = Tuple[Path, Path, bool, int]


def make_pairs(root: Path, pairs_per_class: int, seed: int = 0, folds: int = NUM_FOLDS) -> List[Pair]:
    """`pairs_per_class` genuine and as many impostor pairs, each inside one identity fold.

    Raises DataError when the folder cannot give that many: fewer than `folds` people with two
    images, or too few distinct pairs inside the folds.
    """
    images = read_image_folder(root)
    by_person: Dict[int, List[Path]] = {}
    for path, label in zip(images.paths, images.labels):
        by_person.setdefault(int(label), []).append(path)
    people = sorted(by_person)
    twice = [p for p in people if len(by_person[p]) >= 2]
    if len(twice) < folds:
        raise DataError(f"{len(twice)} people have two or more images; genuine pairs in {folds} folds need at "
                        f"least {folds}", root)
    rng = np.random.default_rng(seed)
    fold_of = {p: k % folds for k, p in enumerate(rng.permutation(people).tolist())}
    members = [[p for p in people if fold_of[p] == f] for f in range(folds)]
    genuine = _sample(rng, pairs_per_class, folds,
                      lambda f: [(a, b) for p in members[f] for i, a in enumerate(by_person[p])
                                 for b in by_person[p][i + 1:]], "genuine", root)
    impostor = _sample(rng, pairs_per_class, folds,
                       lambda f: [(a, b) for i, p in enumerate(members[f]) for q in members[f][i + 1:]
                                  for a in by_person[p] for b in by_person[q]], "impostor", root)
    pairs = [(a, b, same, f) for same, kind in ((True, genuine), (False, impostor))
             for f, chosen in enumerate(kind) for a, b in chosen]
    return sorted(pairs, key=lambda pair: (pair[3], not pair[2]))


def _sample(rng, total: int, folds: int, candidates, kind: str, root: Path) -> List[list]:
    """`total` pairs spread evenly over the folds, drawn without replacement within each."""
    per_fold = [total // folds + (f < total % folds) for f in range(folds)]
    chosen = []
    for f, want in enumerate(per_fold):
        pool = candidates(f)
        if len(pool) < want:
            raise DataError(f"fold {f} offers only {len(pool)} distinct {kind} pairs, {want} wanted: ask for fewer "
                            "pairs (--pairs) or add people/images", root)
        chosen.append([pool[i] for i in sorted(rng.choice(len(pool), want, replace=False))])
    return chosen


def write_pairs(pairs: Sequence[Pair], out: Path) -> None:
    base = out.resolve().parent
    lines = ["# made by python -m zoo.make_pairs: PATH1 PATH2 SAME FOLD (identity-disjoint folds)"]
    for a, b, same, fold in pairs:
        names = [Path(os.path.relpath(Path(p).resolve(), base)).as_posix() for p in (a, b)]
        if any(any(c.isspace() for c in n) for n in names):
            raise DataError("pair lists cannot hold paths with spaces; rename the files", a)
        lines.append(f"{names[0]} {names[1]} {int(same)} {fold}")
    atomic_write(out, lambda f: f.write(("\n".join(lines) + "\n").encode()))


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m zoo.make_pairs", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("folder", type=Path, help="ROOT/PERSON/IMAGE (any image type PIL reads)")
    parser.add_argument("--out", type=Path, help="the pair list to write (default: FOLDER/pairs.txt)")
    parser.add_argument("--pairs", type=int, default=300,
                        help="genuine pairs, and as many impostor pairs (default 300: 600 in all, 60 per fold)")
    parser.add_argument("--seed", type=int, default=0, help="which people go to which fold and which pairs (default 0)")
    args = parser.parse_args(argv)
    if args.pairs < NUM_FOLDS:
        parser.error(f"--pairs must be at least {NUM_FOLDS} (one per fold)")
    out = args.out or args.folder / "pairs.txt"
    try:
        pairs = make_pairs(args.folder, args.pairs, args.seed)
        write_pairs(pairs, out)
    except DataError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    people = len({Path(p).parent.name for a, b, _, _ in pairs for p in (a, b)})
    print(f"wrote {out}: {len(pairs)} pairs ({args.pairs} genuine, {args.pairs} impostor) of {people} people in "
          f"{NUM_FOLDS} identity-disjoint folds; next: python -m zoo.evaluate --model zoo --protocol {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
