"""``torch.compile`` per block, in place: the ``model.compile=true`` option of the tasks.

Each unit (a causal LM's ``blocks()``, a vision backbone's residual blocks) is compiled where it sits, with
:meth:`torch.nn.Module.compile`, so parameter names and checkpoints stay those of the eager model. Order, as
torchtitan's: activation checkpointing wraps a block first (the checkpoint wrapper is what is compiled, so the
recompute is part of the compiled graph), then compile, then FSDP2 (whose hooks run eagerly around the compiled
block). Inductor fuses each block's elementwise work (the post-norm residuals with their α/β factors, partial
RoPE, the lightning mixer's SiLU and sigmoid gate, casts) into a few kernels between the matrix products.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from torch import nn

__all__ = ["compile_kwargs", "compile_units", "is_compiled"]


def compile_kwargs(option: bool | Mapping[str, Any] | None) -> dict[str, Any] | None:
    """The ``torch.compile`` keyword arguments of a ``compile`` option (``model.compile``): a mapping's items,
    ``{}`` for true, None (compile nothing) for false."""
    if isinstance(option, Mapping):
        return dict(option)
    return {} if option else None


def is_compiled(module: nn.Module) -> bool:
    """Whether :meth:`torch.nn.Module.compile` was called on ``module``."""
    return getattr(module, "_compiled_call_impl", None) is not None


def compile_units(root: nn.Module, units: list[nn.Module], **compile_kwargs: Any) -> int:
    """Compile each of ``units`` (submodules of ``root``) in place: its activation-checkpoint wrapper when it has
    one, else the unit. Idempotent (a compiled unit is left as it is). Returns the number compiled now."""
    wrappers = {
        id(inner): module
        for module in root.modules()
        if (inner := getattr(module, "_checkpoint_wrapped_module", None)) is not None
    }
    compiled = 0
    for unit in units:
        target = wrappers.get(id(unit), unit)
        if is_compiled(target) or is_compiled(unit):
            continue
        target.compile(**compile_kwargs)
        compiled += 1
    return compiled
