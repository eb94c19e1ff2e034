"""Every recipe in tasks/ loads strictly against its task, and <task>.yaml is exactly the built-in default."""

from pathlib import Path

import pytest

from scrapvision.api import build_task

TASKS_DIR = Path(__file__).resolve().parents[1] / "tasks"
RECIPES = sorted(TASKS_DIR.glob("*.yaml"))


def task_of(path: Path) -> str:
    return path.stem.removesuffix("-paper")


@pytest.mark.parametrize("path", RECIPES, ids=[p.name for p in RECIPES])
def test_recipe_loads(path):
    task = build_task(task_of(path), config=path)
    assert task.name == task_of(path)


@pytest.mark.parametrize("path", [p for p in RECIPES if not p.stem.endswith("-paper")], ids=lambda p: p.name)
def test_cpu_recipe_equals_builtin_default(path):
    name = task_of(path)
    assert build_task(name, config=path).cfg == build_task(name).cfg
