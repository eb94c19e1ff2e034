"""Rewrite DAGM 2007 (``ClassN/Train|Test/NNNN.PNG``, ``Label/Labels.txt``, ``Label/NNNN_label.PNG``) into
the generic folder layout.

    python benchmarks/dagm_to_folder.py /data/DAGM /data/dagm_folder [--classes 1 2] [--no-split]
    python benchmarks/dagm_to_folder.py /data/dagm_flat /data/dagm_folder --unmasked good   # flat copies

``Labels.txt`` (tab-separated, one header line) has a row per image: index, defect flag 0/1, image file,
an unused 0, and the label file (0 when defect-free). Images go to ``images/ClassN/Train/NNNN.PNG`` byte for
byte; a defective image's ellipse label becomes ``masks/ClassN/Train/NNNN.png`` (0/255). ``labels.csv``
keeps the official Train / Test split as its ``split`` column (``--no-split``: cross-validate instead) and
makes each image its own group (DAGM images are separate renderings; numbers repeat across classes and
across Train / Test, so the names keep both).

Flat copies (``classN/NNNN.PNG`` with ``Label/`` or ``true_masks/NNNN_label.PNG`` beside the images and no
``Labels.txt``, as some re-uploads ship a few images) have no record of which unmasked images are defect-free,
so the converter asks: ``--unmasked good`` writes them as defect-free, ``--unmasked skip`` leaves them out.
Their images are named ``classN/NNNN`` and cross-validated (no split column).
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks.layout_writer import LayoutWriter, converter_parser, read_mask, run_converter  # noqa: E402
from scrapvision.errors import DataError  # noqa: E402

SPLITS = {"Train": "train", "Test": "test"}
MASK_FOLDERS = ("Label", "true_masks")  # the official name, and the one of flat re-uploads


def read_labels_txt(path: Path) -> list[tuple[str, bool, str]]:
    """(image file, defective, label file) per row of a DAGM ``Labels.txt``; a malformed row is a DataError."""
    if not path.is_file():
        raise DataError(f"DAGM labels {path}: missing (each ClassN/Train|Test needs Label/Labels.txt)")
    rows = []
    for number, line in enumerate(path.read_text(encoding="utf-8-sig").splitlines()[1:], start=2):
        if not line.strip():
            continue
        fields = line.split()
        if len(fields) != 5 or fields[1] not in ("0", "1"):
            raise DataError(f"DAGM labels {path}, line {number}: expected 5 fields 'index flag image 0 label' "
                            f"with flag 0/1, got {line.strip()!r}")
        rows.append((fields[2], fields[1] == "1", fields[4]))
    return rows


def class_folders(source: Path, classes: list[int] | None) -> list[Path]:
    if not source.is_dir():
        raise DataError(f"DAGM {source}: folder not found")
    found = sorted((p for p in source.iterdir() if re.fullmatch(r"class\d+", p.name, re.I) and p.is_dir()),
                   key=lambda p: int(p.name[5:]))
    if classes:
        missing = sorted(set(classes) - {int(p.name[5:]) for p in found})
        if missing:
            raise DataError(f"DAGM {source}: no folder Class{missing[0]}")
        found = [p for p in found if int(p.name[5:]) in classes]
    if not found:
        raise DataError(f"DAGM {source}: no ClassN folders")
    return found


def is_flat(class_dir: Path) -> bool:
    """Images directly in the class folder (a flat re-upload), not under Train/ and Test/."""
    return not any((class_dir / part).is_dir() for part in SPLITS)


def add_flat(writer: LayoutWriter, class_dir: Path, unmasked: str | None) -> None:
    """A flat class folder: a ``NNNN_label.PNG`` in Label/ or true_masks/ marks a defective image."""
    masks = next((class_dir / m for m in MASK_FOLDERS if (class_dir / m).is_dir()), class_dir / "Label")
    images = sorted(p for p in class_dir.iterdir() if p.is_file() and p.suffix.lower() == ".png")
    if not images:
        raise DataError(f"DAGM {class_dir}: neither Train/ and Test/ folders nor PNG images")
    for image in images:
        label = masks / f"{image.stem}_label{image.suffix}"
        mask = read_mask(label) if label.is_file() else None
        if mask is not None and not mask.any():
            raise DataError(f"DAGM label {label}: marks no defect pixel")
        if mask is None and unmasked is None:
            raise DataError(f"DAGM {class_dir}: no Labels.txt, so image {image.name} without a mask may be "
                            "defective or not; pass --unmasked good or --unmasked skip")
        if mask is None and unmasked == "skip":
            continue
        name = f"{class_dir.name}/{image.stem}"
        writer.add(name, image, mask, group=name)


def convert(source: Path, target: Path, classes: list[int] | None = None, split: bool = True,
            unmasked: str | None = None) -> Path:
    """Write the folder layout of DAGM ``source`` (its ClassN folders, or only ``classes``) into ``target``;
    ``unmasked`` (good / skip) says what an unmasked image of a flat class folder is."""
    folders = class_folders(Path(source), classes)
    writer = LayoutWriter(target, with_split=split and not all(is_flat(d) for d in folders))
    for class_dir in folders:
        if is_flat(class_dir):
            add_flat(writer, class_dir, unmasked)
            continue
        for part, split_name in SPLITS.items():
            folder = class_dir / part
            if not folder.is_dir():
                raise DataError(f"DAGM {class_dir}: missing folder {part}/")
            for image_name, defective, label_name in read_labels_txt(folder / "Label" / "Labels.txt"):
                image = folder / image_name
                if not image.is_file():
                    raise DataError(f"DAGM labels {folder / 'Label' / 'Labels.txt'}: image {image} does not exist")
                mask = None
                if defective:
                    label = folder / "Label" / label_name
                    if not label.is_file():
                        raise DataError(f"DAGM labels {folder / 'Label' / 'Labels.txt'}: defective {image_name} "
                                        f"has no label file {label}")
                    mask = read_mask(label)
                    if not mask.any():
                        raise DataError(f"DAGM label {label}: marks no defect pixel, but Labels.txt says defective")
                name = f"{class_dir.name}/{part}/{Path(image_name).stem}"
                writer.add(name, image, mask, group=name, split=split_name)
    return writer.close()


def main() -> None:
    parser = converter_parser(__doc__, "DAGM folder holding Class1 ... Class10",
                              "drop the official Train/Test split (cross-validate)")
    parser.add_argument("--classes", type=int, nargs="+", help="only these class numbers (default: all)")
    parser.add_argument("--unmasked", choices=("good", "skip"),
                        help="flat copies without Labels.txt: an image without a mask is defect-free, or left out")
    run_converter(parser, lambda args: convert(args.source, args.target, args.classes, not args.no_split,
                                               args.unmasked))


if __name__ == "__main__":
    main()
