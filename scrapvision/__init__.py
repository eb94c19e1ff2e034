"""scrapvision: industrial vision for metal recycling and steel making.

One backbone registry (``BACKBONES``) feeds pluggable task heads (``TASKS``); one ``Trainer`` trains them.
"""

from __future__ import annotations

import os

# albumentations 2.x asks PyPI for a newer version on every import (a 2 s network call, and a warning on
# a plant PC without internet); nothing here may reach the network at run time.
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

from typing import TYPE_CHECKING

from .config import OptimConfig, TrainConfig, load_config  # noqa: E402  (torch-free)
from .errors import ScrapvisionError  # noqa: E402
from .registry import TASKS, Registry  # noqa: E402

if TYPE_CHECKING:
    from .backbones import create_backbone
    from .registry import BACKBONES
    from .task import Task
    from .trainer import Trainer

# torch and timm take seconds to import: the names that need them load on first use (PEP 562), so that
# `scrapvision --help` and the CLI's argument errors answer at once
# (module to import first, module that holds the name): importing .backbones fills the BACKBONES registry
_LAZY = {"BACKBONES": (".backbones", ".registry"), "create_backbone": (".backbones", ".backbones"),
         "Task": (".task", ".task"), "Trainer": (".trainer", ".trainer")}


def __getattr__(name: str) -> object:
    if name not in _LAZY:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import importlib

    first, holder = _LAZY[name]
    importlib.import_module(first, __name__)
    value = getattr(importlib.import_module(holder, __name__), name)
    globals()[name] = value
    return value


__version__ = "0.1.0"

__all__ = [
    "BACKBONES",
    "TASKS",
    "OptimConfig",
    "Registry",
    "ScrapvisionError",
    "Task",
    "TrainConfig",
    "Trainer",
    "create_backbone",
    "get_task",
    "load_config",
]


def get_task(name: str) -> type[Task]:
    """The registered Task class ``name``. A built-in head imports only its own module (the others pull in
    open_clip, segmentation_models_pytorch, ...: seconds); any other name loads every head and plug-in."""
    import importlib

    from .catalog import TASK_SUMMARIES

    if name not in TASKS and name in TASK_SUMMARIES:
        importlib.import_module(f".heads.{name}", __name__)
    if name not in TASKS:
        from .heads import load_all

        load_all()
    return TASKS.get(name)
