"""Where the scrap_cls benchmarks write: their JSON in ``RESULTS``, their sections in ``MARKDOWN``
(each script owns one ``scrap_cls:<key>`` block, written with ``bench_env.write_section``)."""

from __future__ import annotations

from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"
MARKDOWN = RESULTS / "scrap_cls.md"
