"""Renders remembered by the identity of what they render.

The calculation hands out the very same (frozen) endpoint and policy objects while they do not change, so
a render can be found by `id()` without hashing the object (a deep hash of every rule, for every endpoint
and policy, on every apply, costs more than the render it saves). Entries hold their object, so an id is
never reused while cached; each `sweep()` keeps only what the last render used.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Generic, TypeVar

K = TypeVar("K")
V = TypeVar("V")


class IdentityCache(Generic[K, V]):
    def __init__(self, render: Callable[[K], V]) -> None:
        self._render = render
        self._entries: dict[int, tuple[K, V]] = {}
        self._used: dict[int, tuple[K, V]] = {}

    def __call__(self, key: K) -> V:
        hit = self._entries.get(id(key)) or self._used.get(id(key))
        value = hit[1] if hit is not None and hit[0] is key else self._render(key)
        self._used[id(key)] = (key, value)
        return value

    def sweep(self) -> None:
        self._entries = self._used
        self._used = {}
