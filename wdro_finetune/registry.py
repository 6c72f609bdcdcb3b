"""One small generic registry: name -> object, with duplicate detection and close-match hints."""

from __future__ import annotations

import difflib
from typing import Callable, Generic, Iterator, TypeVar

from .errors import UserError

T = TypeVar("T")


def closest_names(name: str, candidates: list[str], n: int = 3) -> list[str]:
    """Up to ``n`` candidates that look like ``name`` (case-insensitive)."""
    lowered = {c.lower(): c for c in candidates}
    hits = difflib.get_close_matches(name.lower(), list(lowered), n=n, cutoff=0.5)
    return [lowered[h] for h in hits]


def unknown_name_message(kind: str, name: str, candidates: list[str]) -> str:
    """One-line message for an unknown name, suggesting the closest known ones."""
    hints = closest_names(name, candidates)
    hint = f"; did you mean {', '.join(hints)}?" if hints else ""
    return f"unknown {kind} {name!r}{hint}"


class Registry(Generic[T]):
    """Maps names to entries (factories, metric classes, ...). Registering a name twice is an error."""

    def __init__(self, kind: str):
        self.kind = kind
        self._entries: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        """Decorator: ``@registry.register("name")``."""

        def add(entry: T) -> T:
            self.add(name, entry)
            return entry

        return add

    def add(self, name: str, entry: T) -> None:
        if name in self._entries:
            raise ValueError(f"{self.kind} {name!r} registered twice")
        self._entries[name] = entry

    def get(self, name: str) -> T:
        """The entry for ``name``; UserError with close matches if unknown."""
        try:
            return self._entries[name]
        except KeyError:
            raise UserError(unknown_name_message(self.kind, name, list(self._entries))) from None

    def names(self) -> list[str]:
        return sorted(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())
