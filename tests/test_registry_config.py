from dataclasses import dataclass, field
from typing import Literal

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from scrapvision.config import OptimConfig, TrainConfig, from_dict, load_config, parse_override, to_dict
from scrapvision.errors import ConfigError, ScrapvisionError
from scrapvision.registry import Registry


def test_registry_register_get_and_errors():
    reg = Registry("widget")

    @reg.register("a")
    class A:
        pass

    assert reg.get("a") is A
    assert "a" in reg and reg.names() == ["a"]
    with pytest.raises(ScrapvisionError, match="already registered"):
        reg.register("a")(A)
    with pytest.raises(ScrapvisionError, match=r"unknown widget 'b'; known: a"):
        reg.get("b")


@dataclass(frozen=True)
class Model:
    backbone: str = "tiny_cnn"
    channels: tuple[int, ...] = (8, 16)
    mode: Literal["unet", "fpn"] = "unet"
    dropout: float | None = None


@dataclass(frozen=True)
class Root:
    model: Model = field(default_factory=Model)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)


def test_load_yaml_and_overrides(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump({"model": {"channels": [4, 8, 16], "mode": "fpn"}, "optim": {"lr": 1}}))
    cfg = load_config(Root, path, ["optim.lr=3e-4", "train.epochs=2", "model.dropout=0.1"])
    assert cfg.model.channels == (4, 8, 16) and cfg.model.mode == "fpn"
    assert cfg.optim.lr == pytest.approx(3e-4) and isinstance(cfg.optim.lr, float)
    assert cfg.train.epochs == 2 and cfg.model.dropout == pytest.approx(0.1)
    assert load_config(Root, base=to_dict(cfg)) == cfg


@pytest.mark.parametrize(
    ("yaml_text", "message"),
    [
        ("model: {backbon: x}", "unknown config key 'model.backbon'"),
        ("optim: {lr: fast}", "config key 'optim.lr': expected a number"),
        ("train: {epochs: 1.5}", "config key 'train.epochs': expected an integer"),
        ("model: {mode: deeplab}", "config key 'model.mode': 'deeplab' is not one of"),
        ("model: [1, 2]", "config key 'model'"),
        ("train: {amp: 'yes'}", "config key 'train.amp': expected true/false"),
        ("{{{", "not valid YAML"),
    ],
)
def test_bad_yaml_is_one_line_error_naming_the_key(tmp_path, yaml_text, message):
    path = tmp_path / "bad.yaml"
    path.write_text(yaml_text)
    with pytest.raises(ConfigError) as info:
        load_config(Root, path)
    assert message in str(info.value)
    assert "\n" not in str(info.value)


def test_missing_file_and_bad_override():
    with pytest.raises(ConfigError, match="nope.yaml: not found"):
        load_config(Root, "nope.yaml")
    with pytest.raises(ConfigError, match="unknown config key 'optim.lrr'"):
        load_config(Root, None, ["optim.lrr=1"])
    with pytest.raises(ConfigError, match="expected key=value"):
        load_config(Root, None, ["optim.lr"])
    with pytest.raises(ConfigError, match="'optim.lr' is not a config section"):
        load_config(Root, None, ["optim.lr.x=1"])
    assert parse_override("a.b=[1, 2]") == (["a", "b"], [1, 2])


def test_configs_are_frozen():
    cfg = Root()
    with pytest.raises(AttributeError):
        cfg.optim.lr = 1.0  # type: ignore[misc]


yaml_scalars = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=True), st.text(max_size=8))
yaml_values = st.recursive(yaml_scalars, lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=6), c, max_size=3), max_leaves=8)


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(st.sampled_from(["model", "optim", "train", "x"]), yaml_values, max_size=3))
def test_fuzz_loader_only_raises_config_errors(data):
    try:
        cfg = from_dict(Root, data)
    except ConfigError as exc:
        assert "\n" not in str(exc)
    else:
        assert isinstance(cfg, Root)


def test_unknown_key_with_a_line_break_stays_one_line():
    """A YAML key may hold any character; hypothesis once found '\\n', which split the error in two."""
    with pytest.raises(ConfigError) as info:
        from_dict(Root, {"model": {"a\nb": 1}})
    assert "\n" not in str(info.value) and "'model.a\\nb'" in str(info.value)


@pytest.mark.parametrize("task, override, named", [
    ("segdec", "data.height=100", "data.height"),
    ("segdec", "data.fold=5", "data.fold"),
    ("segdec", "data.crop=7", "data.crop"),
    ("segdec", "data.val_fraction=0.9", "data.val_fraction"),
    ("clip_anomaly", "data.dilate=0", "data.dilate"),
    ("clip_anomaly", "few_shot.max_patches=-1", "few_shot.max_patches"),
    ("scrap_cls", "model.image_stats=true", "model.image_stats"),
    ("scrap_cls", "model.probe_fit=logreg", "model.probe_fit"),
    ("scrap_cls", "model.image_stats_lbp=true", "model.image_stats_lbp"),
])
def test_config_command_refuses_bad_data_keys_without_building_the_task(task, override, named, capsys):
    """These checks live in the config sections, so `scrapvision config` (no task built) refuses them in one line."""
    from scrapvision.cli import main

    assert main(["config", "--task", task, "--set", override]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("scrapvision: error:") and named in err[0], err
