"""One small registry for every pluggable kind (proxies, recorders, tasks, datasets, models).

Four hand-rolled dicts used to behave four ways on a name clash (overwrite silently, drop a plugin
without a word, ...). A clash is a programming error inside memprox and a user-visible surprise
for a plugin, so registering a taken name raises unless the caller opts into replacing it.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Generic, TypeVar

from harness.errors import HarnessError

T = TypeVar("T")


class Registry(Generic[T]):
    """Name -> object, refusing clashes; `kind` names what is registered in error messages."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._items: dict[str, T] = {}

    def register(self, name: str, item: T, *, replace: bool = False) -> T:
        if not name:
            raise TypeError(f"a {self.kind} needs a non-empty name")
        if name in self._items and not replace and self._items[name] is not item:
            raise ValueError(f"{self.kind} {name!r} is already registered ({self._items[name]!r}); "
                             "pick another name or pass replace=True")
        self._items[name] = item
        return item

    def get(self, name: str) -> T:
        """The item, or a HarnessError that lists the valid names (bad user input, exit 2)."""
        if name not in self._items:
            raise HarnessError(f"unknown {self.kind} {name!r}; valid: {', '.join(sorted(self._items)) or 'none'}")
        return self._items[name]

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def __getitem__(self, name: str) -> T:
        return self._items[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)

    def items(self):
        return self._items.items()

    def keys(self):
        return self._items.keys()

    def values(self):
        return self._items.values()
