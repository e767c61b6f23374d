"""Exceptions that carry a user-facing message.

Every error a user can cause by configuration (an unknown registry name, a missing dataset, a value of the wrong
type) derives from :class:`ZooError`. The front ends (``tools/train.py``, ``tools/cli.py``) print such an error as one
paragraph and exit with status 2 instead of showing a traceback.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator


class ZooError(Exception):
    """Base class of the errors a user can fix by changing the configuration or the machine."""

    def __str__(self) -> str:  # KeyError would otherwise print the repr of its message
        return str(self.args[0]) if self.args else ""


class RegistryError(ZooError, KeyError):
    """An unknown or duplicate registry name."""

    def __init__(self, message: str, *, kind: str = "", name: str = "", choices: tuple[str, ...] = ()):
        super().__init__(message)
        self.kind = kind
        self.name = name
        self.choices = choices


class ConfigError(ZooError, ValueError):
    """A configuration value of the wrong type or out of range."""


class DatasetNotFoundError(ZooError, FileNotFoundError):
    """A dataset's files are not where the configuration says; the message says how to get them."""


def find_zoo_error(exc: BaseException | None) -> ZooError | None:
    """The first :class:`ZooError` in an exception's cause/context chain (wrappers such as OmegaConf's resolver
    errors and jsonargparse's validation errors keep the original there)."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        if isinstance(exc, ZooError):
            return exc
        seen.add(id(exc))
        exc = exc.__cause__ or exc.__context__
    return None


@contextlib.contextmanager
def exit_on_config_error() -> Iterator[None]:
    """Turn a :class:`ZooError` raised inside (also when wrapped by another library) into one paragraph on
    stderr and exit status 2; any other exception propagates unchanged."""
    try:
        yield
    except Exception as exc:
        error = find_zoo_error(exc)
        if error is None:
            raise
        print(f"error: {error}", file=sys.stderr)
        sys.exit(2)
