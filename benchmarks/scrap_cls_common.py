"""Shared by the scrap_cls benchmarks: put one script's section into benchmarks/results/scrap_cls.md."""

from __future__ import annotations

import re
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"


def update_section(key: str, text: str, path: Path = RESULTS / "scrap_cls.md") -> Path:
    """Replace (or append) the block between ``<!-- scrap_cls:KEY -->`` markers, keeping the others."""
    begin, end = f"<!-- scrap_cls:{key} -->", f"<!-- /scrap_cls:{key} -->"
    block = f"{begin}\n{text.strip()}\n{end}"
    old = path.read_text() if path.exists() else "# scrap_cls benchmark results\n"
    pattern = re.compile(re.escape(begin) + ".*?" + re.escape(end), re.S)
    new = pattern.sub(lambda _: block, old) if pattern.search(old) else old.rstrip() + "\n\n" + block + "\n"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(new)
    return path
