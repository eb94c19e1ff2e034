"""Rewrite KolektorSDD (``kosNN/PartK.jpg`` + ``PartK_label.bmp``) into the generic folder layout.

    python benchmarks/kolektor_to_folder.py /data/KolektorSDD /data/kolektor_folder

Images are copied byte for byte to ``images/kosNN/PartK.jpg``; each defective part's label becomes a
0/255 ``masks/kosNN/PartK.png`` (defect-free parts get no mask); ``labels.csv`` gives every image its
label and its group, the physical commutator, with the two duplicated items joined to their originals so
no fold separates a copy from its original. The same recipe converts any set with per-image masks.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from scrapvision.data.kolektor import item_group, list_kolektor, read_kolektor_mask  # noqa: E402


def convert(source: Path, target: Path) -> Path:
    """Write the folder layout of KolektorSDD ``source`` into ``target``; returns ``target``."""
    rows = ["image,label,group"]
    for item in list_kolektor(source):
        name = f"{item.item}/{item.part}"
        image = target / "images" / f"{name}{item.image.suffix}"
        image.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(item.image, image)
        if item.defective:
            mask = target / "masks" / f"{name}.png"
            mask.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(read_kolektor_mask(item.mask).astype(np.uint8) * 255).save(mask)
        rows.append(f"{name}{item.image.suffix},{int(item.defective)},{item_group(item.item)}")
    (target / "labels.csv").write_text("\n".join(rows) + "\n")
    return target


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("source", type=Path, help="KolektorSDD folder (kos01 ... kos50)")
    parser.add_argument("target", type=Path, help="new folder for images/, masks/, labels.csv")
    args = parser.parse_args()
    print(f"wrote {convert(args.source, args.target)}")


if __name__ == "__main__":
    main()
