"""Executors run the planned training runs. `LocalExecutor` runs them in this process, in order;
a distributed executor (Ray) plugs in behind the same `map` when one machine is not enough."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import Protocol, TypeVar

from tqdm.auto import tqdm

T = TypeVar("T")
R = TypeVar("R")


class Executor(Protocol):
    def map(self, fn: Callable[[T], R], items: Iterable[T], desc: str = "") -> Iterator[R]: ...


class LocalExecutor:
    def __init__(self, progress: bool = True) -> None:
        self.progress = progress

    def map(self, fn: Callable[[T], R], items: Iterable[T], desc: str = "") -> Iterator[R]:
        items = list(items)
        for item in tqdm(items, desc=desc, disable=not self.progress or not items):
            yield fn(item)
