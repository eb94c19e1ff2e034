"""Rewrite KolektorSDD2 (``train|test/NNNNN.png`` with ``NNNNN_GT.png``) into the generic folder layout.

    python benchmarks/ksdd2_to_folder.py /data/KolektorSDD2 /data/ksdd2_folder [--no-split]

Every KSDD2 image has a ground-truth file, empty for a defect-free image. Images go to
``images/train/NNNNN.png`` byte for byte (colour, as published; segdec reads them as grey); a non-empty
ground truth becomes ``masks/train/NNNNN.png`` (0/255); an empty one means defect-free and gets no mask.
``labels.csv`` keeps the official train / test split as its ``split`` column (``--no-split``:
cross-validate instead); each image is its own group (the release names no physical part).
"""

from __future__ import annotations

import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks.layout_writer import LayoutWriter, converter_parser, read_mask, run_converter  # noqa: E402
from scrapvision.errors import DataError  # noqa: E402

GT_SUFFIX = "_GT"


def pairs(folder: Path) -> list[tuple[Path, Path]]:
    """(image, ground truth) of one split folder; an image without its _GT file or the reverse is a DataError."""
    pngs = sorted(folder.glob("*.png"))
    images = {p.stem: p for p in pngs if not p.stem.endswith(GT_SUFFIX)}
    truths = {p.stem[: -len(GT_SUFFIX)]: p for p in pngs if p.stem.endswith(GT_SUFFIX)}
    for stem, truth in truths.items():
        if stem not in images:
            raise DataError(f"KSDD2 ground truth {truth}: no image {stem}.png beside it")
    for stem, image in images.items():
        if stem not in truths:
            raise DataError(f"KSDD2 image {image}: no ground truth {stem}{GT_SUFFIX}.png beside it")
    return [(images[s], truths[s]) for s in sorted(images, key=lambda s: (len(s), s))]


def convert(source: Path, target: Path, split: bool = True) -> Path:
    """Write the folder layout of KolektorSDD2 ``source`` (its train/ and test/ folders) into ``target``."""
    source = Path(source)
    writer = LayoutWriter(target, with_split=split)
    for part in ("train", "test"):
        folder = source / part
        if not folder.is_dir():
            raise DataError(f"KSDD2 {source}: missing folder {part}/")
        found = pairs(folder)
        if not found:
            raise DataError(f"KSDD2 {folder}: no images")
        for image, truth in found:
            mask = read_mask(truth)
            name = f"{part}/{image.stem}"
            writer.add(name, image, mask if mask.any() else None, group=name, split=part)
    return writer.close()


def main() -> None:
    parser = converter_parser(__doc__, "KolektorSDD2 folder holding train/ and test/",
                              "drop the official train/test split (cross-validate)")
    run_converter(parser, lambda args: convert(args.source, args.target, not args.no_split))


if __name__ == "__main__":
    main()
