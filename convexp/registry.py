"""A name -> builder registry, in the style of timm's register_model / create_model.

A registry serves one config group. convexp's own options have their schemas in
`convexp.option_schemas` (torch-free, so `--help` and completion need no torch), which this module
imports so that any builder module has them stored. A builder registered from outside with a
`schema` makes that dataclass the typed schema of the group's option of the same name
(`schema/<group>/<name>` in Hydra's ConfigStore).
"""

from __future__ import annotations

import difflib
from collections.abc import Callable
from typing import Generic, TypeVar

import convexp.option_schemas  # noqa: F401 - stores the built-in options' schemas
from convexp.errors import ConfigError
from convexp.schema import option_schema, register_option_schema

T = TypeVar("T")


class Registry(Generic[T]):
    def __init__(self, group: str) -> None:
        self.group = group
        self._builders: dict[str, Callable[..., T]] = {}

    def register(self, name: str, schema: type | None = None
                 ) -> Callable[[Callable[..., T]], Callable[..., T]]:
        def decorator(builder: Callable[..., T]) -> Callable[..., T]:
            if name in self._builders:
                raise ValueError(f"{self.group} {name!r} is already registered")
            self._builders[name] = builder
            if schema is not None:
                register_option_schema(self.group, name, schema)
            return builder

        return decorator

    def get(self, name: str) -> Callable[..., T]:
        if name not in self._builders:
            hint = difflib.get_close_matches(name, self._builders, n=1)
            did_you_mean = f" Did you mean {hint[0]!r}?" if hint else ""
            raise ConfigError(
                f"unknown {self.group} {name!r}.{did_you_mean} "
                f"Registered: {', '.join(self.names())}"
            )
        return self._builders[name]

    def schema(self, name: str) -> type | None:
        return option_schema(self.group, name)

    def build(self, name: str, *args, **kwargs) -> T:
        return self.get(name)(*args, **kwargs)

    def names(self) -> list[str]:
        return sorted(self._builders)

    def __contains__(self, name: str) -> bool:
        return name in self._builders
