"""Name-to-class registries (attacks, defenses, architectures, datasets) used by the CLI and the evaluation engine."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

from advlab import validation

T = TypeVar("T")


class Registry(Generic[T]):
    """A mapping from lower-case names to objects, with helpful errors for unknown names.

    Examples:
        >>> ATTACKS = Registry("attack")
        >>> @ATTACKS.register("pgd")
        ... class PGD: ...
        >>> ATTACKS.get("pgd")
    """

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._items: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        def deco(obj: T) -> T:
            key = name.lower()
            if key in self._items and self._items[key] is not obj:
                raise ValueError(f"{self.kind} {name!r} is registered twice")
            self._items[key] = obj
            return obj

        return deco

    def get(self, name: str) -> T:
        if not isinstance(name, str):
            raise TypeError(f"{self.kind}: expected a name (str), got {type(name).__name__}")
        key = name.lower()
        if key not in self._items:
            raise ValueError(
                f"{self.kind}: unknown name {name!r}; available: {', '.join(sorted(self._items))}."
                + validation.did_you_mean(key, self._items)
            )
        return self._items[key]

    def names(self) -> list[str]:
        return sorted(self._items)

    def values(self) -> Iterator[T]:
        return (v for _, v in self.items())

    def items(self) -> Iterator[tuple[str, T]]:
        return iter(sorted(self._items.items()))

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name.lower() in self._items

    def __len__(self) -> int:
        return len(self._items)
