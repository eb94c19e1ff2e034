"""Task heads. Importing this package registers every head in it (one module per head) and those that
installed packages declare in the ``scrapvision.tasks`` entry-point group."""

from __future__ import annotations

import importlib
import pkgutil
from importlib.metadata import entry_points

from ..errors import ScrapvisionError, first_line

_loaded = False


def load_all() -> None:
    """Import every head module in this package, then entry-point plug-ins (idempotent)."""
    global _loaded
    if _loaded:
        return
    _loaded = True
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
        if not info.name.startswith("_"):
            importlib.import_module(f"{__name__}.{info.name}")
    for ep in entry_points(group="scrapvision.tasks"):
        try:
            ep.load()
        except Exception as exc:  # noqa: BLE001 - a broken plug-in must not break the built-in heads
            raise ScrapvisionError(f"plug-in head {ep.name!r} ({ep.value}) failed to load: {first_line(exc)}") from None
