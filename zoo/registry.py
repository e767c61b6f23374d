"""A small generic registry: names → components, with aliases, presets, lazy built-ins and entry-point plugins.

One :class:`Registry` instance exists per kind of component (all of them are listed in :mod:`zoo.registries`). The
design follows mmengine's registry (a duplicate name is an error, built-in modules are imported lazily on the first
lookup) and Lightning's strategy registry (a name can carry preset keyword arguments):

.. code-block:: python

    from zoo.registries import CHANNEL_ATTENTION

    @CHANNEL_ATTENTION.register("my_ca", aliases=("my_channel_attention",))
    class MyChannelAttention(nn.Module):
        def __init__(self, channels, *, device=None, dtype=None, **kwargs): ...

    CHANNEL_ATTENTION.build("my_ca", 64)          # MyChannelAttention(64)
    CHANNEL_ATTENTION.partial("my_ca", k=5)      # a constructor for timm's ``attn_layer``

Third-party packages extend a registry without touching this project: they declare an entry point in the group
``zoo.plugins`` whose module registers components on import. All such entry points are imported before the first
lookup that misses (``ZOO_DISABLE_PLUGINS=1`` turns this off). Modules that are importable but not installed can
be named in ``ZOO_IMPORTS=pkg.mod,other.mod`` or in the ``imports:`` list of the Hydra configuration.

This module imports neither torch nor any built-in component, so ``import zoo`` stays cheap.
"""

from __future__ import annotations

import difflib
import functools
import importlib
import importlib.metadata
import inspect
import logging
import os
import threading
import warnings
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from zoo.errors import RegistryError

__all__ = ["PLUGIN_GROUP", "Entry", "Registry", "import_modules", "load_plugins"]

log = logging.getLogger(__name__)

T = TypeVar("T")
PLUGIN_GROUP = "zoo.plugins"


@dataclass(frozen=True)
class Entry(Generic[T]):
    """One registered name: the component, the keyword arguments preset for this name, and who registered it."""

    name: str
    obj: T
    defaults: dict[str, Any] = field(default_factory=dict)
    origin: str = ""

    def build(self, *args: Any, **kwargs: Any) -> Any:
        """Call the component with the preset keyword arguments; arguments given here win."""
        return self.obj(*args, **{**self.defaults, **kwargs})  # type: ignore[operator]


class Registry(Generic[T]):
    """Names of interchangeable components of one kind.

    Args:
        kind: what the registry holds, used in messages (``"channel_attention"``).
        locations: modules that register the built-in components; imported on the first lookup.
    """

    def __init__(self, kind: str, *, locations: Sequence[str] = ()):
        self.kind = kind
        self.locations = tuple(locations)
        self._entries: dict[str, Entry[T]] = {}
        self._canonical: dict[str, str] = {}  # every key (name or alias) → the name it was registered under
        self._loaded = False
        self._lock = threading.RLock()

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}, {len(self._entries)} names registered so far)"

    # ------------------------------------------------------------------ registration
    def register(
        self,
        name: str | None = None,
        *,
        aliases: Iterable[str] = (),
        override: bool = False,
        **defaults: Any,
    ) -> Callable[[T], T]:
        """Decorator that registers a class or factory under ``name`` (default: its lower-cased ``__name__``).

        Args:
            name: the key used in configs, e.g. ``"mca"``.
            aliases: further keys for the same component and presets.
            override: replace an existing registration instead of raising.
            **defaults: keyword arguments preset for these keys (``register("eca_k5", kernel_size=5)``);
                arguments given to :meth:`build` win over them.

        Raises:
            RegistryError: a key is already registered (the message names the first registrant) and
                ``override`` is false.
        """

        def decorator(obj: T) -> T:
            key = (name or getattr(obj, "__name__", "")).lower()
            if not key:
                raise ValueError(f"{self.kind}: cannot infer a registry name for {obj!r}; pass name=")
            origin = _origin(obj)
            keys = [key, *(a.lower() for a in aliases)]
            with self._lock:
                for k in keys:
                    if k in self._entries and not override:
                        first = self._entries[k]
                        raise RegistryError(
                            f"{self.kind} '{k}' is already registered by {first.origin}; "
                            f"{origin} tried to register it again. Choose another name, or pass override=True.",
                            kind=self.kind,
                            name=k,
                        )
                for k in keys:
                    self._entries[k] = Entry(k, obj, dict(defaults), origin)
                    self._canonical[k] = key
            return obj

        return decorator

    def unregister(self, name: str) -> None:
        """Remove one key (used by tests and by plugins that replace a built-in)."""
        with self._lock:
            self._entries.pop(name.lower(), None)
            self._canonical.pop(name.lower(), None)

    # ------------------------------------------------------------------ lookup
    def __contains__(self, name: object) -> bool:
        if not isinstance(name, str):
            return False
        self._ensure_loaded()
        return name.lower() in self._entries

    def entry(self, name: str) -> Entry[T]:
        """The :class:`Entry` for ``name``; see :meth:`get`."""
        if not isinstance(name, str):
            raise RegistryError(
                f"{self.kind} name must be a string, got {type(name).__name__} {name!r}. "
                f"Valid choices: {', '.join(self.names(aliases=False))}.",
                kind=self.kind,
                name=str(name),
                choices=tuple(self.names(aliases=False)),
            )
        key = name.lower()
        self._ensure_loaded()
        if key in self._entries:
            return self._entries[key]
        if ":" in name:  # escape hatch: "package.module:Object"
            module, _, attr = name.partition(":")
            obj = functools.reduce(getattr, attr.split("."), importlib.import_module(module))
            return Entry(name, obj, {}, module)
        choices = tuple(self.names(aliases=False))
        close = difflib.get_close_matches(key, self.names(), n=3, cutoff=0.5)
        hint = f" Did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
        raise RegistryError(
            f"Unknown {self.kind} '{name}'. Valid choices: {', '.join(choices) or '(none)'}.{hint}",
            kind=self.kind,
            name=name,
            choices=choices,
        )

    def get(self, name: str) -> T:
        """The component registered under ``name`` (case-insensitive).

        Before the first lookup the built-in ``locations`` and the ``zoo.plugins`` entry points are imported. A
        name of the form ``"package.module:Object"`` is imported directly. Anything else raises
        :class:`RegistryError` listing the valid names and the closest matches.
        """
        return self.entry(name).obj

    def build(self, name: str, /, *args: Any, **kwargs: Any) -> Any:
        """``get(name)(*args, **{**presets, **kwargs})``."""
        return self.entry(name).build(*args, **kwargs)

    def partial(self, name: str, /, **kwargs: Any) -> Callable[..., Any]:
        """A constructor with the presets and ``kwargs`` bound, e.g. for timm's ``block_args=dict(attn_layer=...)``."""
        entry = self.entry(name)
        return functools.partial(entry.obj, **{**entry.defaults, **kwargs})  # type: ignore[arg-type]

    def names(self, pattern: str | None = None, *, aliases: bool = True) -> list[str]:
        """All registered keys, sorted; ``pattern`` filters with shell-style wildcards; ``aliases=False`` keeps
        only the names components were registered under."""
        self._ensure_loaded()
        keys = sorted(k for k in self._entries if aliases or self._canonical[k] == k)
        if pattern:
            import fnmatch

            keys = [k for k in keys if fnmatch.fnmatch(k, pattern.lower())]
        return keys

    def canonical(self, name: str) -> str:
        """The name a key was registered under (the alias ``mca`` and the name ``mca_s`` may share a class)."""
        self.entry(name)
        return self._canonical.get(name.lower(), name)

    def aliases(self, name: str) -> list[str]:
        """The aliases of the component ``name`` names: its keys but the one it was registered under
        (``eca`` → ``["efficient_channel_attention"]``)."""
        key = self.canonical(name)
        return sorted(k for k, c in self._canonical.items() if c == key and k != key)

    def items(self) -> list[tuple[str, Entry[T]]]:
        self._ensure_loaded()
        return sorted(self._entries.items())

    def _ensure_loaded(self) -> None:
        if self._loaded:
            return
        with self._lock:
            if self._loaded:
                return
            self._loaded = True  # set first: a location may look itself up while it is being imported
            try:
                for module in self.locations:
                    importlib.import_module(module)
                load_plugins()
                import_modules(os.environ.get("ZOO_IMPORTS", "").split(","))
            except BaseException:
                self._loaded = False
                raise


def _origin(obj: Any) -> str:
    module = getattr(obj, "__module__", None) or "?"
    qualname = getattr(obj, "__qualname__", None) or repr(obj)
    try:
        where = f" ({inspect.getsourcefile(obj)})"  # type: ignore[arg-type]
    except (TypeError, OSError):
        where = ""
    return f"{module}.{qualname}{where}"


@functools.cache
def load_plugins(group: str = PLUGIN_GROUP) -> tuple[str, ...]:
    """Import every installed entry point of ``group``; their modules register components on import.

    Runs once per process (cached); ``ZOO_DISABLE_PLUGINS=1`` disables it. A plugin that fails to import is
    reported with a warning naming it and its error; the others and the built-ins still load.

    Returns:
        the names of the entry points that loaded.
    """
    if os.environ.get("ZOO_DISABLE_PLUGINS", "").lower() in {"1", "true", "yes"}:
        return ()
    loaded = []
    for ep in importlib.metadata.entry_points(group=group):
        try:
            ep.load()
        except Exception as exc:  # a broken third-party package must not break the project
            dist = getattr(ep.dist, "name", "?") if getattr(ep, "dist", None) else "?"
            warnings.warn(
                f"zoo plugin '{ep.name}' ({ep.value}, from distribution '{dist}') failed to load and is skipped: "
                f"{type(exc).__name__}: {exc}",
                RuntimeWarning,
                stacklevel=2,
            )
        else:
            loaded.append(ep.name)
            log.debug("loaded zoo plugin %s (%s)", ep.name, ep.value)
    return tuple(loaded)


def import_modules(modules: Iterable[str]) -> None:
    """Import modules by dotted name so that their ``@REGISTRY.register`` decorators run.

    The equivalent of mmengine's ``custom_imports``: used for ``imports: [...]`` in Hydra configs and for the
    ``ZOO_IMPORTS`` environment variable. Empty names are skipped; a module that does not exist raises.
    """
    for name in modules:
        name = name.strip()
        if name:
            importlib.import_module(name)
