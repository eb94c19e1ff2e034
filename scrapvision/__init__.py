"""scrapvision: industrial vision for metal recycling and steel making.

One backbone registry (``BACKBONES``) feeds pluggable task heads (``TASKS``); one ``Trainer`` trains them.
"""

import os

# albumentations 2.x asks PyPI for a newer version on every import (a 2 s network call, and a warning on
# a plant PC without internet); nothing here may reach the network at run time.
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

from .backbones import create_backbone  # noqa: E402
from .config import OptimConfig, TrainConfig, load_config
from .errors import ScrapvisionError
from .registry import BACKBONES, TASKS, Registry
from .task import Task
from .trainer import Trainer

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
    """The registered Task class ``name`` (built-in heads are imported on first use)."""
    from .heads import load_all

    load_all()
    return TASKS.get(name)
