"""Named evaluation protocols and the FaceScope-small training split (see the data README).

Test protocols: `lfw-view1` (pairsDevTest, 500+500 pairs, stratified into 10 folds),
`cfp-ff` and `cfp-fp` (official 10 splits x 350+350), and `lfw-view2` (pairs.txt, 10 folds x
300+300: its people overlap FaceScope-small's training people, so it is only for models
trained elsewhere). Any other name is read as a pair-list file.

The training split is built so that it cannot share an identity with the test protocols:
`facescope_small_train` checks that itself and raises if it ever would.
"""
from __future__ import annotations

from pathlib import Path
from typing import List, Optional, Tuple

from .errors import DataError, FormatError, PathLike, require_file
from .folder import ImageList
from .pairs import PairList, lfw_image_path, read_cfp_pairs, read_lfw_pairs, read_pairs
from .paths import data_root

TEST_PROTOCOLS = ("lfw-view1", "cfp-ff", "cfp-fp")
PROTOCOLS = TEST_PROTOCOLS + ("lfw-view2",)
CELEBA_PREFIX = "celeba_"


def load_protocol(name: str, root: Optional[PathLike] = None,
                  images_root: Optional[PathLike] = None) -> PairList:
    """A named protocol under the data root, or a pairs file (LFW-style or plain)."""
    base = data_root(root)
    if name == "lfw-view1":
        return read_lfw_pairs(base / "lfw" / "pairsDevTest.txt", base / "lfw" / "images", name="lfw-view1")
    if name == "lfw-view2":
        return read_lfw_pairs(base / "lfw" / "pairs.txt", base / "lfw" / "images", name="lfw-view2")
    if name in ("cfp-ff", "cfp-fp"):
        return read_cfp_pairs(base / "cfp", name[-2:])
    if not Path(name).is_file():
        raise DataError(f"not a protocol ({', '.join(PROTOCOLS)}) and not an existing pairs file", name)
    return read_pairs(name, images_root)


def _name_counts(path: Path) -> List[Tuple[str, int, int]]:
    """`peopleDevTrain.txt`-style `NAME COUNT` lines (first line: the number of people)."""
    lines = [(n, l.split()) for n, l in enumerate(require_file(path, "LFW people file").read_text().splitlines(), 1)
             if l.strip()]
    people = []
    for number, fields in lines[1:]:
        if len(fields) != 2 or not fields[1].isdigit():
            raise FormatError(f"expected 'NAME COUNT', got {' '.join(fields)!r}", path, number)
        people.append((fields[0], int(fields[1]), number))
    return people


def read_celeba(celeba_root: PathLike) -> List[Tuple[Path, str]]:
    """(image path, identity) from `identity.txt` lines `FILE ID`; identities named celeba_ID."""
    root = Path(celeba_root)
    listing = require_file(root / "identity.txt", "CelebA identity file")
    items = []
    for number, line in enumerate(listing.read_text().splitlines(), 1):
        if not line.strip():
            continue
        fields = line.split()
        if len(fields) != 2 or not fields[1].isdigit():
            raise FormatError(f"expected 'FILE IDENTITY', got {line!r}", listing, number)
        items.append((root / "images" / fields[0], CELEBA_PREFIX + fields[1]))
    return items


def cfp_names(root: Optional[PathLike] = None) -> List[str]:
    """CFP's 500 names in LFW spelling (spaces -> underscores)."""
    listing = require_file(data_root(root) / "cfp" / "Data" / "list_name.txt", "CFP name list")
    return [l.strip().replace(" ", "_") for l in listing.read_text().splitlines() if l.strip()]


def facescope_small_train(root: Optional[PathLike] = None) -> ImageList:
    """LFW peopleDevTrain people with >= 2 images, minus cfp_lfw_overlap names, plus CelebA.

    Raises DataError if the result shares an identity with LFW View 1 test or CFP.
    """
    base = data_root(root)
    overlap_file = require_file(base / "cfp_lfw_overlap.txt", "CFP/LFW overlap list")
    overlap = {l.strip() for l in overlap_file.read_text().splitlines() if l.strip()}
    items = []
    for name, count, _ in _name_counts(base / "lfw" / "peopleDevTrain.txt"):
        if count >= 2 and name not in overlap:
            items.extend((lfw_image_path(base / "lfw" / "images", name, k), name) for k in range(1, count + 1))
    items.extend(read_celeba(base / "celeba"))
    train = ImageList.from_pairs(items, "facescope-small-train")
    assert_disjoint(train.identities(), load_protocol("lfw-view1", base).identities, "lfw-view1")
    assert_disjoint(train.identities(), set(cfp_names(base)), "cfp")
    return train


def assert_disjoint(train_identities, test_identities, test_name: str) -> None:
    """Raise if a training identity is also a test identity (the split would leak)."""
    shared = sorted(set(train_identities) & set(test_identities))
    if shared:
        raise DataError(f"{len(shared)} training identities also appear in {test_name}, "
                        f"e.g. {', '.join(shared[:5])}", "facescope-small-train")
