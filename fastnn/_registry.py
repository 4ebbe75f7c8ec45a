"""Name -> class registries: the one place that maps a name to a layer, loss, optimizer, schedule
or model class.

Every base class (``Layer``, ``Loss``, ``Optimizer``, ...) owns a :class:`Registry`, and each
subclass registers itself when it is defined (``__init_subclass__``), under its class name and
any ``aliases`` it declares. ``fastnn.load`` rebuilds objects through these registries, so a user's
own subclass round-trips through save/load once the module that defines it has been imported:
``get_config()`` is saved, ``cls(**config)`` is called at load.

A class whose name starts with ``_``, or that sets ``_abstract = True`` in its own body (a base
for other classes), is not registered.
"""
from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any, Callable, Generic, TypeVar

#: the base class of a registry's classes
T = TypeVar("T")


class Registry(Mapping[str, type[T]], Generic[T]):
    """A read-only mapping from names (class names and aliases) to classes of one kind.

    Parameters
    ----------
    kind : str
        What the classes are, for error messages (``"layer"``, ``"loss"``, ...).
    case_sensitive : bool, default=True
        When False, names are looked up lower-cased (optimizers: ``"Adam"`` and ``"adam"``).
    """

    def __init__(self, kind: str, case_sensitive: bool = True) -> None:
        self.kind = kind
        self.case_sensitive = case_sensitive
        self._classes: dict[str, type[T]] = {}

    def _key(self, name: str) -> str:
        return name if self.case_sensitive else name.lower()

    def register(self, cls: type[T], name: str | None = None,
                 aliases: tuple[str, ...] = ()) -> type[T]:
        """Register ``cls`` under ``name`` (default: its class name) and ``aliases``.

        A later class of the same name replaces the earlier one (a module reloaded, or a user's
        class redefined in a notebook).

        Raises
        ------
        TypeError
            If a name is not a non-empty string.
        """
        for n in (name or cls.__name__, *aliases):
            if not isinstance(n, str) or not n:
                raise TypeError(f"a {self.kind} name must be a non-empty str, got {n!r}")
            self._classes[self._key(n)] = cls
        return cls

    def decorator(self, name: str | None = None,
                  aliases: tuple[str, ...] = ()) -> Callable[[type[T]], type[T]]:
        """``@registry.decorator("name")``: register the decorated class under an extra name."""
        def wrap(cls: type[T]) -> type[T]:
            return self.register(cls, name, aliases)
        return wrap

    def __getitem__(self, name: str) -> type[T]:
        if not isinstance(name, str) or self._key(name) not in self._classes:
            raise KeyError(name)
        return self._classes[self._key(name)]

    def __iter__(self) -> Iterator[str]:
        return iter(self._classes)

    def __len__(self) -> int:
        return len(self._classes)

    def get_class(self, name: Any) -> type[T]:
        """The class registered as ``name``.

        Raises
        ------
        ValueError
            If no class of this kind is registered under ``name`` (the message lists the names).
        """
        try:
            return self[name]
        except KeyError:
            raise ValueError(f"unknown {self.kind} {name!r}; known: {sorted(self._classes)} "
                             f"(a class of your own registers itself when its module is "
                             f"imported)") from None

    def name_of(self, cls: type) -> str:
        """The name a saved file uses for ``cls``: its class name."""
        return cls.__name__


def auto_register(registry: Registry[Any], cls: type, aliases: tuple[str, ...] = ()) -> None:
    """Called from a base class's ``__init_subclass__``: register ``cls`` unless it is private
    (its name starts with ``_``) or a base for other classes (``_abstract = True`` in its own
    class body)."""
    if not cls.__name__.startswith("_") and not cls.__dict__.get("_abstract", False):
        registry.register(cls, aliases=tuple(aliases))


#: model classes (``Sequential``), by the name saved in model files
MODELS: Registry[Any] = Registry("model")
