"""A name -> object registry. ``BACKBONES`` and ``TASKS`` are its only two instances."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any, TypeVar

from .errors import ScrapvisionError

T = TypeVar("T")


class Registry:
    """Maps names to classes or factories; duplicates and unknown names are errors that list the known names."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._items: dict[str, Any] = {}

    def register(self, name: str | None = None) -> Callable[[T], T]:
        """Decorator: ``@TASKS.register("severstal")`` (the object's ``__name__`` when no name is given)."""

        def add(obj: T) -> T:
            key = name or obj.__name__  # type: ignore[attr-defined]
            if key in self._items:
                raise ScrapvisionError(f"{self.kind} {key!r} is already registered (by {self._items[key]!r})")
            self._items[key] = obj
            return obj

        return add

    def get(self, name: str) -> Any:
        if name not in self._items:
            known = ", ".join(sorted(self._items)) or "none"
            raise ScrapvisionError(f"unknown {self.kind} {name!r}; known: {known}")
        return self._items[name]

    def unregister(self, name: str) -> None:
        """Remove a name (for tests and plug-ins that replace a head)."""
        self._items.pop(name, None)

    def names(self) -> list[str]:
        return sorted(self._items)

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self._items)

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}, {self.names()})"


BACKBONES = Registry("backbone")
TASKS = Registry("task")
