"""A name -> builder registry, in the style of timm's register_model / create_model."""

from __future__ import annotations

import difflib
from collections.abc import Callable
from typing import Generic, TypeVar

from convexp.errors import ConfigError

T = TypeVar("T")


class Registry(Generic[T]):
    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._builders: dict[str, Callable[..., T]] = {}

    def register(self, name: str) -> Callable[[Callable[..., T]], Callable[..., T]]:
        def decorator(builder: Callable[..., T]) -> Callable[..., T]:
            if name in self._builders:
                raise ValueError(f"{self.kind} {name!r} is already registered")
            self._builders[name] = builder
            return builder

        return decorator

    def get(self, name: str) -> Callable[..., T]:
        if name not in self._builders:
            hint = difflib.get_close_matches(name, self._builders, n=1)
            did_you_mean = f" Did you mean {hint[0]!r}?" if hint else ""
            raise ConfigError(
                f"unknown {self.kind} {name!r}.{did_you_mean} "
                f"Registered: {', '.join(self.names())}"
            )
        return self._builders[name]

    def build(self, name: str, *args, **kwargs) -> T:
        return self.get(name)(*args, **kwargs)

    def names(self) -> list[str]:
        return sorted(self._builders)

    def __contains__(self, name: str) -> bool:
        return name in self._builders
