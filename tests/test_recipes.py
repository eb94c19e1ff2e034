"""Every recipe in tasks/ loads strictly against its task, and holds only what differs from the built-in
defaults: the config dataclasses are the one source of every value, so no test keeps two copies equal."""

from pathlib import Path

import pytest

from scrapvision.api import build_task
from scrapvision.cli import main
from scrapvision.config import read_yaml, to_dict

TASKS_DIR = Path(__file__).resolve().parents[1] / "tasks"
RECIPES = sorted(TASKS_DIR.glob("*.yaml"))
CPU_RECIPES = [p for p in RECIPES if "-" not in p.stem]  # <task>.yaml; <task>-paper / -new-set are variants


def task_of(path: Path) -> str:
    return path.stem.split("-")[0]


@pytest.mark.parametrize("path", RECIPES, ids=[p.name for p in RECIPES])
def test_recipe_loads(path):
    task = build_task(task_of(path), config=path)
    assert task.name == task_of(path)


@pytest.mark.parametrize("path", CPU_RECIPES, ids=lambda p: p.name)
def test_cpu_recipe_restates_no_default(path):
    """The CPU recipe is the defaults, so its file sets no key: a key here would be a second copy of a value
    (or a CPU recipe that ``scrapvision train --task X`` without ``--config`` does not run)."""
    assert read_yaml(path) == {}, f"{path.name}: set values in the task's config dataclass, not here"


@pytest.mark.parametrize("path", CPU_RECIPES, ids=lambda p: p.name)
def test_config_command_prints_the_full_recipe(path, capsys):
    import yaml

    name = task_of(path)
    assert main(["config", "--task", name, "--config", str(path)]) == 0
    assert yaml.safe_load(capsys.readouterr().out) == to_dict(build_task(name).cfg)
