"""Optional extras: the packages each ``pip install -e '.[extra]'`` brings, and a one-paragraph error naming the
extra when a feature that needs one runs without it.

:func:`require` imports a module of an extra or raises :class:`MissingExtraError`, a :class:`~zoo.errors.ZooError`,
so the front ends print it as one paragraph and exit with status 2 instead of a traceback::

    error: task=detection (COCO box and mask AP) needs pycocotools (No module named 'pycocotools'); install the
    [detection] extra: pip install -e '.[detection]'
"""

from __future__ import annotations

import importlib
from types import ModuleType

from zoo.errors import ZooError

#: What each extra of ``pyproject.toml`` is for (the error message and ``tools/list.py`` read it).
EXTRAS: dict[str, str] = {
    "dev": "tests and linters (pytest, hypothesis, ruff)",
    "hf": "Hugging Face interop, zoo.interop.minimax (transformers)",
    "detection": "task=detection: COCO AP (pycocotools) and the copy-paste set's photo backgrounds (scikit-image)",
    "mmdet": "the mmdet bridge, zoo.integrations.mmdet (mmdet, mmengine; plus full mmcv 2.1.0, see the README)",
    "bench": "the benchmarks' peer kernels (fla-core)",
}


class MissingExtraError(ZooError, ImportError):
    """A feature needs a package of an optional extra that is not installed."""

    def __init__(self, message: str, *, extra: str, module: str):
        super().__init__(message)
        self.extra = extra
        self.module = module


def install_hint(extra: str) -> str:
    return f"pip install -e '.[{extra}]'"


def require(module: str, extra: str, *, needed_for: str, hint: str = "") -> ModuleType:
    """Import ``module`` (a package of the optional ``extra``) or raise :class:`MissingExtraError` saying what
    needs it and which extra to install; ``hint`` is appended (e.g. a build step the extra does not cover)."""
    if extra not in EXTRAS:
        raise ValueError(f"unknown extra {extra!r}; valid: {', '.join(EXTRAS)}")
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise MissingExtraError(
            f"{needed_for} needs {module} ({exc}); install the [{extra}] extra: {install_hint(extra)}"
            + (f". {hint}" if hint else ""),
            extra=extra,
            module=module,
        ) from exc
