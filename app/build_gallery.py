"""Build the app's bundled data from the shared face data: the labelled gallery and the examples.

    python -m app.build_gallery            # writes app/gallery/ and app/examples/

Gallery (the Embeddings tab's map): aligned 112x112 crops of ten people of LFW View 1's test
half (`pairsDevTest.txt`, identity-disjoint from FaceScope-small's training people), six
photos each, picked by hand for variety of age, sex and skin tone. Crops are stored as JPEG
(quality 92) in `gallery/<Person_Name>/`: 60 lossless PNGs would be over a megabyte, and a
map of where faces land does not need the last bit of every pixel.

Examples (the Verify tab's bundled photos), copied unchanged: two more photos of a gallery
person (so they land in that person's cluster), one of another person, a CelebA photo with a
36-pixel face and a CFP profile.
"""
from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

from PIL import Image

from zoo.data import DEFAULT_ALIGNER, Aligner, aligner_names, data_root, load_image, make_aligner

APP = Path(__file__).resolve().parent
GALLERY = APP / "gallery"
EXAMPLES = APP / "examples"
PEOPLE = ("Abdullah_Gul", "Amelie_Mauresmo", "Condoleezza_Rice", "Gerhard_Schroeder", "Jennifer_Capriati",
          "Jiang_Zemin", "Jimmy_Carter", "Leonardo_DiCaprio", "Muhammad_Ali", "Nancy_Pelosi")
PER_PERSON = 6
JPEG_QUALITY = 92
# name in app/examples -> path under the data root
EXAMPLE_SOURCES = {
    "leonardo_dicaprio_1.jpg": "lfw/images/Leonardo_DiCaprio/Leonardo_DiCaprio_0008.jpg",
    "leonardo_dicaprio_2.jpg": "lfw/images/Leonardo_DiCaprio/Leonardo_DiCaprio_0009.jpg",
    "condoleezza_rice.jpg": "lfw/images/Condoleezza_Rice/Condoleezza_Rice_0011.jpg",
    "celeba_small_face.jpg": "celeba/images/001941.jpg",
    "cfp_profile.jpg": "cfp/Data/Images/001/profile/01.jpg",
}


def check_people(lfw: Path) -> None:
    """Refuse gallery people outside pairsDevTest.txt: the gallery must be unseen in training."""
    test_people = set()
    for line in (lfw / "pairsDevTest.txt").read_text().splitlines()[1:]:
        fields = line.split("\t")
        test_people.update([fields[0]] + ([fields[2]] if len(fields) == 4 else []))
    outside = sorted(set(PEOPLE) - test_people)
    if outside:
        raise SystemExit(f"not in pairsDevTest.txt: {', '.join(outside)}")


def build_gallery(root: Path, aligner: Aligner) -> int:
    """Align the first PER_PERSON photos of each person whose face is found; returns the count."""
    lfw = root / "lfw"
    check_people(lfw)
    example_files = {Path(source).name for source in EXAMPLE_SOURCES.values()}
    shutil.rmtree(GALLERY, ignore_errors=True)
    count = 0
    for person in PEOPLE:
        kept = 0
        for path in sorted((lfw / "images" / person).glob("*.jpg")):
            if kept == PER_PERSON:
                break
            if path.name in example_files:
                continue
            face = aligner.align(load_image(path), assume_aligned=False)
            if face.fallback:
                print(f"skipped {path.name}: no face found", file=sys.stderr)
                continue
            out = GALLERY / person / f"{path.stem}.jpg"
            out.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(face.image).save(out, quality=JPEG_QUALITY)
            kept += 1
        if kept < PER_PERSON:
            raise SystemExit(f"{person}: only {kept} photos with a detectable face, need {PER_PERSON}")
        count += kept
    return count


def copy_examples(root: Path, aligner: Aligner) -> None:
    """Copy the example photos, checking each has a detectable face."""
    EXAMPLES.mkdir(parents=True, exist_ok=True)
    for name, source in EXAMPLE_SOURCES.items():
        path = root / source
        faces = aligner.detect(load_image(path))
        if not faces:
            raise SystemExit(f"example {path}: no face found")
        shutil.copyfile(path, EXAMPLES / name)
        print(f"{name}: {len(faces)} face(s), {faces[0].detector}, from {source}")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m app.build_gallery", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-root", type=Path, default=None, help="shared data (default ../shared/data)")
    parser.add_argument("--aligner", choices=aligner_names(), default=DEFAULT_ALIGNER,
                        help=f"face detector + landmarks (default {DEFAULT_ALIGNER}, the app's default)")
    args = parser.parse_args(argv)
    root = data_root(args.data_root)
    aligner = make_aligner(args.aligner)
    count = build_gallery(root, aligner)
    copy_examples(root, aligner)
    size = sum(p.stat().st_size for p in GALLERY.rglob("*.jpg"))
    print(f"gallery: {count} faces of {len(PEOPLE)} people, {size / 1024:.0f} KB in {GALLERY}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
