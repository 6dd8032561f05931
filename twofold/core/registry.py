"""Registries with exact names: an unknown name is an error listing the known ones."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Generic, TypeVar

from twofold.core.errors import UnknownNameError

T = TypeVar("T")


class Registry(Generic[T]):
    """A name -> value map that never guesses: no substrings, no ``None``."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._items: dict[str, T] = {}

    def register(self, name: str, value: T) -> T:
        if name in self._items:
            raise ValueError(f"{self.kind} {name!r} registered twice")
        self._items[name] = value
        return value

    def get(self, name: str) -> T:
        try:
            return self._items[name]
        except KeyError:
            raise UnknownNameError(self.kind, name, list(self._items)) from None

    def names(self) -> list[str]:
        return list(self._items)

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self._items)
