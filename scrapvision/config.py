"""YAML -> frozen dataclasses, with strict key and type checking and ``--set a.b=v`` overrides.

Every task owns a root config dataclass whose fields are nested frozen dataclasses. Reading is strict:
an unknown key, a wrong type or a bad choice is a ``ConfigError`` naming the dotted key.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TypeVar, Union, get_args, get_origin, get_type_hints

import yaml

from .errors import ConfigError, first_line

C = TypeVar("C")


@dataclass(frozen=True)
class OptimConfig:
    """Optimiser and schedule shared by every task (AdamW + warm-up + cosine decay)."""

    lr: float = 1e-3
    weight_decay: float = 1e-4
    grad_clip: float = 1.0  # max gradient norm; 0 disables clipping
    warmup_epochs: float = 0.0
    min_lr_ratio: float = 0.01  # cosine decays to lr * min_lr_ratio
    # lr multiplier of the pretrained part (the model's ``backbone`` or ``encoder``, what ``model.weights``
    # loads); 0 freezes it. A few hundred labelled images can wash out weights pretrained on thousands,
    # so fine-tuning often moves the backbone slower than the new head (1 = one lr for everything)
    backbone_lr_scale: float = 1.0


@dataclass(frozen=True)
class TrainConfig:
    """How the one Trainer runs: epochs, batches, seed, device, where runs go."""

    epochs: int = 5
    batch_size: int = 8
    eval_batch_size: int = 0  # 0 -> same as batch_size
    num_workers: int = 0
    seed: int = 0
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    amp: bool = True  # mixed precision, only ever used on CUDA
    out_dir: str = "runs"
    eval_every: int = 1  # epochs between validations
    log_every: int = 10  # steps between metric lines
    logger: Literal["csv", "tensorboard", "mlflow"] = "csv"  # also log epochs there (scrapvision/loggers.py)
    # exponential moving average of the weights (0 = off; 0.99-0.9999, longer runs higher): validation, best.pt
    # and last.pt use the averaged weights, which move less from epoch to epoch than the trained ones on a
    # small validation set; the first updates average faster (decay min(d, (1 + n) / (10 + n)) at update n)
    ema_decay: float = 0.0



def _quoted(key: str) -> str:
    """A key read from a user's file, quoted for a one-line error: escaped when it holds a line break or
    another unprintable character (a YAML key may be any string)."""
    return f"'{key}'" if key.isprintable() else repr(key)

def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _coerce(value: Any, tp: Any, key: str) -> Any:
    """Check ``value`` against annotation ``tp``; return it converted (lists -> tuples, int -> float)."""
    origin = get_origin(tp)
    if tp is Any:
        return value
    if dataclasses.is_dataclass(tp):
        if isinstance(value, tp):
            return value
        if not isinstance(value, dict):
            raise ConfigError(f"config key '{key}': expected a mapping for {tp.__name__}, got {value!r}")
        return from_dict(tp, value, prefix=key)
    if origin in (Union, types.UnionType):
        args = get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, key)
            except ConfigError as exc:
                errors.append(str(exc))
        raise ConfigError(f"config key '{key}': {value!r} is not {_type_name(tp)}")
    if origin is Literal:
        choices = get_args(tp)
        if value not in choices:
            raise ConfigError(f"config key '{key}': {value!r} is not one of {list(choices)}")
        return value
    if origin in (tuple, list):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"config key '{key}': expected a list, got {value!r}")
        args = get_args(tp)
        if origin is tuple and args and args[-1] is not Ellipsis:
            if len(args) != len(value):
                raise ConfigError(f"config key '{key}': expected {len(args)} items, got {len(value)}")
            return tuple(_coerce(v, a, f"{key}[{i}]") for i, (a, v) in enumerate(zip(args, value)))
        item_tp = args[0] if args else Any
        return tuple(_coerce(v, item_tp, f"{key}[{i}]") for i, v in enumerate(value))
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"config key '{key}': expected a mapping, got {value!r}")
        return dict(value)
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"config key '{key}': expected true/false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"config key '{key}': expected an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, str):  # PyYAML reads "3e-4" (no dot) as a string
            try:
                value = float(value)
            except ValueError:
                pass
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"config key '{key}': expected a number, got {value!r}")
        if not math.isfinite(float(value)):
            raise ConfigError(f"config key '{key}': expected a finite number, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"config key '{key}': expected a string, got {value!r}")
        return value
    raise ConfigError(f"config key '{key}': unsupported type {_type_name(tp)}")


def from_dict(cls: type[C], data: dict[str, Any], prefix: str = "") -> C:
    """Build dataclass ``cls`` from a mapping; every key must be a field, every value of its type."""
    if not isinstance(data, dict):
        raise ConfigError(f"config key '{prefix or '<root>'}': expected a mapping, got {data!r}")
    hints = get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    kwargs = {}
    for key, value in data.items():
        dotted = f"{prefix}.{key}" if prefix else str(key)
        if key not in fields:
            raise ConfigError(f"unknown config key {_quoted(dotted)}; known: {', '.join(sorted(fields))}")
        kwargs[key] = _coerce(value, hints[key], dotted)
    try:
        return cls(**kwargs)
    except ConfigError:
        raise
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"config '{prefix or '<root>'}': {first_line(exc)}") from None


def to_dict(cfg: Any) -> dict[str, Any]:
    """Plain dict of a config (tuples become lists) for YAML and checkpoints."""

    def plain(v: Any) -> Any:
        if isinstance(v, (tuple, list)):
            return [plain(x) for x in v]
        if isinstance(v, dict):
            return {k: plain(x) for k, x in v.items()}
        return v

    return plain(dataclasses.asdict(cfg))


def parse_override(text: str) -> tuple[list[str], Any]:
    """``"optim.lr=3e-4"`` -> (["optim", "lr"], 0.0003); the value is read as YAML."""
    if "=" not in text:
        raise ConfigError(f"--set {text!r}: expected key=value, e.g. --set optim.lr=3e-4")
    key, raw = text.split("=", 1)
    key = key.strip()
    if not key or any(not part for part in key.split(".")):
        raise ConfigError(f"--set {text!r}: empty key")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    return key.split("."), value


def _merge(base: dict[str, Any], path: list[str], value: Any) -> None:
    node = base
    for i, part in enumerate(path[:-1]):
        child = node.get(part)
        if not isinstance(child, dict):
            dotted = ".".join(path[: i + 1])
            raise ConfigError(f"--set {'.'.join(path)}: '{dotted}' is not a config section")
        node = child
    if path[-1] not in node:
        raise ConfigError(f"unknown config key {_quoted('.'.join(path))}; known: {', '.join(sorted(node))}")
    node[path[-1]] = value


def read_yaml(path: str | Path) -> dict[str, Any]:
    """Read a YAML mapping; a missing file or bad YAML is a one-line ConfigError naming the file."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {path}: not found")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise ConfigError(f"config file {path}: not valid YAML ({first_line(exc)})") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path}: expected a mapping at the top level")
    return data


def _deep_update(base: dict[str, Any], new: dict[str, Any], prefix: str = "") -> None:
    for key, value in new.items():
        dotted = f"{prefix}.{key}" if prefix else str(key)
        if key not in base:
            raise ConfigError(f"unknown config key {_quoted(dotted)}; known: {', '.join(sorted(base))}")
        if isinstance(base[key], dict) and isinstance(value, dict):
            _deep_update(base[key], value, dotted)
        else:
            base[key] = value


def load_config(
    cls: type[C],
    path: str | Path | None = None,
    overrides: typing.Sequence[str] = (),
    base: C | dict[str, Any] | None = None,
) -> C:
    """Defaults of ``cls`` (or ``base``) <- YAML file <- ``--set`` overrides, checked strictly at each layer."""
    if base is None:
        data = to_dict(cls())
    elif isinstance(base, dict):
        data = to_dict(from_dict(cls, base))
    else:
        data = to_dict(base)
    if path is not None:
        source = str(path)
        try:
            _deep_update(data, read_yaml(path))
        except ConfigError as exc:
            msg = str(exc)
            raise ConfigError(msg if msg.startswith("config file") else f"{source}: {msg}") from None
    for text in overrides:
        keys, value = parse_override(text)
        _merge(data, keys, value)
    return from_dict(cls, data)


def save_config(cfg: Any, path: str | Path) -> None:
    Path(path).write_text(yaml.safe_dump(to_dict(cfg), sort_keys=False), encoding="utf-8")


__all__ = [
    "OptimConfig",
    "TrainConfig",
    "field",
    "from_dict",
    "load_config",
    "parse_override",
    "read_yaml",
    "save_config",
    "to_dict",
]
