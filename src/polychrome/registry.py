"""Name -> object registries, and the "did you mean" every name check shares.

Models, trainers, losses, schedules and metrics are each chosen by a name from a
config, a flag or a request. One `Registry` class holds each table: registration by
decorator (or `add`), lookup with a clear error that names the closest known name and
lists them all, and the listing itself.

    MODELS = Registry("model", error=ModelError, code="unknown_model", name_attr="name")

    @MODELS.register("dcgan")
    class DCGAN(GANModel): ...

    MODELS.get("dcgna")  # ModelError: unknown model 'dcgna' (did you mean 'dcgan'?); ...
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterable, Iterator
from typing import Any, Generic, TypeVar

from .errors import ConfigError, PolychromeError

T = TypeVar("T")


def closest(name: object, choices: Iterable[str]) -> str | None:
    """The known name `name` was most likely meant to be (a typo), or None."""
    found = difflib.get_close_matches(str(name), list(choices), n=1, cutoff=0.6)
    return found[0] if found else None


def did_you_mean(name: object, choices: Iterable[str]) -> str:
    """' (did you mean 'x'?)' when a known name is close to `name`, else ''."""
    match = closest(name, choices)
    return f" (did you mean {match!r}?)" if match is not None else ""


def unknown_name(kind: str, name: object, choices: Iterable[str], *,
                 plural: str | None = None) -> str:
    """The one-line message for a name that is not among `choices`."""
    choices = sorted(choices)
    known = ", ".join(choices) if choices else "(none)"
    return (f"unknown {kind} {name!r}{did_you_mean(name, choices)}; "
            f"known {plural or kind + 's'}: {known}")


class Registry(Generic[T]):
    """A named table of `kind`s (classes or functions).

    `error` / `code`: what `get` raises for an unknown name (a PolychromeError, so every
    surface shows it as a one-line message or a 4xx). `name_attr`: set this attribute of a
    registered object to its name (e.g. a model class's `name`), so the name is written
    once, at registration.
    """

    def __init__(self, kind: str, *, plural: str | None = None,
                 error: type[PolychromeError] = ConfigError, code: str | None = None,
                 name_attr: str | None = None):
        self.kind = kind
        self.plural = plural or kind + "s"
        self.error = error
        self.code = code
        self.name_attr = name_attr
        self._items: dict[str, T] = {}

    def add(self, name: str, obj: T) -> T:
        """Register `obj` under `name`; the same object again is a no-op (module reloads),
        another object under a taken name is a programming error."""
        if not isinstance(name, str) or not name:
            raise ValueError(f"a {self.kind} needs a non-empty string name, got {name!r}")
        if name in self._items and self._items[name] is not obj:
            raise ValueError(f"{self.kind} {name!r} registered twice")
        if self.name_attr is not None:
            setattr(obj, self.name_attr, name)
        self._items[name] = obj
        return obj

    def register(self, name: str) -> Callable[[T], T]:
        """Decorator form of `add`: `@REGISTRY.register("name")`."""

        def deco(obj: T) -> T:
            return self.add(name, obj)

        return deco

    def get(self, name: str) -> T:
        """The object registered as `name`; an unknown name raises `error` with the closest
        known name and the full list."""
        try:
            return self._items[name]
        except (KeyError, TypeError):  # TypeError: an unhashable name from untyped input
            message = unknown_name(self.kind, name, self._items, plural=self.plural)
            raise self.error(message, code=self.code) from None

    def names(self, where: Callable[[T], Any] | None = None) -> list[str]:
        """Registered names, sorted (only those whose object satisfies `where`, if given)."""
        return sorted(n for n, obj in self._items.items() if where is None or where(obj))

    def items(self) -> list[tuple[str, T]]:
        return list(self._items.items())

    def __contains__(self, name: object) -> bool:
        try:
            return name in self._items
        except TypeError:
            return False

    def __iter__(self) -> Iterator[str]:  # registration order
        return iter(list(self._items))

    def __len__(self) -> int:
        return len(self._items)

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}: {', '.join(self._items) or '(empty)'})"
