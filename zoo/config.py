"""Checks of configuration values against the signature of what they configure.

Hydra composes plain dicts, so ``trainer.max_epochs=abc`` or ``+model.cax=5`` would otherwise fail deep inside a
constructor, or not at all. :func:`check_kwargs` compares keyword arguments with a callable's parameters and type
hints and raises :class:`~zoo.errors.ConfigError` naming the key, the expected type and the valid keys.
"""

from __future__ import annotations

import collections.abc
import difflib
import inspect
import types
import typing
from collections.abc import Callable, Mapping
from typing import Any

from zoo.errors import ConfigError

_MISSING = object()


def check_kwargs(target: Callable[..., Any], kwargs: Mapping[str, Any], prefix: str) -> None:
    """Raise :class:`ConfigError` if ``target(**kwargs)`` would get an unknown key or a value of the wrong type.

    Args:
        target: a class (its ``__init__`` is read) or a function.
        kwargs: the configured keyword arguments.
        prefix: the config key they sit under, used in messages (``"trainer"``, ``"model"``).
    """
    function = target.__init__ if inspect.isclass(target) else target
    try:
        signature = inspect.signature(function)
    except (TypeError, ValueError):
        return
    parameters = {n: p for n, p in signature.parameters.items() if n != "self"}
    takes_var_kwargs = any(p.kind is p.VAR_KEYWORD for p in parameters.values())
    accepted = [n for n, p in parameters.items() if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
    try:
        hints = typing.get_type_hints(function)
    except Exception:  # unresolvable forward references: check names only
        hints = {}
    name = getattr(target, "__qualname__", repr(target))
    for key, value in kwargs.items():
        if key not in parameters or parameters[key].kind in (
            inspect.Parameter.VAR_KEYWORD,
            inspect.Parameter.VAR_POSITIONAL,
        ):
            if takes_var_kwargs:
                continue
            close = difflib.get_close_matches(key, accepted, n=2, cutoff=0.6)
            hint = f" Did you mean {' or '.join(f'{prefix}.{c}' for c in close)}?" if close else ""
            raise ConfigError(
                f"{prefix}.{key} is not an option of {name}. Valid keys: {', '.join(sorted(accepted))}.{hint}"
            )
        expected = hints.get(key, _MISSING)
        if expected is _MISSING:
            continue
        if not matches(value, expected):
            raise ConfigError(
                f"{prefix}.{key}={value!r} has the wrong type: {name} expects {describe(expected)}, "
                f"got {type(value).__name__}."
            )


def matches(value: Any, expected: Any) -> bool:
    """Whether a config value (a primitive, list or dict) fits a type hint; unknown hint forms are accepted."""
    if expected is Any or expected is object:
        return True
    origin = typing.get_origin(expected)
    args = typing.get_args(expected)
    if origin in (typing.Union, types.UnionType):
        return any(matches(value, arm) for arm in args)
    if origin is typing.Literal:
        return value in args
    if expected is type(None):
        return value is None
    if expected is bool:
        return isinstance(value, bool)
    if expected is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if expected is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if expected is str:
        return isinstance(value, str)
    if typing.is_typeddict(expected):  # its keys are checked by whoever reads it, with messages naming them
        return isinstance(value, Mapping)
    container = origin or expected
    if container in (dict, collections.abc.Mapping, collections.abc.MutableMapping):
        return isinstance(value, Mapping)
    if container in (list, tuple, collections.abc.Sequence, collections.abc.Iterable, set, frozenset):
        if isinstance(value, (str, bytes)) or not isinstance(value, (list, tuple, set, frozenset)):
            return False
        if args and args[-1] is not Ellipsis and origin is tuple:
            return len(args) == len(value) and all(matches(v, a) for v, a in zip(value, args))
        item = args[0] if args else Any
        return all(matches(v, item) for v in value)
    if inspect.isclass(container):
        # a class that configs cannot spell (Strategy, Logger, …): an instance, or a dict to instantiate
        return isinstance(value, (container, Mapping))
    return True


def describe(expected: Any) -> str:
    """A readable form of a type hint: ``int | None``, ``'auto' | int``, …"""
    origin = typing.get_origin(expected)
    if origin in (typing.Union, types.UnionType):
        return " | ".join(describe(a) for a in typing.get_args(expected))
    if origin is typing.Literal:
        return " | ".join(repr(a) for a in typing.get_args(expected))
    if expected is type(None):
        return "None"
    return getattr(expected, "__name__", None) or str(expected).replace("typing.", "")
